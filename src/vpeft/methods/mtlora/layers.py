"""The two modules MTLoRA adds to the last block of every stage.

The block runs on a batch holding two streams stacked along the batch axis, ``[x_a; x_t]``:
the task-agnostic stream ``x_a`` (what the next stage reads) and the active task's stream
``x_t`` (what that task's decoder reads). Both start from the block's input; norms, attention
probabilities and activations act on each stream as the backbone's own code does, and the
linear layers that carry a task-specific update (`MtLoraLinear`) mix the two as MTLoRA's
MT-LoRA module does (official code, ``shared_mode='matrix'``):

    y_a = W x_a + b + s_a · B_a A_a x_a           (TA-LoRA: shared by every task)
    y_t = W x_a + b + s_t · B_t A_t x_t           (TS-LoRA of the active task t)

The frozen product ``W x_a`` is the task-agnostic stream's in both outputs; only the low-rank
term reads the task stream. `MtLoraBlock` doubles the batch before the block and splits it
after, returning ``y_a`` and keeping ``y_t`` for the stage's feature tap.
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.forwarding import ForwardsToWrapped


class MtLoraLinear(ForwardsToWrapped):
    """A frozen linear `base` with the task-agnostic branch `shared` (None: no TA-LoRA) and
    the task-specific branches `specific` (a `TaskSwitch` of LoRA branches, one per task),
    applied to a ``[x_a; x_t]`` batch: ``[W x_a + b + shared(x_a); W x_a + b + specific(x_t)]``.
    """

    def __init__(self, base: nn.Module, shared: nn.Module | None, specific: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.shared = shared
        self.specific = specific

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        agnostic, task = _halves(x)
        frozen = self.base(agnostic)
        y_agnostic = frozen if self.shared is None else frozen + self.shared(agnostic)
        return torch.cat([y_agnostic, frozen + self.specific(task)])


class MtLoraBlock(ForwardsToWrapped):
    """The last block of a stage, run on ``[x; x]``: returns the task-agnostic output (the
    next stage's input) and keeps the active task's output for the stage's tap
    (`take_task_map`, a (B, C, H, W) map of the block's channels-last (B, H, W, C) output)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self._task_output: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        agnostic, task = _halves(self.base(torch.cat([x, x])))
        self._task_output = task
        return agnostic

    def take_task_map(self) -> torch.Tensor:
        """The active task's output of the last forward, as a (B, C, H, W) map (then cleared,
        so a stale map is never read twice)."""
        out, self._task_output = self._task_output, None
        if out is None:
            raise RuntimeError("MTLoRA: a stage's task-specific map was read before its block ran")
        return out.permute(0, 3, 1, 2).contiguous()


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]
    if n % 2:
        raise RuntimeError(
            f"MTLoRA layer got a batch of {n}: it runs inside the last block of a stage, whose "
            "batch stacks the task-agnostic and task-specific streams (call the PeftModel)"
        )
    return x[: n // 2], x[n // 2 :]
