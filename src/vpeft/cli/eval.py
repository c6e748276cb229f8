"""`vpeft eval`: load a saved adapter onto its backbone and report top-1 on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..model import load
from ..train.device import autocast_dtype, resolve_device
from ..train.evaluate import evaluate
from .common import BackboneOpt, JsonOpt, WeightsOpt, console, emit_json, handles_errors
from .data_option import DataOpt, DataSpec, backbone_data_config, load_split, training_input
from .train import ImgSizeOpt, create_backbone_for_cli

AdapterOpt = Annotated[
    Path, typer.Option("--adapter", help="adapter file written by `vpeft train` / PeftModel.save.")
]


@handles_errors
def eval_command(
    backbone: BackboneOpt,
    adapter: AdapterOpt,
    data: DataOpt,
    weights: WeightsOpt = None,
    img_size: ImgSizeOpt = None,
    split: Annotated[str, typer.Option(help="split to evaluate.")] = "test",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="images per batch.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    amp: Annotated[
        str, typer.Option(help="auto (bf16 autocast on CUDA, as `vpeft train`), bf16 or off.")
    ] = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Evaluate ADAPTER (on the same pretrained BACKBONE it was trained on) on --data's split."""
    spec = DataSpec.parse(data)
    model = create_backbone_for_cli(backbone, weights, img_size)
    pm = load(adapter, base=model)
    dcfg = backbone_data_config(pm.model)
    dataset = load_split(spec, split, dcfg.transform())
    target = resolve_device(device)
    pm.to(target)
    dtype = autocast_dtype(amp, target)
    res = evaluate(pm, training_input(dataset, dcfg.input_size), batch_size, target, dtype)
    record = {"top1": res.top1, "loss": res.loss, "correct": res.correct, "count": res.count,
              "split": split, "data": data, "adapter": str(adapter)}  # fmt: skip
    if json_out:
        emit_json(record)
        return
    console.print(
        f"{adapter} on {data} [{split}]: top-1 {res.top1:.2f}% ({res.correct}/{res.count}), "
        f"loss {res.loss:.4f}"
    )


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
