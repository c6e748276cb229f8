"""Export a merged adapter: plain timm weights (safetensors) and ONNX.

    plain = merged_model(pm, "cars")            # a plain timm model, adapter folded in
    save_timm_weights(plain, "cars.safetensors")
    # timm.create_model(arch, num_classes=C, pretrained=True,
    #                   pretrained_cfg_overlay=dict(file="cars.safetensors", num_classes=C))
    # (num_classes in the overlay too, else timm drops a classifier whose size is not 1000)
    export_onnx(plain, "cars.onnx", (3, 224, 224))   # checked against PyTorch by onnxruntime

Only re-parameterisable methods merge (LoRA, SSF, BitFit, ...); others raise
`NotMergeableError`. ONNX needs the ``export`` extra (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import contextlib
import copy
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .errors import ConfigError


def merged_model(pm: Any, name: str | None = None) -> nn.Module:
    """The plain backbone with adapter `name` (or the only task) merged and its classifier."""
    if getattr(pm, "named", None) is not None:
        from .adapters import merged_backbone

        return merged_backbone(pm, name)
    if name is not None and name not in pm.tasks:
        raise ConfigError(f"unknown task {name!r}; the model's tasks: {list(pm.tasks)}")
    return pm.merge(task=name).eval()


def save_timm_weights(model: nn.Module, path: str | Path) -> None:
    """The model's full state dict as safetensors (contiguous, no shared storage)."""
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    cfg = getattr(model, "pretrained_cfg", None) or {}
    meta = {"format": "pt", "architecture": str(cfg.get("architecture", type(model).__name__))}
    save_file(state, str(path), metadata=meta)


def require_export() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"ONNX export needs the 'export' extra ({err.name} is missing): "
            "pip install 'vpeft[export]'"
        ) from None


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, int, int],
    batch: int = 2,
    seed: int = 0,
) -> float:
    """Write `model` as ONNX (dynamic batch axis) and return the largest absolute difference
    between onnxruntime's and PyTorch's outputs on seeded random inputs."""
    require_export()
    import onnxruntime as ort

    model = copy.deepcopy(model).eval().float()
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(seed))
    with contextlib.redirect_stdout(sys.stderr):  # the exporter's progress lines
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
            dynamo=True,
            external_data=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(batch + 1, *input_shape, generator=torch.Generator().manual_seed(seed + 1))
    worst = 0.0
    for inputs in (x, x2):
        (onnx_out,) = session.run(None, {"pixel_values": inputs.numpy()})
        with torch.no_grad():
            expected = model(inputs).numpy()
        worst = max(worst, float(abs(onnx_out - expected).max()))
    return worst
