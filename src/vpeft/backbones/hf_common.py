"""Pieces shared by the transformers descriptions (no transformers import here)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .spec import AttentionSpec, LinearSlot, ModuleSite


def separate_attention(
    module: nn.Module,
    parent: nn.Module,
    attr: str,
    kind: str,
    linears: tuple[nn.Module, str, str, str],
    proj: tuple[nn.Module, str],
    num_heads: int,
    scale: float,
    dropout: float,
    cross: bool = False,
) -> AttentionSpec:
    """An attention with separate q/k/v `nn.Linear`s (rows=None slots, the same roles as a
    fused qkv) and an output projection that is the sub-layer's output site (before the
    residual add)."""
    holder, q, k, v = linears
    proj_parent, proj_attr = proj
    width = getattr(holder, q).out_features
    return AttentionSpec(
        module=module,
        parent=parent,
        attr=attr,
        kind=kind,
        num_heads=num_heads,
        head_dim=width // num_heads,
        q=LinearSlot(holder, q, "q"),
        k=LinearSlot(holder, k, "k"),
        v=LinearSlot(holder, v, "v"),
        proj=LinearSlot(proj_parent, proj_attr, "proj"),
        output=ModuleSite(proj_parent, proj_attr),
        cross=cross,
        scale=scale,
        dropout=dropout,
    )


def as_kwargs(inputs: Any, main: str) -> dict[str, Any]:
    """A batch as model keyword arguments: a dict as is, a tensor as `main`."""
    if isinstance(inputs, dict):
        return dict(inputs)
    if isinstance(inputs, torch.Tensor):
        return {main: inputs}
    raise ConfigError(
        f"expected a tensor ({main}) or a dict of tensors, got {type(inputs).__name__}"
    )
