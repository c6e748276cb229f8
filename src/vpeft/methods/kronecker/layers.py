"""Parameterised hypercomplex multiplication (PHM) layers and the adapters built from them.

PHM layer (Zhang et al., ICLR 2021; Mahabadi et al., Compacter, NeurIPS 2021):

    W = Σ_{i=1}^{p} A_i ⊗ B_i ∈ R^{in×out},   A_i ∈ R^{p×p},   B_i ∈ R^{(in/p)×(out/p)},

with the "slow" rule A (p×p×p) shared by every PHM layer of a task, and "fast" matrices B_i per
layer. Compacter writes each B_i as a rank-one product ``s_i t_iᵀ`` (s_i ∈ R^{in/p},
t_i ∈ R^{out/p}).

Initialisation (chosen so that W has the scale of `nn.Linear`'s kaiming-uniform init,
Var W = 1/(3·in)): A ~ N(0, 1/p) and B ~ U(±1/√in) (PHM), or s, t ~ N(0, (3·in)^{-1/2}) (Compacter:
Var(s t) = 1/(3·in)); biases 0. Then Var W = p · (1/p) · Var B = 1/(3·in).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..adapters.bottleneck import ACTIVATIONS


class PHMRule(nn.Module):
    """The slow matrices A (p, p, p) of one task, shared by all of its PHM layers."""

    def __init__(self, p: int) -> None:
        super().__init__()
        self.rule = nn.Parameter(torch.randn(p, p, p) / math.sqrt(p))

    def forward(self) -> torch.Tensor:
        return self.rule


def kron_sum(rule: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
    """``Σ_i rule[i] ⊗ fast[i]``: (p, p, p) and (p, a, b) -> (p·a, p·b)."""
    _, x, y = rule.shape
    _p, a, b = fast.shape
    return torch.einsum("ixy,iab->xayb", rule, fast).reshape(x * a, y * b)


class PHMLinear(nn.Module):
    """``x ↦ x W + b`` with ``W = Σ_i A_i ⊗ B_i`` (``rank=None``) or B_i = s_i t_iᵀ (``rank=1``).

    The rule A comes from `rule()` (a `PHMRule`, or a per-task `TaskSwitch` of them), called at
    every forward; the layer holds it as a plain reference."""

    def __init__(self, in_features: int, out_features: int, p: int, rank: int | None) -> None:
        super().__init__()
        a, b = in_features // p, out_features // p
        self.in_features, self.out_features, self.p, self.rank = in_features, out_features, p, rank
        if rank is None:
            bound = 1.0 / math.sqrt(in_features)
            self.fast = nn.Parameter(torch.empty(p, a, b).uniform_(-bound, bound))
        else:
            std = (3.0 * in_features) ** -0.25
            self.fast_left = nn.Parameter(torch.randn(p, a, rank) * std)
            self.fast_right = nn.Parameter(torch.randn(p, rank, b) * std)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def fast_matrices(self) -> torch.Tensor:
        """B (p, in/p, out/p)."""
        if self.rank is None:
            return self.fast
        return self.fast_left @ self.fast_right

    def weight(self, rule: torch.Tensor) -> torch.Tensor:
        """W (in, out) for the given rule."""
        return kron_sum(rule, self.fast_matrices())

    def forward(self, x: torch.Tensor, rule: torch.Tensor) -> torch.Tensor:
        return x @ self.weight(rule).to(x.dtype) + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, p={self.p}, rank={self.rank}"


class PHMAdapter(nn.Module):
    """``h + LN(up(σ(down(h))))`` with PHM down/up projections and a LayerNorm(d) on the branch.

    The LayerNorm's weight and bias start at zero, so the adapter is exactly the identity at
    init; the LN weight gets a gradient at the first step (∂L/∂γ = ∂L/∂out ⊙ normalised branch)
    and every other tensor from the second step on."""

    def __init__(
        self,
        dim: int,
        bottleneck: int,
        p: int,
        rank: int | None,
        activation: str,
        rule: nn.Module,
    ) -> None:
        super().__init__()
        self.down = PHMLinear(dim, bottleneck, p, rank)
        self.act = ACTIVATIONS[activation]()
        self.up = PHMLinear(bottleneck, dim, p, rank)
        self.norm = nn.LayerNorm(dim)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)
        object.__setattr__(self, "_rule", rule)  # shared by the task's layers; named elsewhere

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        rule = self._rule()
        return h + self.norm(self.up(self.act(self.down(h, rule)), rule))
