"""`AdaptedLayer`: the one wrapper every method uses to attach trainable pieces to a frozen layer.

    y = base(x, ...) + Σ_parallel pad_rows(branch(x))      (parallel branches, e.g. LoRA)
    y[rows] = post(y[rows])  for each sequential module    (e.g. Houlsby adapter, SSF)
    base(x) runs with base.<p> + Σ piece() when re-parameterisation pieces are attached
                                                           (e.g. SPT's sparse deltas on a norm)

Several methods can attach to the same layer (composition), and branches can target a row range
(the q, k or v part of a fused qkv projection). Branches that expose `delta_weight()` (parallel)
or `affine()` (sequential) can be merged back into a plain `nn.Linear` / norm layer;
re-parameterisation pieces (`add_reparam`) fold into any base module.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import VpeftError
from .forwarding import ForwardsToWrapped
from .parallel import _folded, add_parallel


class NotMergeableError(VpeftError):
    """Raised when a layer carries a trainable piece that cannot be folded into weights."""


class AdaptedLayer(ForwardsToWrapped):
    """A frozen `base` module plus parallel and sequential trainable pieces.

    Attributes and methods it does not define are those of `base` (e.g. Swin's
    ``attn.set_window_size`` still works on a wrapped attention)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.parallel = nn.ModuleDict()
        self.sequential = nn.ModuleDict()
        self.reparam = nn.ModuleDict()
        self._rows: dict[str, slice | None] = {}

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def wrap(cls, parent: nn.Module, attr: str) -> AdaptedLayer:
        """Return the wrapper at `parent.attr`, installing one if the layer is still plain."""
        module = getattr(parent, attr)
        if isinstance(module, AdaptedLayer):
            return module
        wrapper = cls(module)
        setattr(parent, attr, wrapper)
        return wrapper

    def _key(self, name: str, table: nn.ModuleDict) -> str:
        key, n = name, 1
        while key in table:
            n += 1
            key = f"{name}_{n}"
        return key

    def add_parallel(self, name: str, branch: nn.Module, rows: slice | None = None) -> str:
        """Add `branch(x)` to the output rows `rows` (all rows when None)."""
        key = self._key(name, self.parallel)
        self.parallel[key] = branch
        self._rows[f"p.{key}"] = rows
        return key

    def add_sequential(self, name: str, module: nn.Module, rows: slice | None = None) -> str:
        """Apply `module` to the output rows `rows` after the base and parallel branches."""
        key = self._key(name, self.sequential)
        self.sequential[key] = module
        self._rows[f"s.{key}"] = rows
        return key

    def add_reparam(self, name: str, piece: nn.Module) -> str:
        """Run `base` with its own parameter `piece.target` replaced by `base.<target> + piece()`.

        `piece()` returns a tensor of the parameter's shape (e.g. a sparse delta scattered into
        zeros); it folds into any base module on merge.
        """
        key = self._key(name, self.reparam)
        self.base.get_parameter(piece.target)  # fail now, not at the first forward
        self.reparam[key] = piece
        return key

    def remove(self, key: str) -> nn.Module:
        """Detach and return the piece added under `key` (by any `add_*`)."""
        for prefix, table in (("p.", self.parallel), ("s.", self.sequential), ("r.", self.reparam)):
            if key in table:
                self._rows.pop(f"{prefix}{key}", None)
                return table.pop(key)
        raise KeyError(f"no piece {key!r} on this layer")

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        # branches folded into the base's weights for this forward (eval) drop out *before* it runs
        parallel = [
            (b, self._rows[f"p.{k}"]) for k, b in self.parallel.items() if not _folded(b, self.base)
        ]
        sequential = list(self.sequential.items())
        y = None if parallel else self._fused_first(sequential, x, *args, **kwargs)
        if y is not None:  # the first sequential module ran folded into the base (e.g. SSF)
            sequential = sequential[1:]
        else:
            y = self._run_base(x, *args, **kwargs)
        y = add_parallel(self.base, y, x, parallel)  # fused low-rank, no padding (core/parallel)
        for key, module in sequential:
            rows = self._rows[f"s.{key}"]
            y = module(y) if rows is None else _replace_rows(y, module(y[..., rows]), rows)
        return y

    def _fused_first(
        self, sequential: list[tuple[str, nn.Module]], x: torch.Tensor, *args: object, **kw: object
    ) -> torch.Tensor | None:
        """module(base(x)) computed by the first sequential module's `fused_forward(base, x)`
        when it is the only piece between the base and the output (None: not applicable)."""
        if not sequential or self.reparam:
            return None
        key, first = sequential[0]
        if self._rows[f"s.{key}"] is not None or not hasattr(first, "fused_forward"):
            return None
        return first.fused_forward(self.base, x, *args, **kw)

    def _run_base(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        pieces = [p for p in self.reparam.values() if not _folded(p, self.base)]
        if not pieces:
            return self.base(x, *args, **kwargs)
        params: dict[str, torch.Tensor] = {}
        for piece in pieces:
            current = params.get(piece.target, self.base.get_parameter(piece.target))
            params[piece.target] = current + piece().to(current.dtype)
        return torch.func.functional_call(self.base, params, (x, *args), kwargs)

    # -- merge ----------------------------------------------------------------------------
    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A plain copy of `base` with every piece folded in (raises if one cannot be)."""
        for piece in (*self.parallel.values(), *self.reparam.values()):
            if hasattr(piece, "unfold"):  # pieces folded for eval write W back first
                piece.unfold()
        base = self.base.merged() if isinstance(self.base, AdaptedLayer) else self.base
        if self.reparam:
            base = copy.deepcopy(base)
            for piece in self.reparam.values():
                param = base.get_parameter(piece.target)
                param.add_(piece().to(param.dtype))
        if not self.parallel and not self.sequential:
            return base
        if not isinstance(base, nn.Linear | nn.LayerNorm | nn.Conv2d):
            raise NotMergeableError(f"cannot merge into a {type(base).__name__}")
        weight = base.weight.detach().clone()
        out_features = weight.shape[0]
        bias = (
            base.bias.detach().clone()
            if base.bias is not None
            else torch.zeros(out_features, dtype=weight.dtype, device=weight.device)
        )
        for key, branch in self.parallel.items():
            if not hasattr(branch, "delta_weight") or not isinstance(base, nn.Linear):
                raise NotMergeableError(f"parallel branch {type(branch).__name__} not mergeable")
            rows = self._rows[f"p.{key}"] or slice(0, out_features)
            weight[rows] += branch.delta_weight().to(weight.dtype)
            if hasattr(branch, "delta_bias"):
                bias[rows] += branch.delta_bias().to(bias.dtype)
        for key, module in self.sequential.items():
            if not hasattr(module, "affine"):
                raise NotMergeableError(f"sequential {type(module).__name__} is not mergeable")
            rows = self._rows[f"s.{key}"] or slice(0, out_features)
            scale, shift = module.affine()
            weight[rows] *= scale.to(weight.dtype).view(-1, *([1] * (weight.dim() - 1)))
            bias[rows] = bias[rows] * scale.to(bias.dtype) + shift.to(bias.dtype)
        plain = copy.deepcopy(base)
        plain.weight.copy_(weight)
        if plain.bias is None:
            plain.bias = nn.Parameter(bias, requires_grad=False)
        else:
            plain.bias.copy_(bias)
        plain.requires_grad_(False)
        return plain


def _replace_rows(y: torch.Tensor, new: torch.Tensor, rows: slice) -> torch.Tensor:
    return torch.cat([y[..., : rows.start], new, y[..., rows.stop :]], dim=-1)


def unwrap_all(root: nn.Module) -> None:
    """Replace every `AdaptedLayer` under `root` by its merged plain layer, in place."""
    for name, child in list(root.named_children()):
        if isinstance(child, AdaptedLayer):
            child = child.merged()
            setattr(root, name, child)
        unwrap_all(child)
