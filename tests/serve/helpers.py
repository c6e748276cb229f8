"""Adapter files of several methods on one tiny ViT, written to a temporary folder."""

from __future__ import annotations

from pathlib import Path

import torch

import vpeft
from tests.helpers import tiny_vit
from tests.methods.checks import perturb_trainables

#: (method, options) cases of the mixed-batch equivalence tests
METHODS: dict[str, dict[str, object]] = {
    "lora": {"rank": 2},
    "adapter": {"bottleneck": 4},
    "ssf": {},
    "bitfit": {},
    "vpt-deep": {"num_tokens": 3, "dropout": 0.0},
    "prefix": {"num_tokens": 3},
    "vqt": {"num_queries": 2, "dropout": 0.0},
}


def write_adapter(
    folder: Path, name: str, method: str, num_classes: int, seed: int, **options: object
) -> Path:
    """Train-like adapter file: the method's tensors and head moved away from their init."""
    options = {**METHODS.get(method, {}), **options}
    pm = vpeft.apply(tiny_vit(0), method, num_classes=num_classes, **options)
    perturb_trainables(pm, seed=seed, std=0.2)
    vpeft.adapter_info.attach(
        pm,
        classes=[f"{name}-{i}" for i in range(num_classes)],
        preprocessing={"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
    )
    path = folder / f"{name}.safetensors"
    pm.save(path)
    return path


def single(path: Path) -> vpeft.PeftModel:
    return vpeft.load(path, base=tiny_vit(0)).eval()


def images(batch: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 32, 32, generator=g)
