"""Bottleneck adapter modules: Δ(h) = s · W_up σ(W_down h + b_down) + s · b_up.

`Bottleneck` is the branch itself (a parallel branch for `AdaptedLayer.add_parallel`, as in
AdaptFormer, Chen et al. 2022, and the scaled parallel adapter of He et al. 2022).
`ResidualBottleneck` wraps it as a sequential module h ↦ h + Δ(h) for
`AdaptedLayer.add_sequential` (Houlsby et al. 2019, Fig. 2; Pfeiffer et al. 2021).

Initialisation (spec/baselines.md): W_down kaiming-uniform (a=√5, the `nn.Linear` default) with a
zero bias, W_up and b_up zero. The branch is therefore exactly zero at init, yet W_up receives a
gradient at the first step (σ(W_down h) ≠ 0) and W_down from the second step on — an adapter
whose four tensors all start at zero could only ever learn b_up.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "gelu", "silu"]

#: activation name -> module class (a table, not an if-ladder).
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class Bottleneck(nn.Module):
    """Δ(h) = scale · up(dropout(σ(down(h)))), zero at init; shape (..., dim) -> (..., dim)."""

    def __init__(
        self,
        dim: int,
        bottleneck: int,
        activation: Activation = "relu",
        scale: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.Linear(bottleneck, dim)
        self.scale = scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W_down kaiming-uniform(a=√5), b_down = 0, W_up = 0, b_up = 0."""
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(h)))) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class ResidualBottleneck(Bottleneck):
    """h ↦ h + Δ(h): a sequential adapter on a sub-layer's output (identity at init)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + super().forward(h)


def bottleneck_params(dim: int, bottleneck: int) -> int:
    """Trainable parameters of one bottleneck: 2·d·m + m + d (two weights, two biases)."""
    return 2 * dim * bottleneck + bottleneck + dim
