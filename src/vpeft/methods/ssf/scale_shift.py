"""Scale-and-shift of a layer's output channels: y ↦ γ ⊙ y + β  (SSF, Lian et al. 2022).

`ScaleShift` is a sequential module for `AdaptedLayer.add_sequential`. It exposes `affine()`, so
the wrapper folds it into the preceding Linear / LayerNorm / Conv2d on merge (the paper's
re-parameterisation: W' = γ ⊙ W, b' = γ ⊙ b + β, row-wise over output channels).

The channel axis depends on the layer's output layout: last for `nn.Linear` and channels-last
`nn.LayerNorm`, axis 1 (NCHW) for `nn.Conv2d` and timm's `LayerNorm2d`. `channel_layout` reads it
from the module type; the module stores how many spatial axes trail the channel axis.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ...errors import UnsupportedBackboneError
from .residual import ResidualLink, residual_scale_shift


@functools.cache
def nchw_norms() -> tuple[type[nn.Module], ...]:
    """LayerNorm subclasses that normalise the channels of NCHW tensors (output channel axis 1);
    timm is imported on the first call, not when the method is registered."""
    from timm.layers import norm as timm_norm

    found = (getattr(timm_norm, "LayerNorm2d", None), getattr(timm_norm, "LayerNorm2dFp32", None))
    return tuple(cls for cls in found if cls is not None)


class ScaleShift(nn.Module):
    """y ↦ γ ⊙ y + β over `channels`; γ = 1, β = 0 (exact identity) unless `init_std > 0`.

    With `init_std > 0`, γ ~ N(1, init_std²) and β ~ N(0, init_std²) (the SSF paper uses 0.02).
    `trailing` is the number of axes after the channel axis (0 for (..., C), 2 for (B, C, H, W)).

    Residual links (`vpeft.methods.ssf.residual`, set by the installer on plain pre-norm
    blocks): a norm's SSF `opens` the link of the branch after it and `closes` the link of the
    branch before it; a branch's last linear layer's SSF is the link's `branch`.
    """

    opens: ResidualLink | None = None
    closes: ResidualLink | None = None
    branch: ResidualLink | None = None

    def __init__(self, channels: int, trailing: int = 0, init_std: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.trailing = trailing
        if init_std > 0:
            with torch.no_grad():
                self.scale.normal_(1.0, init_std)
                self.shift.normal_(0.0, init_std)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale.to(y.dtype), self.shift.to(y.dtype)
        if self.branch is not None and self.trailing == 0:
            z = residual_scale_shift(self.branch, y, scale, shift)
            if z is not None:
                return z
        return ScaleShiftFunction.apply(y, scale, shift, self.trailing)

    def fused_forward(
        self, base: nn.Module, x: torch.Tensor, *args: object, **kwargs: object
    ) -> torch.Tensor | None:
        """γ ⊙ LN(x) + β as one LayerNorm with weight γ ⊙ w and bias γ ⊙ b + β (None when `base`
        is not an affine LayerNorm). The norm saves only what it saves anyway (its input and
        statistics); the chain rule gives dγ = dw'·w + db'·b and dβ = db'."""
        if not isinstance(base, nn.LayerNorm) or base.weight is None or base.bias is None:
            return None
        if torch.is_grad_enabled():
            stream = x
            if self.closes is not None:
                x = self.closes.close(x)
            if self.opens is not None:
                self.opens.open(stream)
        weight, bias = base.weight, base.bias
        scale, shift = self.scale.to(weight.dtype), self.shift.to(bias.dtype)
        folded = {"weight": weight * scale, "bias": bias * scale + shift}
        return torch.func.functional_call(base, folded, (x, *args), kwargs)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(γ, β) per output channel, for merging into the preceding layer."""
        return self.scale, self.shift

    def extra_repr(self) -> str:
        return f"channels={self.scale.numel()}, trailing={self.trailing}"


class ScaleShiftFunction(torch.autograd.Function):
    """z = γ ⊙ y + β that keeps its *output* z for the backward instead of its input y.

    The layer after SSF usually keeps z anyway (attention keeps q, k, v; GELU keeps its input),
    so saving z costs no bytes there, and never more than saving y elsewhere. The backward
    recovers y = (z − β) / γ for dγ = Σ g ⊙ y; dβ = Σ g; dy = γ ⊙ g (SSF paper, Eq. 4).
    A channel with γ exactly 0 would make the recovered y non-finite (γ starts at 1).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        y: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        trailing: int,
    ) -> torch.Tensor:
        shape = (-1,) + (1,) * trailing
        z = y * scale.view(shape) + shift.view(shape)
        ctx.save_for_backward(z, scale, shift)
        ctx.trailing = trailing
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        z, scale, shift = ctx.saved_tensors
        shape = (-1,) + (1,) * ctx.trailing
        channel = grad.dim() - 1 - ctx.trailing
        dims = [d for d in range(grad.dim()) if d != channel]
        need_y, need_scale, need_shift = ctx.needs_input_grad[:3]
        grad_y = grad * scale.view(shape) if need_y else None
        grad_scale = grad_shift = None
        if need_scale:
            y = (z - shift.view(shape)) / scale.view(shape)
            grad_scale = (grad * y).sum(dims)
        if need_shift:
            grad_shift = grad.sum(dims)
        return grad_y, grad_scale, grad_shift, None


def channel_layout(module: nn.Module) -> tuple[int, int]:
    """(output channels, trailing axes after the channel axis) of a layer SSF can follow."""
    if isinstance(module, nn.Conv2d):
        return module.out_channels, 2
    if isinstance(module, nn.Linear):
        return module.out_features, 0
    if isinstance(module, nn.LayerNorm):
        if module.weight is None or len(module.normalized_shape) != 1:
            raise UnsupportedBackboneError(
                f"SSF needs LayerNorms with a per-channel affine weight; got {module} "
                "(elementwise_affine=False or a multi-axis normalized_shape)"
            )
        trailing = 2 if isinstance(module, nchw_norms()) else 0
        return module.normalized_shape[0], trailing
    raise UnsupportedBackboneError(
        f"SSF cannot follow a {type(module).__name__}; supported: Linear, LayerNorm, Conv2d"
    )
