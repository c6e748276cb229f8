"""Feeding a parallel branch from another module's input (split feed-forward layers).

AdaptFormer and the scaled parallel adapter run beside the MLP: Δ(x̃) is fed the MLP *input*
x̃ and added to the MLP *output*. When the MLP is one module (timm's `mlp`) that is a parallel
branch of `AdaptedLayer`. BERT-style layers (ViLT, BridgeTower) split it into `intermediate`
(fc1 + act, receives x̃) and `output` (fc2, adds the residual); there `InputTap` wraps the input
module and records x̃, and `TappedBranch` — a parallel branch of the output projection — reads
it. Both run in the same forward of the same layer, input first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .forwarding import ForwardsToWrapped


class InputTap(ForwardsToWrapped):
    """Runs `base` unchanged and keeps its (first) input for `TappedBranch`es."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.last: torch.Tensor | None = None

    @classmethod
    def wrap(cls, parent: nn.Module, attr: str) -> InputTap:
        """The tap at `parent.attr`, installing one if there is none yet."""
        module = getattr(parent, attr)
        if isinstance(module, cls):
            return module
        tap = cls(module)
        setattr(parent, attr, tap)
        return tap

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self.last = x
        return self.base(x, *args, **kwargs)


class TappedBranch(nn.Module):
    """`branch` applied to the input recorded by `tap` (its own layer's input is ignored)."""

    def __init__(self, branch: nn.Module, tap: InputTap) -> None:
        super().__init__()
        self.branch = branch
        object.__setattr__(self, "tap", tap)  # a reference, not a submodule (named once)

    def forward(self, _ignored: torch.Tensor) -> torch.Tensor:
        x = self.tap.last
        if x is None:
            raise RuntimeError("TappedBranch ran before the MLP input was seen by its InputTap")
        return self.branch(x)
