"""Folding a trainable piece into its frozen layer's weights while evaluating (`EvalFold`).

A re-parameterisable piece (SPT's sparse deltas, SPT-LoRA's low-rank pairs) adds Δ to a frozen
tensor W. At eval with no gradient wanted for the piece, `AdaptedLayer` asks it to fold: it
writes W + Δ into W's own storage — after saving the region it overwrites — and is then skipped,
so the layer costs what the plain layer costs. On `train()`, `merged()` and before any forward
that needs the piece's gradient, the saved originals are copied back: the frozen weights are
bit-identical to before (nothing is subtracted).

A region is either flat indices into W (sparse entries) or a range of W's rows (a dense block,
e.g. the q rows of a fused qkv). Pieces folded into the same layer are restored in reverse order
of folding, so overlapping regions also come back exactly.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

#: (frozen tensor, region, Δ): region is a LongTensor of flat indices (Δ has one value per
#: index) or a slice of rows (Δ has the shape of ``tensor[rows]``).
FoldTarget = tuple[torch.Tensor, torch.Tensor | slice, torch.Tensor]

#: per base module, the pieces folded into it, in folding order
_STACKS: weakref.WeakKeyDictionary[nn.Module, list[EvalFold]] = weakref.WeakKeyDictionary()


def _save_and_add(param: torch.Tensor, region: torch.Tensor | slice, delta: torch.Tensor):
    """Copy of `param`'s `region`, then `param[region] += delta` in place."""
    if isinstance(region, slice):
        rows = param[region]
        saved = rows.clone()
        rows.add_(delta.to(param.dtype))
        return saved
    flat = param.view(-1)
    saved = flat[region].clone()
    flat.index_add_(0, region, delta.to(param.dtype))
    return saved


def _restore(param: torch.Tensor, region: torch.Tensor | slice, saved: torch.Tensor) -> None:
    if isinstance(region, slice):
        param[region].copy_(saved)
    else:
        param.view(-1).index_copy_(0, region, saved)


class EvalFold:
    """Mixin for an `nn.Module` piece: fold Δ into the frozen tensor at eval, restore for training.

    `fold_for_eval(base)` is asked before each forward: in eval mode with no gradient wanted
    for the piece's parameters (no_grad / inference_mode, or the parameters frozen) it folds Δ
    into `base`'s tensors in place — saving the regions it overwrites first — and returns True:
    the caller then skips the piece. Otherwise, and on `train()` or `unfold()`, the saved
    regions are written back (bit-identical weights). A piece whose parameters changed while
    folded (their versions moved) is re-folded. While folded, the base module's state_dict holds
    W + Δ; adapter files and checkpoints hold the piece's own parameters only.

    Subclasses implement `_fold_targets(base)`.
    """

    _folded: list[tuple[torch.Tensor, torch.Tensor | slice, torch.Tensor]] | None = None
    _folded_version: tuple[int, ...] = ()
    #: weak reference to the module folded into (a plain attribute: a module would register)
    _fold_base: weakref.ref[nn.Module] | None = None

    def _fold_targets(self, base: nn.Module) -> list[FoldTarget]:
        """(frozen tensor, region, Δ) triples; empty when this piece cannot fold into `base`."""
        raise NotImplementedError

    def fold_for_eval(self, base: nn.Module) -> bool:
        params = list(self.parameters())  # type: ignore[attr-defined]
        wants_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if self.training or wants_grad:  # type: ignore[attr-defined]
            self.unfold()
            return False
        version = tuple(p._version for p in params)
        if self._folded is not None and version == self._folded_version:
            return True
        self.unfold()
        targets = self._fold_targets(base)
        if not targets:
            return False
        with torch.no_grad():
            folded = [(p, region, _save_and_add(p, region, d)) for p, region, d in targets]
        self._folded, self._folded_version = folded, version
        self._fold_base = weakref.ref(base)
        _STACKS.setdefault(base, []).append(self)
        return True

    def unfold(self) -> None:
        """Write the saved regions back (no-op when not folded); pieces folded into the same
        layer after this one are unfolded first (they re-fold on their next eval forward)."""
        if self._folded is None:
            return
        stack = self._stack()
        while any(p is self for p in stack) and stack[-1] is not self:
            stack[-1]._unfold_self()
        self._unfold_self()

    def _stack(self) -> list[EvalFold]:
        base = self._fold_base() if self._fold_base is not None else None
        return _STACKS.get(base, []) if base is not None else []

    def _unfold_self(self) -> None:
        with torch.no_grad():
            for param, region, saved in reversed(self._folded or []):
                _restore(param, region, saved)
        stack = self._stack()
        stack[:] = [p for p in stack if p is not self]
        self._folded, self._folded_version, self._fold_base = None, (), None

    def train(self, mode: bool = True):  # type: ignore[no-untyped-def]
        if mode:
            self.unfold()
        return super().train(mode)  # type: ignore[misc]


def foldable(param: torch.Tensor | None) -> bool:
    """Whether `param` can take an in-place fold (present and contiguous)."""
    return param is not None and param.is_contiguous()
