"""Adding parallel branches into a frozen linear layer's output without full-width temporaries.

    y = base(x) + Σ_i pad_rows_i(branch_i(x))          (what `AdaptedLayer` computes)

The plain way pads each row-sliced branch (e.g. LoRA on the q or v rows of a fused qkv) to the
full output width and adds it: two full-width temporaries and additions per adapted layer.
`add_parallel` computes the same sum with

- one fused low-rank product for every branch that is exactly Δ_i = s_i · (x A_iᵀ) B_iᵀ
  (LoRA, Hu et al. 2022, Eq. 3; a branch says so through `low_rank_factors()`):
  h = x [A_1; A_2; …]ᵀ (one (Σ r_i × in) matmul), then y[:, rows_i] += s_i · h_i B_iᵀ as an
  in-place `addmm_` on the strided row range (BLAS writes straight into y's rows);
- an in-place add into the row range for every other branch.

In-place writes are only made on the output of a plain `nn.Linear` (its backward never needs its
output, so autograd stays exact) that has no forward hooks (a hook may keep the output); any
other base module takes the padded path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


class LowRankFactors(NamedTuple):
    """Δ = scale · (x Aᵀ) Bᵀ with A (r × in) and B (out_rows × r)."""

    A: torch.Tensor
    B: torch.Tensor
    scale: float


@runtime_checkable
class LowRankBranch(Protocol):
    def low_rank_factors(self) -> LowRankFactors | None:
        """The factors when the branch's forward is exactly scale·(x Aᵀ)Bᵀ now (e.g. no dropout
        active), else None."""


def add_parallel(
    base: nn.Module,
    y: torch.Tensor,
    x: torch.Tensor,
    branches: Iterable[tuple[nn.Module, slice | None]],
) -> torch.Tensor:
    """y + Σ pad_rows(branch(x)) for `(branch, rows)` pairs (rows None: every output row)."""
    branches = list(branches)
    if not branches:
        return y
    if not _writable_output(base, y):
        for branch, rows in branches:
            y = add_rows(y, branch(x), rows)
        return y
    y = y.contiguous()
    width = y.shape[-1]
    y2 = y.view(-1, width)
    low_rank: list[tuple[LowRankFactors, slice]] = []
    for branch, rows in branches:
        factors = branch.low_rank_factors() if isinstance(branch, LowRankBranch) else None
        if factors is None:
            delta = branch(x).reshape(-1, _width(rows, width))
            y2[:, rows or slice(None)] += delta.to(y.dtype)
        else:
            low_rank.append((factors, rows or slice(0, width)))
    if low_rank:
        _add_low_rank(y2, x.reshape(-1, x.shape[-1]), low_rank)
    return y


def _add_low_rank(
    y2: torch.Tensor, x2: torch.Tensor, items: list[tuple[LowRankFactors, slice]]
) -> None:
    """y2[:, rows_i] += s_i (x2 A_iᵀ) B_iᵀ with one product x2 [A_1; …]ᵀ for every A_i."""
    stacked = items[0][0].A if len(items) == 1 else torch.cat([f.A for f, _ in items])
    h = x2 @ stacked.t().to(x2.dtype)
    h = h.to(y2.dtype)
    start = 0
    for factors, rows in items:
        rank = factors.A.shape[0]
        y2[:, rows].addmm_(
            h[:, start : start + rank], factors.B.t().to(y2.dtype), alpha=factors.scale
        )
        start += rank


def _folded(branch: nn.Module, base: nn.Module) -> bool:
    """Whether `branch` folded itself into `base`'s weights for this forward (SPT's sparse
    deltas at eval, `EvalFold`): it then adds nothing here."""
    fold = getattr(branch, "fold_for_eval", None)
    return fold is not None and fold(base)


def _writable_output(base: nn.Module, y: torch.Tensor) -> bool:
    """Whether `y` is a plain linear layer's fresh output nobody else holds (no forward hooks)."""
    return (
        isinstance(base, nn.Linear)
        # a fresh output that is an autograd leaf (nothing upstream trains) must stay one:
        # writing a trainable branch into it in place is refused by autograd
        and (y.grad_fn is not None or not torch.is_grad_enabled())
        and not base._forward_hooks
        and y.shape[-1] == base.out_features
        and y.is_floating_point()
    )


def _width(rows: slice | None, width: int) -> int:
    return width if rows is None else rows.stop - rows.start


def add_rows(y: torch.Tensor, delta: torch.Tensor, rows: slice | None) -> torch.Tensor:
    """y + delta zero-padded to y's width at `rows` (out of place; any base module)."""
    if rows is None:
        return y + delta
    width = y.shape[-1]
    return y + F.pad(delta, (rows.start, width - rows.stop))
