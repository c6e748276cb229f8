"""Plumbing shared by the synthetic-suite benchmarks (`spt_synthetic.py`, `vqt_synthetic.py`).

The bundled backbone and its input transform, the training recipe (warm-up epoch + cosine per
step, one evaluation after the last epoch), the ``--tasks`` / ``--grid-tasks`` arguments,
per-group means of top-1 records and the report lines both print alike. Imported by its file
name: the benchmarks run as scripts, so their folder is on ``sys.path``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from vpeft.data import synthetic
from vpeft.data.transforms import make_transform
from vpeft.train import TrainConfig
from vpeft.zoo import bundled_backbone

BACKBONE = "vit-tiny-synth"
GROUPS = ("natural", "specialized", "structured")


class RecipeSettings(Protocol):
    """What `train_config` reads from a benchmark's (frozen) settings."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch(self) -> int: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def device(self) -> str: ...


def backbone() -> nn.Module:
    """A fresh `BACKBONE` (its bundled weights)."""
    return bundled_backbone(BACKBONE).create()


def backbone_transform() -> Callable[[Any], torch.Tensor]:
    """The resize + normalisation that feeds `BACKBONE`."""
    entry = bundled_backbone(BACKBONE)
    return make_transform(entry.kwargs["img_size"], entry.mean, entry.std)


def train_config(settings: RecipeSettings, lr: float, optimizer: str) -> TrainConfig:
    """The benchmarks' recipe: one warm-up epoch (none for a 1-epoch run) then cosine per step,
    evaluated once after the last epoch, nothing written."""
    return TrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch,
        lr=lr,
        weight_decay=settings.weight_decay,
        optimizer=optimizer,
        warmup_epochs=1.0 if settings.epochs > 1 else 0.0,
        schedule_unit="step",
        seed=settings.seed,
        device=settings.device,
        eval_every=settings.epochs,
        eval_batch_size=500,
        progress=False,
        save_adapter=False,
    )


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tasks`` (default: the first two target tasks of every group) and ``--grid-tasks``
    (default: see `default_grid_tasks`)."""
    first_two = [
        t for g in GROUPS for t in [k for k, v in synthetic.TARGET_TASKS.items() if v == g][:2]
    ]
    parser.add_argument("--tasks", nargs="+", default=first_two, help="default: 2 per group")
    parser.add_argument(
        "--grid-tasks", nargs="+", default=None, help="lr grid tasks (default: 1st per group)"
    )


def default_grid_tasks(tasks: list[str]) -> list[str]:
    """The first of `tasks` in each group that `tasks` covers, in group order."""
    return [next(t for t in tasks if synthetic.TARGET_TASKS[t] == g) for g in present_groups(tasks)]


def prepare_tasks(tasks: list[str], grid_tasks: list[str]) -> list[str]:
    """Every task of a run, once each in first-seen order, its synthetic cache generated now
    (once, before worker processes start)."""
    all_tasks = list(dict.fromkeys(tasks + grid_tasks))
    for task in all_tasks:
        synthetic.load_task(task)
    return all_tasks


def present_groups(tasks: list[str]) -> list[str]:
    """The groups `tasks` cover, in `GROUPS` order (the per-group columns of a table)."""
    return [g for g in GROUPS if any(synthetic.TARGET_TASKS[t] == g for t in tasks)]


def short_names(tasks: list[str]) -> dict[str, str]:
    """Task name -> table column name (without the ``synth-`` prefix)."""
    return {t: t.removeprefix("synth-") for t in tasks}


def group_means(records: list[dict[str, Any]], key: str, value: str) -> dict[str, float]:
    """Mean top-1 per group of the records whose `key` is `value`, and ``mean`` of the groups."""
    by_group = {
        g: [r["top1"] for r in records if r[key] == value and r["group"] == g] for g in GROUPS
    }
    means = {g: statistics.mean(v) for g, v in by_group.items() if v}
    means["mean"] = statistics.mean(means.values())
    return means


def machine_line(device: str, threads: int, jobs: int, wall_s: float) -> str:
    """The report line that says where and how long a run ran."""
    return (
        f"torch {torch.__version__}, {platform.machine()}, device {device}, {threads} "
        f"thread(s) × {jobs} process(es); wall {wall_s:.0f} s"
    )


def top1_table_head(tasks: list[str], columns: list[str]) -> list[str]:
    """The caption, header row and rule of a test top-1 table: `columns`, then one column per
    task, per group present and the mean of groups."""
    names = [*columns, *short_names(tasks).values(), *present_groups(tasks), "mean of groups"]
    return [
        "Test top-1 (%) after the last epoch, trained on train800val200:",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "---|" * len(names),
    ]


def chosen_lr_lines(
    chosen: dict[str, dict[str, Any]], labels: dict[str, str] | None = None
) -> list[str]:
    """The report's list of the learning rate chosen per method (`labels`: display names) with
    the mean val200 top-1 of every rate tried (keys may be strings, as read back from JSON)."""
    lines = ["", "Learning rate chosen per method (mean val200 top-1 over the grid tasks):", ""]
    for name, pick in chosen.items():
        grid = ", ".join(f"{float(lr):g}: {v:.1f}" for lr, v in pick["val_mean"].items())
        lines.append(f"- {(labels or {}).get(name, name)}: {pick['lr']:g} (grid {grid})")
    return lines
