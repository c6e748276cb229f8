"""Cosine learning-rate schedule with linear warm-up (SPT / VQT protocols).

With ``W`` warm-up units and ``T`` units in all (a unit is an optimiser step, or an epoch when
stepped per epoch), the rate at unit ``t`` (0-based) is

    lr(t) = warmup_lr + (base_lr − warmup_lr) · t / W                         for t < W
    lr(t) = min_lr + ½ (base_lr − min_lr) (1 + cos(π (t − W) / (T − W)))     for t ≥ W

so it starts at ``warmup_lr``, reaches ``base_lr`` exactly at ``t = W`` and decays to ``min_lr``
at ``t = T``. (timm's ``CosineLRScheduler`` without ``warmup_prefix`` instead runs the cosine over
the whole ``[0, T)`` and jumps at the end of warm-up; we use the continuous form above.)
Each parameter group's rate is ``lr(t)`` times its ``lr_scale`` (default 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass
class WarmupCosine:
    """Closed-form schedule; stateless apart from the unit counter kept by the caller."""

    base_lr: float
    total: int
    warmup: float = 0.0
    warmup_lr: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ConfigError(f"the schedule needs at least one step, got total={self.total}")
        if not 0 <= self.warmup < self.total and self.warmup != 0:
            raise ConfigError(f"warm-up ({self.warmup}) must be shorter than total ({self.total})")

    def lr_at(self, t: float) -> float:
        """The learning rate at unit `t` (closed form above)."""
        if t < self.warmup:
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * t / self.warmup
        progress = min(1.0, (t - self.warmup) / (self.total - self.warmup))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr + (self.base_lr - self.min_lr) * cosine

    def apply(self, optimizer: torch.optim.Optimizer, t: float) -> float:
        """Set every group's ``lr`` for unit `t`; return the unscaled rate."""
        lr = self.lr_at(t)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr


def schedule_for(
    unit: str,
    epochs: int,
    steps_per_epoch: int,
    base_lr: float,
    warmup_epochs: float,
    warmup_lr: float,
    min_lr: float,
) -> tuple[WarmupCosine, int]:
    """The schedule in the chosen `unit` and how many optimiser steps make one unit."""
    if unit == "step":
        total, warmup, per_unit = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch, 1
    elif unit == "epoch":
        total, warmup, per_unit = epochs, warmup_epochs, steps_per_epoch
    else:
        raise ConfigError(f"unknown schedule unit {unit!r}; choose step or epoch")
    return WarmupCosine(base_lr, total, warmup, warmup_lr, min_lr), per_unit
