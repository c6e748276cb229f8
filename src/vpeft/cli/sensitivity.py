"""`vpeft sensitivity`: SPT's sensitivity pass, budget allocation, and plan inspection.

    vpeft sensitivity -b BACKBONE --data KIND:ROOT --out scores.safetensors \\
        [--budget 0.4M --plan-out plan.safetensors]             # compute (+ allocate)
    vpeft sensitivity -b BACKBONE --scores scores.safetensors --budget 0.4M --plan-out plan.st
    vpeft sensitivity --show plan.safetensors [--png plan.png]  # table + heat map
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ConfigError
from .common import JsonOpt, WeightsOpt, console, emit_json, handles_errors
from .data_option import DataSpec, load_split, num_classes_of
from .dense import DEFAULT_TASKS, DENSE_KINDS, dense_split, tasks_for
from .outputs import check_out_file

if TYPE_CHECKING:
    from ..methods.spt.sensitivity import Sensitivity


def _backbone(name: str | None, weights: Path | None, img_size: int | None) -> Any:
    if not name:
        raise ConfigError("--backbone is required to compute scores or allocate a plan")
    from .train import create_backbone_for_cli

    return create_backbone_for_cli(name, weights, img_size)


def _compute(
    model: Any, data: str, split: str, samples: int, batch: int, seed: int | None,
    img_size: int | None, train_mode: bool, per_sample: bool, device: str, progress: bool,
) -> Sensitivity:  # fmt: skip
    from ..data.transforms import data_config_for, make_transform
    from ..methods.spt.sensitivity import compute_sensitivity, sensitivity_batches
    from ..train.device import resolve_device

    spec = DataSpec.parse(data)
    dcfg = data_config_for(model)
    size = (img_size, img_size) if img_size else dcfg.input_size
    if spec.kind in DENSE_KINDS:
        # dense data: the segmentation (or other dense) task's own loss through a fresh decoder
        (task,) = tasks_for(DEFAULT_TASKS.get(spec.kind, "semseg"), spec.kind)
        if split == "train800val200":  # the classification default: the training split
            split = "training" if spec.kind == "ade20k" else "train"
        dataset = dense_split(spec.kind, spec.root, split, size, dcfg.mean, dcfg.std, [task.name])
        model.to(resolve_device(device))
        batches = sensitivity_batches(dataset, samples, batch, seed)
        if per_sample:
            raise ConfigError("--per-sample applies to classification data")
        return compute_sensitivity(
            model, batches, task=task, train_mode=train_mode, source=f"{data} [{split}]",
            progress=progress, copy_model=False,
        )  # fmt: skip
    transform = make_transform(size, dcfg.mean, dcfg.std, dcfg.interpolation)
    dataset = load_split(spec, split, transform)
    model.to(resolve_device(device))
    batches = sensitivity_batches(dataset, samples, batch, seed)
    return compute_sensitivity(
        model, batches, num_classes_of(dataset, spec), train_mode=train_mode,
        per_sample=per_sample, source=f"{data} [{split}]", progress=progress, copy_model=False,
    )  # fmt: skip


def _show(plan_path: Path, png: Path | None, json_out: bool) -> None:
    from ..methods.spt import SptPlan, plot_heatmap

    plan = SptPlan.load(plan_path)
    image = plot_heatmap(plan, png or plan_path.with_suffix(".png"))
    if json_out:
        blocks, roles, grid = plan.shares()
        emit_json(
            {"plan": str(plan_path), "png": str(image), "structured": plan.structured,
             "budget": plan.budget, "total": plan.total, "tau": plan.tau,
             "breakdown": plan.breakdown(), "blocks": blocks, "roles": roles, "shares": grid}
        )  # fmt: skip
        return
    console.print(plan.table(), highlight=False, markup=False)
    console.print(f"heat map: {image}", highlight=False, markup=False)


@handles_errors
def sensitivity(
    backbone: Annotated[
        str | None, typer.Option("--backbone", "-b", help="timm model name (or bundled backbone).")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="KIND:ROOT_OR_TASK, e.g. synthetic:synth-count."),
    ] = None,
    split: Annotated[str, typer.Option(help="training split the scores come from.")] = (
        "train800val200"
    ),
    samples: Annotated[
        int, typer.Option(min=1, help="C: samples scored (the first C, in order).")
    ] = 512,
    batch: Annotated[int, typer.Option(min=1, help="batch size of the pass.")] = 32,
    seed: Annotated[
        int | None, typer.Option(help="score a seeded random subset instead of the first C.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="where to write the scores (safetensors).")
    ] = None,
    scores: Annotated[
        Path | None, typer.Option(help="allocate from this scores file instead of computing.")
    ] = None,
    budget: Annotated[
        str | None, typer.Option(help="allocate a plan for this many parameters, e.g. 0.4M.")
    ] = None,
    structured: Annotated[str, typer.Option(help="structured module: lora or adapter.")] = "lora",
    rank: Annotated[int, typer.Option(min=1, help="rank r of the structured module.")] = 8,
    alpha: Annotated[
        float, typer.Option(help="matrix threshold: structured if picks >= cost/alpha.")
    ] = 10.0,
    beta: Annotated[
        float, typer.Option(help="vector threshold: whole if picks >= length/beta.")
    ] = 5.0,
    fill: Annotated[
        bool, typer.Option(help="fill the budget with next-ranked sparse entries (else top-tau).")
    ] = True,
    search: Annotated[
        str,
        typer.Option(
            help="budget search: exact, or official (the reference's tau sweep up to 1.58M; "
            "may end under the budget)."
        ),
    ] = "exact",
    plan_out: Annotated[
        Path | None, typer.Option("--plan-out", help="where to write the allocated plan.")
    ] = None,
    show: Annotated[
        Path | None, typer.Option(help="print this plan as a table and write its heat map.")
    ] = None,
    png: Annotated[
        Path | None, typer.Option(help="heat map path (default: the plan path with .png).")
    ] = None,
    weights: WeightsOpt = None,
    img_size: Annotated[
        int | None, typer.Option("--img-size", min=1, help="input side (default: native).")
    ] = None,
    train_mode: Annotated[
        bool, typer.Option(help="score in train mode (dropout / drop-path on, as the reference).")
    ] = False,
    per_sample: Annotated[
        bool, typer.Option(help="sum per-sample squared gradients (slower variant).")
    ] = False,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda:0'.")] = "auto",
    progress: Annotated[bool, typer.Option(help="progress bar on stderr.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """SPT sensitivity: score every backbone parameter on task data, allocate a budget, show plans.

    Scores are Σ over batches of the squared gradient of the mean cross-entropy (fresh head, fp32,
    eval mode unless --train-mode) over the first --samples items of --split. With --budget the
    global top-τ scores are allocated (structured module where a matrix holds >= cost/alpha picks,
    whole vectors at >= length/beta, sparse entries elsewhere) and written to --plan-out; use it
    with `--method spt-lora --opt plan=FILE`. --show prints a plan and writes its heat map.
    """
    from ..methods.spt import build_plan, plot_heatmap
    from ..methods.spt.allocation import STRUCTURED, parse_budget
    from ..methods.spt.sensitivity import Sensitivity

    if show is not None:
        _show(show, png, json_out)
        return
    if structured not in STRUCTURED:
        raise ConfigError(f"--structured must be one of {list(STRUCTURED)}, got {structured!r}")
    if budget is not None and plan_out is None:
        raise ConfigError("--budget needs --plan-out FILE to write the plan to")
    if budget is not None:
        parse_budget(budget)  # fail fast
    if scores is None and (data is None or out is None):
        raise ConfigError(
            "give --data and --out to compute scores, --scores FILE to allocate from saved "
            "scores, or --show PLAN to inspect a plan"
        )
    for path, flag in ((out, "--out"), (plan_out, "--plan-out"), (png, "--png")):
        if path is not None:  # before the (long) scoring pass, not after it
            check_out_file(path, flag)
    model = _backbone(backbone, weights, img_size)
    record: dict[str, Any] = {}
    if scores is None:
        start = time.perf_counter()
        result = _compute(
            model, data, split, samples, batch, seed, img_size, train_mode, per_sample, device,
            progress and not json_out,
        )  # fmt: skip
        result.save(out)
        record.update(out=str(out), seconds=round(time.perf_counter() - start, 3), **result.meta)
    else:
        result = Sensitivity.load(scores)
        record.update(scores=str(scores), **result.meta)
    if budget is not None:
        plan = build_plan(model.cpu(), result, budget, structured, rank, alpha, beta, fill, search)
        plan.save(plan_out)
        image = plot_heatmap(plan, png or plan_out.with_suffix(".png"))
        record.update(
            plan=str(plan_out), png=str(image), budget=plan.budget, total=plan.total,
            tau=plan.tau, filled=plan.filled,
        )  # fmt: skip
        if not json_out:
            console.print(plan.table(), highlight=False, markup=False)
    if json_out:
        emit_json(record)
        return
    for key in ("out", "plan", "png"):
        if key in record:
            console.print(f"{key}: {record[key]}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("sensitivity")(sensitivity)
