"""The adapter every hypernetwork method generates, and the Kronecker sums of Polyhistor-Lite.

Adapter (Polyhistor Sec. 3, with the post-adapter LayerNorm of Hyperformer's adapters):

    h_out = h + LN_{γ,β}( σ(h W_down + b_down) W_up + b_up ),
    W_down ∈ R^{d×n}, W_up ∈ R^{n×d}, n = d / λ.

The LayerNorm acts on the adapter branch (before the residual add, as in Mahabadi et al.,
Hyperformer, ACL 2021); its weight γ and bias β are generated like the adapter weights. With γ and
β zero the branch is exactly zero, i.e. the adapter is the identity.

Layer-wise scaling kernels (Polyhistor Eq. 4): ``W = Σ_i W̃_i ⊗ α_i`` with templates
``W̃_i ∈ R^{a×b}`` and kernels ``α_i ∈ R^{s×s}`` gives ``W ∈ R^{a·s × b·s}``; a vector is combined
the same way with ``β_i ∈ R^s`` (the "s×s kernel" of a bias: row i for template i).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AdapterWeights:
    """The tensors of one generated adapter (of one task, one layer)."""

    down: torch.Tensor  # (d, n)
    down_bias: torch.Tensor  # (n,)
    up: torch.Tensor  # (n, d)
    up_bias: torch.Tensor  # (d,)
    norm_weight: torch.Tensor  # (d,)
    norm_bias: torch.Tensor  # (d,)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def adapter_shapes(dim: int, bottleneck: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the `AdapterWeights` of an adapter of width `dim` and bottleneck `bottleneck`."""
    return {
        "down": (dim, bottleneck),
        "down_bias": (bottleneck,),
        "up": (bottleneck, dim),
        "up_bias": (dim,),
        "norm_weight": (dim,),
        "norm_bias": (dim,),
    }


def adapter_forward(h: torch.Tensor, w: AdapterWeights, act: nn.Module) -> torch.Tensor:
    """``h + LN_{γ,β}(σ(h W_down + b_down) W_up + b_up)`` over the last dimension of `h`."""
    u = act(h @ w.down.to(h.dtype) + w.down_bias.to(h.dtype)) @ w.up.to(h.dtype)
    u = u + w.up_bias.to(h.dtype)
    gamma, beta = w.norm_weight.to(h.dtype), w.norm_bias.to(h.dtype)
    return h + F.layer_norm(u, (h.shape[-1],), gamma, beta)


def kronecker_sum(templates: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``Σ_i templates[i] ⊗ kernels[i]``; (s, a, b) and (s, s', s'') -> (a·s', b·s'').

    Entry ``[a·s' + x, b·s'' + y] = Σ_i templates[i, a, b] · kernels[i, x, y]`` (the row-major
    layout of `torch.kron`)."""
    _, a, b = templates.shape
    _, x, y = kernels.shape
    return torch.einsum("iab,ixy->axby", templates, kernels).reshape(a * x, b * y)


def kronecker_sum_vector(templates: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Biases and norm parameters combined the same way: ``Σ_i templates[i] ⊗ kernels[i]``;
    (s, a) and (s, x) -> (a·x,), entry ``[a·x' + j] = Σ_i templates[i, a] · kernels[i, j]``."""
    _, a = templates.shape
    _, x = kernels.shape
    return torch.einsum("ia,ix->ax", templates, kernels).reshape(a * x)
