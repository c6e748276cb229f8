"""Divergence guard: stop a run at the first step whose loss is NaN or infinite.

Called once per optimiser step, before the step is applied, with the running loss sum of the
epoch (once non-finite it stays so). The per-step progress bar already reads the loss, so the
check adds no device synchronisation. Under several processes the verdict is all-reduced, so
every rank stops at the same step (no rank is left waiting in a collective).
"""

from __future__ import annotations

import math

import torch

from ..errors import TrainingDivergedError
from . import distributed


def check_finite_loss(
    loss_sum: torch.Tensor, epoch: int, step: int, lr: float, dist: distributed.DistInfo
) -> None:
    """Raise `TrainingDivergedError` naming `step` (global, 1-based) and `epoch` when the loss of
    any process is not finite."""
    bad = torch.logical_not(torch.isfinite(loss_sum.detach())).to(torch.float64).reshape(1)
    distributed.all_reduce_sum(bad, dist)
    if float(bad.item()) == 0.0:
        return
    lr_text = f"{lr:.3g}" if math.isfinite(lr) else str(lr)
    raise TrainingDivergedError(
        f"training diverged: the loss became NaN or infinite at step {step} (epoch {epoch}, "
        f"learning rate {lr_text}); lower the learning rate (--lr), check method options such "
        "as alpha or scale (--opt), or use --amp off; the checkpoint of the last finished epoch "
        "is kept"
    )
