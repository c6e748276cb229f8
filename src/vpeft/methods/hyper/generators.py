"""Hypernetwork parts: the task projector and the generators of adapter tensors.

`TaskProjector` (Hyperformer's task projector network): ``z = LN_k(W_2 ReLU(W_1 e + c_1) + c_2)``
maps a task embedding e (or Polyhistor-Lite's [task; layer] embedding) to the k-dimensional input
of the generators (the paper's "k").

`TensorGenerator` emits one adapter's tensors from z:
- dense (Hyperformer, Eq. 2): each tensor is ``ψ(Linear_{k→numel}(z))`` reshaped;
- decomposed (Polyhistor, Eq. 3): each weight matrix of shape a×b is the product of two
  low-rank factors ``ψ_p(P) ψ_q(Q)ᵀ`` with ``[P; Q] = Linear_{k→(a+b)·r}(z)``, P ∈ R^{a×r},
  Q ∈ R^{b×r}; vectors (biases, LayerNorm weight and bias) stay ``Linear_{k→size}(z)``.
ψ acts on generated weight matrices (or their factors) only; vectors are linear in z.

Initialisation: generator weights ~ N(0, init_std²) (Hyperformer's ``init_linear_layer``,
std 1e-2), biases zero. With ``zero_init`` the generators of the post-adapter LayerNorm's γ and β
start at zero (weights and biases), so every generated adapter branch is exactly zero at init
(the adapter is the identity); γ's generator gets a gradient at the first step (∂L/∂γ =
∂L/∂out ⊙ normalised branch ≠ 0) and every other tensor from the second step on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

#: ψ, the activation on generated weights (Eq. 2-3); the paper does not name it.
PSI: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda t: t,
    "tanh": torch.tanh,
    "relu": F.relu,
    "gelu": F.gelu,
}

#: tensors of `AdapterWeights` that are weight matrices (decomposed, ψ applied)
MATRICES = ("down", "up")
#: tensors generated as zero at init by ``zero_init`` (the branch's LayerNorm)
NORM_TENSORS = ("norm_weight", "norm_bias")


class TaskProjector(nn.Sequential):
    """``in_dim → hidden → ReLU → k → LayerNorm(k)`` (Hyperformer's task projector network)."""

    def __init__(self, in_dim: int, hidden: int, k: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, k), nn.LayerNorm(k)
        )


class TensorGenerator(nn.Module):
    """Generates named tensors of the given shapes from z (..., k) -> {name: (..., *shape)}.

    ``rank=None``: every tensor is one Linear output (Eq. 2). ``rank=r``: 2-D tensors in
    `MATRICES` are products of rank-r factors from one Linear each (Eq. 3).
    Parameter names: ``<tensor>.weight`` / ``<tensor>.bias``, e.g. ``down.weight``.
    """

    def __init__(
        self,
        k: int,
        shapes: Mapping[str, tuple[int, ...]],
        rank: int | None = None,
        psi: str = "identity",
        init_std: float = 1e-2,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.shapes = dict(shapes)
        self.rank = rank
        self.psi_name = psi
        self.linears = nn.ModuleDict()
        for name, shape in self.shapes.items():
            if self._decomposed(name):
                a, b = shape
                out = (a + b) * rank  # type: ignore[operator]
            else:
                out = int(torch.Size(shape).numel())
            linear = nn.Linear(k, out)
            zero = zero_init and name in NORM_TENSORS
            nn.init.normal_(linear.weight, std=0.0 if zero else init_std)
            nn.init.zeros_(linear.bias)
            self.linears[name] = linear

    def _decomposed(self, name: str) -> bool:
        return self.rank is not None and name in MATRICES

    def factors(self, name: str, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two factors ``ψ_p(P) (…, a, r)`` and ``ψ_q(Q) (…, b, r)`` of a decomposed tensor."""
        a, b = self.shapes[name]
        r = self.rank
        assert r is not None
        flat = self.linears[name](z)
        psi = PSI[self.psi_name]
        p = flat[..., : a * r].unflatten(-1, (a, r))
        q = flat[..., a * r :].unflatten(-1, (b, r))
        return psi(p), psi(q)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        psi = PSI[self.psi_name]
        for name, shape in self.shapes.items():
            if self._decomposed(name):
                p, q = self.factors(name, z)
                out[name] = p @ q.transpose(-1, -2)
            else:
                t = self.linears[name](z).unflatten(-1, shape)
                out[name] = psi(t) if name in MATRICES else t
        return out

    def extra_repr(self) -> str:
        return f"rank={self.rank}, psi={self.psi_name}"
