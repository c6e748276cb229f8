"""`vpeft params`: trainable / encoder / head / total parameter counts of a method on a backbone.

`--tasks N` counts N independent task copies of a single-task method sharing one frozen
backbone: every trained tensor (encoder part and head) is stored N times, the frozen backbone
once, so trainable, trainable_encoder and head scale by N and
total = (total − trainable) + N · trainable. Multi-task methods that share trained tensors across
tasks (e.g. Polyhistor's hypernetworks) need their own rule when they arrive.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..model import Summary
from .common import (
    BackboneOpt,
    JsonOpt,
    MethodOpt,
    NumClassesOpt,
    OptsOpt,
    WeightsOpt,
    build_model,
    console,
    emit_json,
    handles_errors,
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
    pm = build_model(backbone, method, opt, num_classes, weights)
    counts = task_counts(pm.summary(), tasks)
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
