"""`vpeft export`: an adapter merged into plain timm weights (safetensors) and optionally ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    BackboneOpt,
    JsonOpt,
    WeightsOpt,
    build_backbone,
    console,
    emit_json,
    handles_errors,
)


@handles_errors
def export_command(
    backbone: BackboneOpt,
    adapter: Annotated[Path, typer.Option("--adapter", "-a", help="adapter file to merge.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="output stem: writes OUT.safetensors [OUT.onnx].")
    ],
    weights: WeightsOpt = None,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="also write ONNX (checked by onnxruntime).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Merge ADAPTER into BACKBONE and write plain timm weights (load them with
    timm.create_model(..., num_classes=C, pretrained=True,
    pretrained_cfg_overlay=dict(file=OUT.safetensors, num_classes=C))) and, with --onnx, an
    ONNX model checked against PyTorch with onnxruntime."""
    from ..adapters import load_adapters
    from ..data.transforms import data_config_for
    from ..export import export_onnx, merged_model, save_timm_weights

    pm = load_adapters(build_backbone(backbone, weights), {"adapter": adapter})
    model = merged_model(pm, "adapter")
    out.parent.mkdir(parents=True, exist_ok=True)
    weights_path = out.with_suffix(".safetensors")
    save_timm_weights(model, weights_path)
    record: dict[str, object] = {"weights": str(weights_path), "num_classes": pm.num_classes}
    if onnx:
        onnx_path = out.with_suffix(".onnx")
        size = data_config_for(model).input_size
        record["onnx"] = str(onnx_path)
        record["onnx_max_abs_diff"] = export_onnx(model, onnx_path, (3, *size))
    if json_out:
        emit_json(record)
    else:
        for key, value in record.items():
            console.print(f"{key}: {value}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
