"""Unstructured (sparse) tuning: a trainable δ ∈ Rⁿ on n chosen entries of a frozen tensor W;
the layer behaves as if its weight were W + scatter(δ) (spec/spt.md, "Unstructured tuning").

- `SparseLinearDelta` — a parallel branch for an `nn.Linear` (`AdaptedLayer.add_parallel`):
  Δy = x Sᵀ (+ scatter(δ_b)), S the sparse (out × in) matrix with S[r_i, c_i] = δ_i. Its
  gradient ∂L/∂δ_i = Σ_tokens G[:, r_i] · X[:, c_i] is computed by `SparseMatmul` in chunks of
  tokens, so memory is O(n + chunk·n): never an n × n matrix, never a dense out × in gradient.
- `SparseDelta` — a re-parameterisation piece for any other tensor (`AdaptedLayer.add_reparam`:
  norms, layer-scale vectors, depthwise convolutions): it returns scatter(δ) densely; its transient
  gradient has the size of that (small) tensor.

Both are zero at init, fold into the frozen weights on merge (`delta_weight` / the reparam fold)
and, while evaluating, in place (`vpeft.core.eval_fold.EvalFold`, restored bit-exactly for
training).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ...core.eval_fold import EvalFold, FoldTarget, foldable

#: Elements of one (tokens × n) temporary in `SparseMatmul` (4 MiB in fp32).
CHUNK_ELEMENTS = 1 << 20


class SparseMatmul(torch.autograd.Function):
    """y = x Sᵀ for x (T, in) and S (out × in) with n entries S[rows_i, cols_i] = values_i."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        values: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        out_features: int,
    ) -> torch.Tensor:
        y = x.new_zeros(x.shape[0], out_features)
        for start, stop in _chunks(x.shape[0], values.numel()):
            picked = x[start:stop].index_select(1, cols) * values
            y[start:stop].index_add_(1, rows, picked)
        ctx.save_for_backward(x, values, rows, cols)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        x, values, rows, cols = ctx.saved_tensors
        need_x, need_values = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.zeros_like(x) if need_x else None
        grad_values = torch.zeros_like(values) if need_values else None
        for start, stop in _chunks(x.shape[0], values.numel()):
            g = grad[start:stop].index_select(1, rows)  # (chunk, n): G[:, r_i]
            if grad_values is not None:  # Σ_tokens G[:, r_i] · X[:, c_i]
                grad_values += (g * x[start:stop].index_select(1, cols)).sum(0)
            if grad_x is not None:  # ∂L/∂X[:, c_i] += δ_i · G[:, r_i]
                grad_x[start:stop].index_add_(1, cols, g * values)
        return grad_x, grad_values, None, None, None


def _chunks(tokens: int, n: int) -> list[tuple[int, int]]:
    step = max(1, CHUNK_ELEMENTS // max(n, 1))
    return [(s, min(s + step, tokens)) for s in range(0, tokens, step)]


def sparse_matmul(
    x: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, out_features: int
) -> torch.Tensor:
    """x Sᵀ over the last dimension of `x` (any leading shape), via `SparseMatmul`."""
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    y = SparseMatmul.apply(flat, values.to(x.dtype), rows, cols, out_features)
    return y.reshape(*lead, out_features)


def _delta_parameter(n: int, like: torch.Tensor) -> nn.Parameter | None:
    return nn.Parameter(torch.zeros(n, dtype=like.dtype, device=like.device)) if n else None


class SparseLinearDelta(EvalFold, nn.Module):
    """Sparse entries of an `nn.Linear`'s weight (flat indices into out × in) and bias."""

    def __init__(
        self, linear: nn.Linear, weight_index: torch.Tensor, bias_index: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        weight_index = weight_index.long().to(linear.weight.device)
        bias_index = (
            torch.zeros(0, dtype=torch.long) if bias_index is None else bias_index.long()
        ).to(linear.weight.device)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_rows", weight_index // self.in_features, persistent=False)
        self.register_buffer("weight_cols", weight_index % self.in_features, persistent=False)
        self.register_buffer("bias_index", bias_index, persistent=False)
        self.weight_delta = _delta_parameter(weight_index.numel(), linear.weight)
        self.bias_delta = _delta_parameter(bias_index.numel(), linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight_delta is not None:
            y = sparse_matmul(
                x, self.weight_delta, self.weight_rows, self.weight_cols, self.out_features
            )
        else:
            y = x.new_zeros(*x.shape[:-1], self.out_features)
        if self.bias_delta is not None:
            y = y + self.delta_bias().to(y.dtype)
        return y

    def _fold_targets(self, base: nn.Module) -> list[FoldTarget]:
        weight, bias = getattr(base, "weight", None), getattr(base, "bias", None)
        if not foldable(weight) or (self.bias_delta is not None and not foldable(bias)):
            return []
        targets = []
        if self.weight_delta is not None:
            index = self.weight_rows * self.in_features + self.weight_cols
            targets.append((weight, index, self.weight_delta))
        if self.bias_delta is not None:
            targets.append((bias, self.bias_index, self.bias_delta))
        return targets

    def delta_weight(self) -> torch.Tensor:
        """scatter(δ_w) as a dense (out × in) matrix (for merging only)."""
        w = torch.zeros(self.out_features, self.in_features, device=self.weight_rows.device)
        if self.weight_delta is not None:
            w = w.to(self.weight_delta.dtype)
            w[self.weight_rows, self.weight_cols] = self.weight_delta
        return w

    def delta_bias(self) -> torch.Tensor:
        """scatter(δ_b) as a dense (out,) vector."""
        if self.bias_delta is None:
            return torch.zeros(self.out_features, device=self.bias_index.device)
        zeros = torch.zeros(
            self.out_features, dtype=self.bias_delta.dtype, device=self.bias_index.device
        )
        return zeros.index_put((self.bias_index,), self.bias_delta)

    def extra_repr(self) -> str:
        n_w = 0 if self.weight_delta is None else self.weight_delta.numel()
        n_b = 0 if self.bias_delta is None else self.bias_delta.numel()
        return f"{self.out_features}x{self.in_features}, weight entries={n_w}, bias entries={n_b}"


class SparseDelta(EvalFold, nn.Module):
    """δ on flat entries `index` of the base module's parameter `target` (reparam piece)."""

    def __init__(self, target: str, param: torch.Tensor, index: torch.Tensor) -> None:
        super().__init__()
        self.target = target
        self.shape = tuple(param.shape)
        self.register_buffer("index", index.long().to(param.device), persistent=False)
        self.delta = nn.Parameter(
            torch.zeros(index.numel(), dtype=param.dtype, device=param.device)
        )

    def forward(self) -> torch.Tensor:
        flat = self.delta.new_zeros(math.prod(self.shape))
        return flat.index_put((self.index,), self.delta).view(self.shape)

    def _fold_targets(self, base: nn.Module) -> list[FoldTarget]:
        param = base.get_parameter(self.target)
        return [(param, self.index, self.delta)] if foldable(param) else []

    def extra_repr(self) -> str:
        return f"target={self.target}, shape={self.shape}, entries={self.delta.numel()}"


def fold_sparse(model: nn.Module) -> int:
    """Fold every sparse delta under `model` into its frozen weights, in place, and remove it.

    Leaves structured modules alone: the way to give SPT-Adapter (not mergeable as a whole) a
    zero-cost sparse part at inference. Wrappers left empty are replaced by their base layer.
    Returns the number of folded entries. The result is for inference: save adapters before.
    """
    from ...core.wrapper import AdaptedLayer

    folded = 0
    for module in model.modules():
        if isinstance(module, EvalFold):
            module.unfold()
    with torch.no_grad():
        for parent in list(model.modules()):
            for name, layer in list(parent.named_children()):
                if not isinstance(layer, AdaptedLayer):
                    continue
                for key, branch in list(layer.parallel.items()):
                    if isinstance(branch, SparseLinearDelta):
                        folded += _fold_linear(layer.base, branch)
                        layer.remove(key)
                for key, piece in list(layer.reparam.items()):
                    if isinstance(piece, SparseDelta):
                        param = layer.base.get_parameter(piece.target)
                        param.add_(piece().to(param.dtype))
                        folded += piece.delta.numel()
                        layer.remove(key)
                if not (layer.parallel or layer.sequential or layer.reparam):
                    setattr(parent, name, layer.base)
    return folded


def _fold_linear(linear: nn.Module, branch: SparseLinearDelta) -> int:
    linear.weight.add_(branch.delta_weight().to(linear.weight.dtype))
    if branch.bias_delta is not None:
        if linear.bias is None:
            linear.bias = nn.Parameter(torch.zeros_like(linear.weight[:, 0]), requires_grad=False)
        linear.bias.add_(branch.delta_bias().to(linear.bias.dtype))
    return sum(p.numel() for p in branch.parameters())
