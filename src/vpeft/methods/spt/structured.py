"""SPT's structured modules, placed as the reference places them (spec/spt.md).

- `SptLora` — one parallel branch per linear layer holding a LoRA pair (A kaiming-uniform a=√5,
  B zero, **no α/r scaling**) for each structured logical slot of that layer:
  Δ = drop_path(B(A(dropout(x)))). On a fused qkv layer x = LN1(x) and q, k, v share one
  dropout mask and (by default) one drop-path mask; `independent_drop_path=True` draws one
  drop-path mask per slot, as the reference does. On the attention output projection there is
  no dropout.
- `SptAdapter` — sequential on a projection's output: y ↦ y + drop_path(Up(GELU(Down(dropout(y)))))
  with biases; Down kaiming-uniform(a=√5) (bias: the `nn.Linear` default), Up zero.
- `SptParallelAdapter` — the attention output projection's form: Δ = drop_path(Up(GELU(Down(x)))).

All are zero at init (B = 0, Up = 0). Only `SptLora` folds into the weights (`delta_weight`);
it also folds in place while evaluating (W[rows] += B·A, `vpeft.core.eval_fold.EvalFold`), so an
SPT-LoRA model evaluates at the plain backbone's cost, and restores W bit-exactly for training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...core.eval_fold import EvalFold, FoldTarget, foldable
from ..lora.layer import LoraBranch


def _dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _drop_path(p: float) -> nn.Module:
    if p <= 0:
        return nn.Identity()
    from timm.layers import DropPath  # timm loads when a model is built, not at registration

    return DropPath(p)


class SptLora(EvalFold, nn.Module):
    """LoRA pairs on row ranges `parts` (role -> (start, stop)) of one (out × in) layer."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        parts: dict[str, tuple[int, int]],
        rank: int,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        independent_drop_path: bool = False,
    ) -> None:
        super().__init__()
        self.out_features = out_features
        self.independent_drop_path = independent_drop_path
        self.rows = dict(sorted(parts.items(), key=lambda kv: kv[1][0]))
        self.lora = nn.ModuleDict(
            {
                role: LoraBranch(in_features, b - a, rank, scale=1.0)
                for role, (a, b) in self.rows.items()
            }
        )
        self.dropout = _dropout(dropout)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)  # one mask for every slot of this layer (q, k, v share it)
        pieces, end = [], 0
        for role, (start, stop) in self.rows.items():
            if start > end:
                pieces.append(x.new_zeros(*x.shape[:-1], start - end))
            delta = self.lora[role](h)
            pieces.append(self.drop_path(delta) if self.independent_drop_path else delta)
            end = stop
        if end < self.out_features:
            pieces.append(x.new_zeros(*x.shape[:-1], self.out_features - end))
        out = torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]
        return out if self.independent_drop_path else self.drop_path(out)

    def _fold_targets(self, base: nn.Module) -> list[FoldTarget]:
        """W[start:stop] += B·A for each part (dropout and drop-path are identities at eval)."""
        weight = getattr(base, "weight", None)
        first = next(iter(self.lora.values()))
        if not foldable(weight) or weight.shape != (self.out_features, first.lora_A.shape[1]):
            return []
        return [
            (weight, slice(start, stop), self.lora[role].delta_weight())
            for role, (start, stop) in self.rows.items()
        ]

    def delta_weight(self) -> torch.Tensor:
        """ΔW (out × in): B·A in each part's rows, zero elsewhere."""
        first = next(iter(self.lora.values()))
        w = first.lora_A.new_zeros(self.out_features, first.lora_A.shape[1])
        for role, (start, stop) in self.rows.items():
            w[start:stop] = self.lora[role].delta_weight()
        return w


class _Bottleneck(nn.Module):
    """Up(GELU(Down(·))) with biases; zero at init."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank)
        self.act = nn.GELU()
        self.up = nn.Linear(rank, out_features)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class SptAdapter(_Bottleneck):
    """y ↦ y + drop_path(Up(GELU(Down(dropout(y))))) on a projection's output rows."""

    def __init__(self, dim: int, rank: int, dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__(dim, dim, rank)
        self.dropout = _dropout(dropout)
        self.drop_path = _drop_path(drop_path)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.drop_path(super().forward(self.dropout(y)))


class SptParallelAdapter(_Bottleneck):
    """Δ = drop_path(Up(GELU(Down(x)))) from the layer input (attention output projection)."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, drop_path: float = 0.0
    ) -> None:
        super().__init__(in_features, out_features, rank)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(super().forward(x))
