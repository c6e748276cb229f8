"""SSF on a residual branch's last linear layer, recovering its output from the residual sums.

In a pre-norm block, ``s' = s + z`` with ``z = γ ⊙ y + β`` the scale-and-shift of the attention
output projection (or of fc2). SSF's dγ = Σ g ⊙ y (SSF paper, Eq. 4) needs y, and z flows only
into the add, which keeps nothing. But s is the input the block's own LayerNorm keeps and s' the
input the next LayerNorm keeps, so

    y = (s' − s − β) / γ

needs no new activation memory. A `ResidualLink` ties the three places of one such add:

- the LayerNorm before the branch (`open`): hands s to the branch;
- the branch's `ScaleShift` (`ResidualScaleShiftFunction`): saves s (one storage with the
  norm's saved input) instead of z, and leaves a `Pending` note holding s and y until the
  check below;
- the next LayerNorm (`close`): checks in the autograd graph that its input is exactly s + z
  (an ``AddBackward0`` of s and the branch, alpha 1), and runs its input through `ResidualTap`,
  which saves s' (one storage with that norm's saved input) and hands it to the branch's
  backward, which autograd always runs after every consumer of s'. When the check fails (a
  layer scale, an adapter on the attention output, ... between the branch and the add) the tap
  saves the branch's y instead: the stored-output path's bytes, same gradients.

The branch takes this path only while the closing LayerNorm runs SSF folded into the norm
(where `close` happens). Every tensor the backward reads goes through ``save_for_backward``,
so memory counters see it, except in one case: a block recomputed alone by *reentrant*
activation checkpointing never sees the next block's norm, and the branch then uses the y its
note still holds (correct; held outside the counter). Numerics: s' − s equals z up to the
rounding of the add (|error| ≤ ulp(s')/2 per entry), so dγ matches the stored-z path to float
tolerance, not bit for bit; dβ and the input gradient are unchanged (float64 tests:
`tests/methods/test_ssf_residual.py`).
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ...errors import UnsupportedBackboneError


class Pending:
    """What the branch leaves for the closing LayerNorm: the stream s (for the graph check) and
    its own y, held only until the check passes; the sum s' arrives in the backward."""

    __slots__ = ("__weakref__", "after", "before", "shape", "y")

    def __init__(self, before: torch.Tensor, y: torch.Tensor) -> None:
        self.before: torch.Tensor | None = before
        self.y: torch.Tensor | None = y
        self.shape = y.shape
        self.after: torch.Tensor | None = None


class ResidualLink:
    """One residual add ``s' = s + z`` whose branch output z comes from a `ScaleShift`.

    `closing` is the `AdaptedLayer` of the LayerNorm after the add and `closing_ssf` its
    `ScaleShift`: the branch takes the lean path only while that norm runs SSF folded into
    the norm (nothing else attached to it), which is where the link is closed. Holds no tensor
    beyond one forward step: `before` is taken by the branch, and the branch's note is held
    weakly (it lives as long as the branch's autograd node)."""

    def __init__(self, closing: nn.Module | None = None, closing_ssf: nn.Module | None = None):
        self.closing, self.closing_ssf = closing, closing_ssf
        self.before: torch.Tensor | None = None
        self.pending: weakref.ref[Pending] | None = None

    def open(self, stream: torch.Tensor) -> None:
        """The LayerNorm before the branch saw the stream s (grad mode only)."""
        self.before = stream

    def take_before(self, shape: torch.Size) -> torch.Tensor | None:
        """s for the branch when the link can close in this forward (else None)."""
        before, self.before = self.before, None
        ready = before is not None and before.shape == shape and self._closes_folded()
        return before if ready else None

    def _closes_folded(self) -> bool:
        layer = self.closing
        if layer is None or layer.parallel or layer.reparam:
            return False
        first = next(iter(layer.sequential.values()), None)
        return first is self.closing_ssf

    def close(self, stream: torch.Tensor) -> torch.Tensor:
        """The next LayerNorm's input s', returned through `ResidualTap`, which saves one
        tensor for the branch's backward: s' (the norm's own storage) when the graph shows
        s' = s + z exactly, else the branch's y (what the stored-output path keeps). The tap
        runs whether or not the branch took the lean path in this forward, so a recomputed
        forward (activation checkpointing of one block) saves what the original one saved."""
        if torch.compiler.is_compiling():
            return stream
        pending = self.pending() if self.pending is not None else None
        self.pending = None
        if pending is None or pending.before is None:
            return ResidualTap.apply(stream, stream, None)
        before, pending.before = pending.before, None
        y, pending.y = pending.y, None
        if _is_sum(stream, before, pending):
            return ResidualTap.apply(stream, stream, pending)
        return ResidualTap.apply(stream, y, pending)  # an add we cannot invert: keep y

    def __deepcopy__(self, memo: dict) -> ResidualLink:
        closing = copy.deepcopy(self.closing, memo)
        return ResidualLink(closing, copy.deepcopy(self.closing_ssf, memo))  # no step in flight

    def __getstate__(self) -> dict:
        return {"closing": self.closing, "closing_ssf": self.closing_ssf}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["closing"], state["closing_ssf"])


def _is_sum(after: torch.Tensor, before: torch.Tensor, pending: Pending) -> bool:
    """Whether autograd recorded `after` as exactly before + z (alpha 1), z the branch output."""
    node = after.grad_fn
    edges = [fn for fn, _ in node.next_functions] if node is not None else []
    branch = [fn for fn in edges if getattr(fn, "pending", None) is pending]
    stream = [fn for fn in edges if fn is not None and fn not in branch]
    if before.grad_fn is not None:
        stream_ok = stream == [before.grad_fn]
    else:  # a leaf stream: no edge (no grad) or its AccumulateGrad
        stream_ok = len(stream) <= 1 and all(type(fn).__name__ == "AccumulateGrad" for fn in stream)
    return (
        type(node).__name__ == "AddBackward0"
        and getattr(node, "_saved_alpha", None) == 1
        and len(edges) == 2
        and len(branch) == 1
        and stream_ok
        and after.shape == pending.shape
    )


class ResidualTap(torch.autograd.Function):
    """Identity on s' that saves one tensor (s', or the branch's y) for the branch's backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        after: torch.Tensor,
        kept: torch.Tensor,
        pending: Pending | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(kept)
        ctx.pending, ctx.kept_sum = pending, kept is after
        return after.view_as(after)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        (kept,) = ctx.saved_tensors
        if ctx.pending is not None:
            setattr(ctx.pending, "after" if ctx.kept_sum else "y", kept.detach())
        return grad, None, None


class ResidualScaleShiftFunction(torch.autograd.Function):
    """z = γ ⊙ y + β (channels last) that saves the stream s before the add instead of z."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        y: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        before: torch.Tensor,
        pending: Pending,
    ) -> torch.Tensor:
        ctx.save_for_backward(before, scale, shift)
        ctx.pending = pending
        return y * scale + shift

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        before, scale, shift = ctx.saved_tensors
        dims = list(range(grad.dim() - 1))
        need_y, need_scale, need_shift = ctx.needs_input_grad[:3]
        pending = ctx.pending
        after, y = pending.after, pending.y
        pending.after = pending.y = None
        grad_y = grad * scale if need_y else None
        grad_shift = grad.sum(dims) if need_shift else None
        grad_scale = None
        if need_scale:
            if after is not None:
                y = (after - before - shift) / scale  # z = s' - s; y = (z - β) / γ
            elif y is None:
                raise UnsupportedBackboneError(
                    "SSF's residual recovery found no residual sum for this branch (the "
                    "LayerNorm after it did not run in this graph); apply SSF with "
                    "residual_links=false"
                )
            grad_scale = (grad * y).sum(dims)
        return grad_y, grad_scale, grad_shift, None, None


def residual_scale_shift(
    link: ResidualLink, y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor | None:
    """The lean z = γ ⊙ y + β when `link` holds this step's stream s and autograd records the
    step (else None: the caller keeps z)."""
    before = link.take_before(y.shape)
    if before is None or not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return None  # (a compiled graph keeps the stored-output path: no graph inspection)
    if not (y.requires_grad or scale.requires_grad or shift.requires_grad):
        return None
    pending = Pending(before, y)
    z = ResidualScaleShiftFunction.apply(y, scale, shift, before.detach(), pending)
    link.pending = weakref.ref(pending)
    return z
