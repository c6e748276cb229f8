"""SSF on a residual branch's last linear layer, recovering its output from the residual sums.

In a pre-norm block, ``s' = s + z`` with ``z = γ ⊙ y + β`` the scale-and-shift of the attention
output projection (or of fc2). SSF's dγ = Σ g ⊙ y (SSF paper, Eq. 4) needs y, and z flows only
into the add, which keeps nothing. But s is the input the block's own LayerNorm keeps and s' the
input the next LayerNorm keeps, so

    y = (s' − s − β) / γ

needs no new activation memory. A `ResidualLink` ties the three places of one such add:

- the LayerNorm before the branch (`open`): hands s to the branch;
- the branch's `ScaleShift` (`ResidualScaleShiftFunction`): saves s (one storage with the
  norm's saved input) instead of z, and leaves a `Pending` note for the sum;
- the next LayerNorm (`close`): checks in the autograd graph that its input is exactly s + z
  (an ``AddBackward0`` of s and the branch, alpha 1), and runs its input through `ResidualTap`,
  which saves s' (one storage with that norm's saved input) and hands it to the branch's
  backward, which autograd always runs after every consumer of s'.

Every tensor the backward reads goes through ``save_for_backward``, so memory counters see it.
Numerics: s' − s equals z up to the rounding of the add (|error| ≤ ulp(s')/2 per entry), so dγ
matches the stored-z path to float tolerance, not bit for bit; dβ and the input gradient are
unchanged (float64 test: `tests/methods/test_ssf_residual.py`).
"""

from __future__ import annotations

import weakref

import torch
from torch.autograd.function import once_differentiable

from ...errors import UnsupportedBackboneError


class Pending:
    """What the branch leaves for the closing LayerNorm; the sum s' arrives in the backward."""

    __slots__ = ("__weakref__", "after", "before", "shape")

    def __init__(self, before: torch.Tensor, shape: torch.Size) -> None:
        self.before: torch.Tensor | None = before
        self.shape = shape
        self.after: torch.Tensor | None = None


class ResidualLink:
    """One residual add ``s' = s + z`` whose branch output z comes from a `ScaleShift`.

    Holds no tensor beyond one forward step: `before` is taken by the branch, and the branch's
    note is held weakly (it lives as long as the branch's autograd node)."""

    def __init__(self) -> None:
        self.before: torch.Tensor | None = None
        self.pending: weakref.ref[Pending] | None = None

    def open(self, stream: torch.Tensor) -> None:
        """The LayerNorm before the branch saw the stream s (grad mode only)."""
        self.before = stream

    def take_before(self, shape: torch.Size) -> torch.Tensor | None:
        before, self.before = self.before, None
        return before if before is not None and before.shape == shape else None

    def close(self, stream: torch.Tensor) -> torch.Tensor:
        """The next LayerNorm's input s': returned through `ResidualTap` when the branch took
        the lean path in this forward (else unchanged)."""
        pending = self.pending() if self.pending is not None else None
        self.pending = None
        if pending is None or pending.before is None:
            return stream
        before, pending.before = pending.before, None
        _check_sum(stream, before, pending)
        return ResidualTap.apply(stream, pending)

    def __deepcopy__(self, memo: dict) -> ResidualLink:
        return ResidualLink()  # a copy starts with no step in flight


def _check_sum(after: torch.Tensor, before: torch.Tensor, pending: Pending) -> None:
    node = after.grad_fn
    edges = [fn for fn, _ in node.next_functions] if node is not None else []
    branch = [fn for fn in edges if getattr(fn, "pending", None) is pending]
    stream = [fn for fn in edges if fn is not None and fn not in branch]
    if before.grad_fn is not None:
        stream_ok = stream == [before.grad_fn]
    else:  # a leaf stream: no edge (no grad) or its AccumulateGrad
        stream_ok = len(stream) <= 1 and all(type(fn).__name__ == "AccumulateGrad" for fn in stream)
    ok = (
        type(node).__name__ == "AddBackward0"
        and getattr(node, "_saved_alpha", None) == 1
        and len(edges) == 2
        and len(branch) == 1
        and stream_ok
        and after.shape == pending.shape
    )
    if not ok:
        raise UnsupportedBackboneError(
            "SSF's residual recovery expected this LayerNorm's input to be exactly "
            "stream + branch output (no layer scale, drop-path or dropout between); the backbone "
            "description marked the block `plain_residual` but the graph differs. Build the "
            "model with drop_path_rate=0 / proj_drop_rate=0, or report the backbone"
        )


class ResidualTap(torch.autograd.Function):
    """Identity on s' that saves s' and hands it to the branch's backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, after: torch.Tensor, pending: Pending
    ) -> torch.Tensor:
        ctx.save_for_backward(after)
        ctx.pending = pending
        return after.view_as(after)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        (after,) = ctx.saved_tensors
        ctx.pending.after = after.detach()
        return grad, None


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
        after, ctx.pending.after = ctx.pending.after, None
        grad_y = grad * scale if need_y else None
        grad_shift = grad.sum(dims) if need_shift else None
        grad_scale = None
        if need_scale:
            if after is None:
                raise UnsupportedBackboneError(
                    "SSF's residual recovery found no residual sum for this branch (the "
                    "LayerNorm after it did not run in this graph)"
                )
            y = (after - before - shift) / scale  # z = s' - s; y = (z - β) / γ
            grad_scale = (grad * y).sum(dims)
        return grad_y, grad_scale, grad_shift, None, None


def residual_scale_shift(
    link: ResidualLink, y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor | None:
    """The lean z = γ ⊙ y + β when `link` holds this step's stream s and autograd records the
    step (else None: the caller keeps z)."""
    before = link.take_before(y.shape)
    if before is None or not torch.is_grad_enabled():
        return None
    if not (y.requires_grad or scale.requires_grad or shift.requires_grad):
        return None
    pending = Pending(before, y.shape)
    z = ResidualScaleShiftFunction.apply(y, scale, shift, before.detach(), pending)
    link.pending = weakref.ref(pending)
    return z
