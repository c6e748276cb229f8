"""Low-rank parallel branch: Δy = (α/r) · B A x  (LoRA, Hu et al. 2022, Eq. 3)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...core.parallel import LowRankFactors


class LoraBranch(nn.Module):
    """`B @ A` with A kaiming-uniform(a=√5) and B zero, so the branch is zero at init.

    `scale` is α/r for classic LoRA and 1 for SPT-LoRA (which uses no scaling).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        scale: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = scale
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x) @ self.lora_A.t().to(x.dtype)
        return (h @ self.lora_B.t().to(x.dtype)) * self.scale

    def low_rank_factors(self) -> LowRankFactors | None:
        """(A, B, scale) for `AdaptedLayer`'s fused product; None while dropout is active."""
        if isinstance(self.dropout, nn.Dropout) and self.training:
            return None
        return LowRankFactors(self.lora_A, self.lora_B, self.scale)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scale · B A, shape (out, in), for merging."""
        return (self.lora_B @ self.lora_A) * self.scale
