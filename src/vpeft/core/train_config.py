"""`TrainConfig`: every knob of a training run, typed, defaulted, documented and validated.

Defaults follow the SPT VTAB-1k protocol (spec/spt.md): AdamW, lr 1e-3, weight decay 1e-4,
batch 64, 100 epochs, cosine schedule with 10 warm-up epochs (warm-up lr 1e-6, min lr 1e-5),
no label smoothing. VQT's protocol is `optimizer="adam"` (coupled L2) with `schedule_unit="epoch"`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .config import MethodConfig, option

#: Fields that shape the optimisation trajectory; a resumed run must agree on all of them.
TRAJECTORY_FIELDS: tuple[str, ...] = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "optimizer",
    "momentum",
    "betas",
    "warmup_epochs",
    "warmup_lr",
    "min_lr",
    "schedule_unit",
    "grad_accum_steps",
    "label_smoothing",
    "seed",
    "amp",
)


def default_warmup_epochs(epochs: int) -> float:
    """min(10, 10% of `epochs`): the reference's 10 warm-up epochs of 100, scaled to short runs."""
    return min(10.0, 0.1 * epochs)


@dataclass
class TrainConfig(MethodConfig):
    """Options of `vpeft.train.train` (reuses `MethodConfig`'s typed parsing and validation)."""

    epochs: int = option(100, "number of passes over the training data")
    batch_size: int = option(64, "global batch size per optimiser step (all processes together)")
    lr: float = option(1e-3, "peak learning rate (reached at the end of warm-up)")
    weight_decay: float = option(1e-4, "weight decay of the decayed parameter group")
    optimizer: Literal["adamw", "adam", "sgd"] = option(
        "adamw", "adamw | adam (coupled L2, as VQT) | sgd (momentum)"
    )
    momentum: float = option(0.9, "SGD momentum")
    betas: tuple[float, ...] = option((0.9, 0.999), "Adam/AdamW betas")
    warmup_epochs: float | None = option(
        None,
        "linear warm-up length in epochs (default: min(10, 10% of epochs) — 10 for the 100-epoch "
        "VTAB-1k protocol, 1 for 10 epochs)",
    )
    warmup_lr: float = option(1e-6, "learning rate at the first warm-up step")
    min_lr: float = option(1e-5, "learning rate at the end of the cosine decay")
    schedule_unit: Literal["step", "epoch"] = option(
        "step", "update the learning rate every step or epoch"
    )
    grad_accum_steps: int = option(1, "split each batch into this many micro-batches")
    label_smoothing: float = option(0.0, "cross-entropy label smoothing")
    seed: int = option(0, "seed of torch / numpy / python RNGs and of the data order")
    amp: Literal["auto", "bf16", "off"] = option(
        "auto", "auto: bf16 autocast on CUDA, fp32 elsewhere; bf16; off"
    )
    device: str = option("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    num_workers: int = option(0, "DataLoader worker processes (Dataset inputs only)")
    eval_every: int = option(1, "evaluate val/test every N epochs (always after the last)")
    eval_batch_size: int = option(256, "batch size for evaluation")
    report_best_test: bool = option(
        False, "also report the best test top-1 over epochs (SPT reference protocol; labelled)"
    )
    out_dir: str = option("", "folder for metrics.jsonl, summary.json, checkpoint, adapter")
    save_adapter: bool = option(True, "write <out_dir>/adapter.safetensors at the end")
    progress: bool = option(True, "show a progress bar on stderr (rank 0 only)")

    def validate(self) -> None:
        r = self._require
        if self.warmup_epochs is None and isinstance(self.epochs, int):
            self.warmup_epochs = default_warmup_epochs(self.epochs)
        for name in ("lr", "weight_decay", "momentum", "warmup_epochs", "warmup_lr", "min_lr",
                     "label_smoothing"):  # fmt: skip
            value = float(getattr(self, name))
            r(math.isfinite(value), f"{name} must be a finite number, got {value}")
        finite_betas = all(math.isfinite(float(b)) for b in self.betas)
        r(finite_betas, f"betas must be finite, got {self.betas}")
        r(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        r(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        r(self.lr > 0, f"lr must be > 0, got {self.lr}")
        r(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        r(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        r(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"betas must be two numbers in [0, 1), got {self.betas}",
        )
        r(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        r(
            self.warmup_epochs < self.epochs or self.warmup_epochs == 0,
            f"warmup_epochs ({self.warmup_epochs}) must be shorter than epochs ({self.epochs}); "
            "lower warmup_epochs (--warmup-epochs, e.g. 0; by default it is min(10, 10% of "
            "epochs))",
        )
        r(self.warmup_lr >= 0 and self.min_lr >= 0, "warmup_lr and min_lr must be >= 0")
        r(self.grad_accum_steps >= 1, f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        r(
            self.grad_accum_steps <= self.batch_size,
            f"grad_accum_steps ({self.grad_accum_steps}) cannot exceed batch_size "
            f"({self.batch_size})",
        )
        r(
            0 <= self.label_smoothing < 1,
            f"label_smoothing must be in [0, 1), got {self.label_smoothing}",
        )
        r(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        r(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        r(self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        self.betas = tuple(float(b) for b in self.betas)
