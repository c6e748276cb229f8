"""`vpeft params`: trainable / encoder / head / total parameter counts of a method on a backbone.

`--tasks semseg,parts,saliency,normals` (or `--tasks pascal-mt`) builds the real dense
multi-task model — one decoder per task, the method one copy per task (or once with
`--shared`) — and reports its summary: trainable, trainable_encoder (= encoder_shared +
encoder_per_task), head (all decoders), total (the spec/polyhistor.md parameter table).

`--tasks N` (N > 1) builds the real model with N `--num-classes`-way classification tasks
on one frozen backbone: a single-task method one copy per task (or once with `--shared`), a
multi-task method (e.g. Polyhistor's hypernetworks) once for all tasks; the record adds
encoder_shared, encoder_per_task and tasks. For a per-task method, trainable, trainable_encoder
and head are N times the single-task figures and total = (total − trainable) + N · trainable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ..errors import ConfigError
from .common import (
    BackboneOpt,
    JsonOpt,
    MethodOpt,
    NumClassesOpt,
    OptsOpt,
    WeightsOpt,
    build_backbone,
    build_model,
    console,
    emit_json,
    handles_errors,
    parse_opts,
)
from .dense import SharedOpt, build_dense_model

if TYPE_CHECKING:
    from ..model import Summary

TasksOpt = Annotated[
    str,
    typer.Option(
        "--tasks",
        help="N: count N independent classification copies on one frozen backbone; or dense "
        "task names (semseg,parts,saliency,normals; pascal-mt = all four): the multi-task model.",
    ),
]


def task_counts(summary: Summary, tasks: int) -> dict[str, int]:
    """The public JSON record for `tasks` independent copies (see the module docstring)."""
    frozen = summary.total - summary.trainable
    return {
        "trainable": tasks * summary.trainable,
        "trainable_encoder": tasks * summary.trainable_encoder,
        "head": tasks * summary.head,
        "total": frozen + tasks * summary.trainable,
    }


def classification_counts(
    backbone: str,
    method: str,
    opt: list[str] | None,
    num_classes: int,
    tasks: int,
    shared: bool,
    weights: Path | None,
) -> dict[str, Any]:
    """The summary of the real model with `tasks` classification tasks (see the docstring)."""
    from ..methods import get_method
    from ..model import apply
    from ..tasks import ClassificationTask

    options = parse_opts(opt)
    get_method(method).config.from_options(options)  # fail fast, before building the backbone
    task_list = [ClassificationTask(f"task{i + 1}", num_classes=num_classes) for i in range(tasks)]
    pm = apply(
        build_backbone(backbone, weights, None), method, tasks=task_list, shared=shared, **options
    )
    return pm.summary().as_dict()


def dense_counts(
    backbone: str,
    method: str,
    opts: list[str] | None,
    tasks: str,
    shared: bool,
    weights: Path | None = None,
) -> dict[str, Any]:
    """The summary of the dense multi-task model (PASCAL-Context class counts)."""
    pm = build_dense_model(backbone, method, opts, tasks, shared, weights)
    record: dict[str, Any] = pm.summary().as_dict()
    record["tasks"] = list(pm.tasks)
    record["shared"] = pm.methods[-1].shared  # shared-adapter is shared whatever --shared says
    return record


@handles_errors
def params(
    backbone: BackboneOpt,
    method: MethodOpt,
    opt: OptsOpt = None,
    num_classes: NumClassesOpt = 1000,
    tasks: TasksOpt = "1",
    shared: SharedOpt = False,
    weights: WeightsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Count parameters of METHOD on BACKBONE (random weights, no download).

    trainable = trainable_encoder (what the method adds or unfreezes in the backbone) + head;
    papers usually quote trainable_encoder. The default 1000-class head matches timm's
    ImageNet models, so total equals timm's figure for methods that add nothing.
    """
    if tasks.strip().isdigit():
        copies = int(tasks)
        if copies < 1 or (shared and copies == 1):
            raise ConfigError("--tasks N needs N >= 1 (and --shared needs several tasks)")
        if copies == 1:
            counts = task_counts(
                build_model(backbone, method, opt, num_classes, weights).summary(), 1
            )
        else:
            counts = classification_counts(
                backbone, method, opt, num_classes, copies, shared, weights
            )
        title = f"{method} on {backbone}" + (f" × {copies} tasks" if copies > 1 else "")
    else:
        counts = dense_counts(backbone, method, opt, tasks, shared, weights)
        title = f"{method} on {backbone}, tasks {tasks}" + (" (shared)" if shared else "")
    if json_out:
        emit_json(counts)
        return
    table = Table(title=title)
    table.add_column("parameters")
    table.add_column("count", justify="right")
    table.add_column("% of total", justify="right")
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        table.add_row(key, f"{value:,}", f"{100.0 * value / max(counts['total'], 1):.4f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("params")(params)
