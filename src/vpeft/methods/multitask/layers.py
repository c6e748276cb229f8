"""Modules of the dense multi-task baselines.

- `PostNormAdapter`: the adapter unit of Hyperformer / Polyhistor with its LayerNorm after it,
  ``h ↦ h + LN(W_up σ(W_down h + b_down) + b_up)``; W_down / W_up full or low-rank.
- `LowRankLinear`: ``x ↦ x (L R)ᵀ + b`` with ``L ∈ R^{out×r}``, ``R ∈ R^{r×in}``.
- `NormedLoraBranch`: a LoRA branch fed through a LayerNorm, ``x ↦ s · B A LN(x)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..adapters.bottleneck import ACTIVATIONS, Activation
from ..lora.layer import LoraBranch


class LowRankLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W = L R`` of rank ``r`` (the low-rank adapter's projections):
    ``r·(in + out) + out`` parameters. L and R start kaiming-uniform (a=√5, each on its own
    fan-in, as `nn.Linear`), b at zero."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.left = nn.Parameter(torch.empty(out_features, rank))
        self.right = nn.Parameter(torch.empty(rank, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.kaiming_uniform_(self.left, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.right, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.right.t().to(x.dtype)) @ self.left.t().to(x.dtype) + self.bias.to(x.dtype)


def _projection(in_features: int, out_features: int, rank: int) -> nn.Module:
    if rank <= 0:
        layer = nn.Linear(in_features, out_features)
        nn.init.zeros_(layer.bias)
        return layer
    return LowRankLinear(in_features, out_features, rank)


class PostNormAdapter(nn.Module):
    """``h ↦ h + LN_d(W_up σ(W_down h + b_down) + b_up)`` on a sub-layer's output (the
    Polyhistor paper's adapter ``σ(h W_down) W_up + h`` with the LayerNorm(d) that Hyperformer's
    adapter controller puts after every adapter; spec/polyhistor.md pins it on every
    adapter-type module).

    Parameters: ``2·d·n + n + d + 2d`` (full projections) or
    ``2·r·(d + n) + n + d + 2d`` (``rank`` = r > 0: each projection a rank-r product).

    Init: W_down and W_up kaiming-uniform (a=√5), biases zero, the LayerNorm's gain **and** bias
    zero, so the branch is exactly zero at init (identity). The gain gets a gradient at the
    first step (the normalised branch output is non-zero because W_up is not zero), the
    projections from the second step on. (Zero W_up with a unit gain would be the identity
    too, but the first update of W_up would then be normalised to a unit-variance output at
    every block — a jolt to the pretrained features; and zeros in both would never train.)
    """

    def __init__(
        self, dim: int, bottleneck: int, activation: Activation = "gelu", rank: int = 0
    ) -> None:
        super().__init__()
        self.down = _projection(dim, bottleneck, rank)
        self.act = ACTIVATIONS[activation]()
        self.up = _projection(bottleneck, dim, rank)
        self.norm = nn.LayerNorm(dim)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.norm(self.up(self.act(self.down(h))))


def post_norm_adapter_params(dim: int, bottleneck: int, rank: int = 0) -> int:
    """Closed-form trainable parameters of one `PostNormAdapter`."""
    weights = 2 * dim * bottleneck if rank <= 0 else 2 * rank * (dim + bottleneck)
    return weights + bottleneck + dim + 2 * dim


class NormedLoraBranch(nn.Module):
    """``x ↦ s · B A LN_d(x)`` (no bias): LoRA (Hu et al. 2022) with a LayerNorm on the branch
    input, the LoRA of the Polyhistor benchmark (spec/polyhistor.md: ``r·(d + d_out) + 2d``
    parameters). A kaiming-uniform, B zero (identity at init), LN gain one and bias zero. Not
    mergeable: the LayerNorm is not linear in x."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, scale: float, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.lora = LoraBranch(in_features, out_features, rank, scale=scale, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora(self.norm(x))
