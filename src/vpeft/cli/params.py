"""`vpeft params`: trainable / encoder / head / total parameter counts of a method on a backbone.

`--tasks N` counts N independent task copies of a single-task method sharing one frozen
backbone: every trained tensor (encoder part and head) is stored N times, the frozen backbone
once, so trainable, trainable_encoder and head scale by N and
total = (total − trainable) + N · trainable. Multi-task methods (``MethodInfo.multi_task``:
Hyperformer, Polyhistor, Polyhistor-Lite) share their trained tensors across tasks: they are
built once with N classification tasks and counted as they are (task embeddings N times, the
hypernetworks once, N heads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..core.registry import get_method
from ..model import Summary, apply
from ..tasks import ClassificationTask
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

TasksOpt = Annotated[
    int,
    typer.Option("--tasks", min=1, help="count N independent task copies on one frozen backbone."),
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


def multi_task_counts(
    backbone: str,
    method: str,
    opt: list[str] | None,
    num_classes: int,
    tasks: int,
    weights: Path | None,
) -> dict[str, int]:
    """Counts of a multi-task method installed once for `tasks` classification tasks."""
    options = parse_opts(opt)
    get_method(method).config.from_options(options)  # fail fast, before building the backbone
    task_list = [ClassificationTask(f"task{i + 1}", num_classes=num_classes) for i in range(tasks)]
    pm = apply(build_backbone(backbone, weights, None), method, tasks=task_list, **options)
    s = pm.summary()
    return {
        "trainable": s.trainable,
        "trainable_encoder": s.trainable_encoder,
        "head": s.head,
        "total": s.total,
    }


@handles_errors
def params(
    backbone: BackboneOpt,
    method: MethodOpt,
    opt: OptsOpt = None,
    num_classes: NumClassesOpt = 1000,
    tasks: TasksOpt = 1,
    weights: WeightsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Count parameters of METHOD on BACKBONE (random weights, no download).

    trainable = trainable_encoder (what the method adds or unfreezes in the backbone) + head;
    papers usually quote trainable_encoder. The default 1000-class head matches timm's
    ImageNet models, so total equals timm's figure for methods that add nothing.
    """
    if tasks > 1 and get_method(method).multi_task:
        counts = multi_task_counts(backbone, method, opt, num_classes, tasks, weights)
    else:
        counts = task_counts(
            build_model(backbone, method, opt, num_classes, weights).summary(), tasks
        )
    if json_out:
        emit_json(counts)
        return
    table = Table(title=f"{method} on {backbone}" + (f" × {tasks} tasks" if tasks > 1 else ""))
    table.add_column("parameters")
    table.add_column("count", justify="right")
    table.add_column("% of total", justify="right")
    for key, value in counts.items():
        table.add_row(key, f"{value:,}", f"{100.0 * value / max(counts['total'], 1):.4f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("params")(params)
