"""`vpeft profile`: FLOPs, saved activation memory and step time of one training step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

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
    build_model,
    console,
    emit_json,
    handles_errors,
)
from .dense import DenseTasksOpt, SharedOpt, build_dense_model

if TYPE_CHECKING:
    from ..analysis.profile import ProfileReport

BatchOpt = Annotated[int, typer.Option("--batch", min=1, help="images per training step.")]
ImgSizeOpt = Annotated[
    int | None,
    typer.Option("--img-size", min=1, help="image side (default: the backbone's native size)."),
]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="timed steps (median reported).")]
WarmupOpt = Annotated[int, typer.Option("--warmup", min=0, help="untimed steps before timing.")]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="'auto' (cuda when available, else cpu), 'cpu', 'cuda:0'…")
]


@handles_errors
def profile(
    backbone: BackboneOpt,
    method: MethodOpt,
    opt: OptsOpt = None,
    batch: BatchOpt = 8,
    img_size: ImgSizeOpt = None,
    num_classes: NumClassesOpt = 1000,
    steps: StepsOpt = 3,
    warmup: WarmupOpt = 1,
    device: DeviceOpt = "auto",
    weights: WeightsOpt = None,
    tasks: DenseTasksOpt = None,
    shared: SharedOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Profile one AdamW training step of METHOD on BACKBONE with random images.

    FLOPs (2 per multiply-accumulate, attention included) and bytes are per batch; activation
    bytes are what autograd saves for the backward; step_seconds is the median of --steps timed
    steps. With --tasks (dense task names, or pascal-mt) the dense multi-task model is profiled:
    every task's decoder, and the backbone once per task for per-task methods (all tasks in
    one step). With --json, the contract keys (forward_flops, train_step_flops,
    saved_activation_bytes, trainable, step_seconds) come first, then extra figures.
    """
    from ..analysis.profile import profile_model
    from ..train.device import resolve_device

    target = resolve_device(device)
    if tasks is not None:
        pm = build_dense_model(backbone, method, opt, tasks, shared, weights, img_size)
    else:
        if shared:
            raise ConfigError("--shared applies to dense multi-task models (--tasks)")
        pm = build_model(backbone, method, opt, num_classes, weights, img_size)
    pm = pm.to(target)
    report = profile_model(pm, batch=batch, img_size=img_size, steps=steps, warmup=warmup)
    if json_out:
        emit_json(report.as_dict())
        return
    console.print(_table(report, f"{method} on {backbone}"))


def _table(r: ProfileReport, title: str) -> Table:
    table = Table(title=f"{title}: batch {r.batch} × {r.img_size}², {r.device}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    states = r.param_bytes + r.grad_bytes + r.optimizer_bytes
    rows = [
        ("forward GFLOPs", f"{r.forward_flops / 1e9:.3f}"),
        ("train step GFLOPs", f"{r.train_step_flops / 1e9:.3f}"),
        ("train step / forward", f"{r.train_step_flops / max(r.forward_flops, 1):.2f}×"),
        ("trainable params", f"{r.trainable:,} of {r.total_params:,}"),
        ("saved activations MiB", f"{r.saved_activation_bytes / 2**20:.1f}"),
        ("params + grads + AdamW MiB", f"{states / 2**20:.1f}"),
        ("training memory estimate MiB", f"{r.training_memory_bytes / 2**20:.1f}"),
        ("step seconds (median)", f"{r.step_seconds:.4f}"),
    ]
    if r.peak_memory_bytes is not None:
        rows.append(("measured peak MiB", f"{r.peak_memory_bytes / 2**20:.1f}"))
    for row in rows:
        table.add_row(*row)
    return table


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)
