"""Shared parts of the `scripts/pretrain_tiny_*.py` scripts: the command line of the epoch-based
ones, the AdamW parameter groups, the per-step cosine schedule with linear warm-up, and the
writing of a bundled backbone's weights with its recipe beside them."""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from vpeft.atomic import atomic_path, atomic_write_text
from vpeft.zoo import ASSETS


def epoch_arguments(
    doc: str, *, epochs: int, batch_size: int, warmup_epochs: int
) -> argparse.Namespace:
    """The command line of the epoch-based scripts (tiny ViT, tiny Swin), with their defaults."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=int, default=warmup_epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSETS)
    return parser.parse_args()


def adamw(
    decay: Iterable[torch.nn.Parameter],
    no_decay: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    **kwargs: Any,
) -> torch.optim.AdamW:
    """AdamW with weight decay on ``decay`` only."""
    return torch.optim.AdamW(
        [
            {"params": list(decay), "weight_decay": weight_decay},
            {"params": list(no_decay), "weight_decay": 0.0},
        ],
        lr=lr,
        **kwargs,
    )


def adamw_on_matrices(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (ndim >= 2) of ``params`` only."""
    params = list(params)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return adamw(decay, no_decay, lr, weight_decay)


def epoch_schedule(n: int, batch_size: int, epochs: int, warmup_epochs: int) -> tuple[int, int]:
    """(total steps, warm-up steps) of `epochs` passes over `n` examples in batches."""
    steps_per_epoch = math.ceil(n / batch_size)
    return epochs * steps_per_epoch, warmup_epochs * steps_per_epoch


def cosine_lr(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or "cpu"


def save_backbone(out: Path, entry: Any, state: dict[str, torch.Tensor]) -> None:
    """The bundled backbone ``entry``'s weights file under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / entry.weights_file) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in state.items()},
            str(tmp),
            metadata={"format": "pt", "vpeft_backbone": entry.name},
        )


def write_recipe(out: Path, entry: Any, recipe: dict[str, Any]) -> None:
    """The recipe JSON beside ``entry``'s weights file, also printed."""
    atomic_write_text(
        out / (Path(entry.weights_file).stem + ".json"), json.dumps(recipe, indent=2) + "\n"
    )
    print(json.dumps(recipe, indent=2))
