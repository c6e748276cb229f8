"""Attention maths expressed through a block's own frozen sub-modules.

Methods that change what attention sees (VPT on Swin, prefix tuning, VQT, APT) re-run attention
with extra queries / keys / values. They must not copy timm code, so each attention kind gets
three small operations that call the module's own layers (`qkv`, `q_norm`, `proj`, ...):

    q, k, v = ops.qkv(x)            # (B, H, N, d_h) each, through the module's projections
    o = attend(q, k, v, scale, bias) # softmax(q kᵀ · scale + bias) v
    y = ops.output(o)                # merge heads, output projection (+ its dropout)

Because `qkv` goes through whatever wrapper is installed (e.g. LoRA), methods compose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedBackboneError
from .spec import AttentionSpec


def split_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, H·d) -> (B, H, N, d)."""
    b, n, width = t.shape
    return t.reshape(b, n, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, H, N, d) -> (B, N, H·d)."""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    bias: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """softmax(q kᵀ · scale + bias) v (fused kernel; `bias` is an additive float mask)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=scale)


class AttentionOps:
    """The three operations for one attention module (global multi-head attention, ViT)."""

    def __init__(self, spec: AttentionSpec) -> None:
        self.spec = spec
        self.module: nn.Module = spec.module

    @property
    def scale(self) -> float:
        return float(self.module.scale)

    def dropout_p(self) -> float:
        return float(self.module.attn_drop.p) if self.module.training else 0.0

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.module
        q, k, v = (split_heads(t, m.num_heads) for t in m.qkv(x).chunk(3, dim=-1))
        return m.q_norm(q), m.k_norm(k), v

    def output(self, o: torch.Tensor) -> torch.Tensor:
        m = self.module
        return m.proj_drop(m.proj(m.norm(merge_heads(o))))


class WindowAttentionOps(AttentionOps):
    """Swin window attention: queries and keys of one window plus a relative-position bias."""

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.module
        q, k, v = (split_heads(t, m.num_heads) for t in m.qkv(x).chunk(3, dim=-1))
        return q, k, v

    def position_bias(self) -> torch.Tensor:
        """(1, H, N, N) relative-position bias of one window."""
        return self.module._get_rel_pos_bias()

    def output(self, o: torch.Tensor) -> torch.Tensor:
        m = self.module
        return m.proj_drop(m.proj(merge_heads(o)))


class SpatialReductionOps(AttentionOps):
    """PVT-v2 attention: queries from all tokens, keys/values from a spatially reduced map."""

    def reduce(self, x: torch.Tensor, feat_size: list[int]) -> torch.Tensor:
        """The tokens keys and values are computed from (B, N', C)."""
        m = self.module
        b, n, c = x.shape
        if m.pool is not None:
            grid = x.permute(0, 2, 1).reshape(b, c, *feat_size)
            return m.act(m.norm(m.sr(m.pool(grid)).reshape(b, c, -1).permute(0, 2, 1)))
        if m.sr is not None:
            grid = x.permute(0, 2, 1).reshape(b, c, *feat_size)
            return m.norm(m.sr(grid).reshape(b, c, -1).permute(0, 2, 1))
        return x

    def qkv_reduced(
        self, x: torch.Tensor, feat_size: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.module
        q = split_heads(m.q(x), m.num_heads)
        k, v = (split_heads(t, m.num_heads) for t in m.kv(self.reduce(x, feat_size)).chunk(2, -1))
        return q, k, v

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise UnsupportedBackboneError("PVT-v2 attention needs the feature size: use qkv_reduced")

    def output(self, o: torch.Tensor) -> torch.Tensor:
        m = self.module
        return m.proj_drop(m.proj(merge_heads(o)))


_OPS: dict[str, type[AttentionOps]] = {
    "global": AttentionOps,
    "window": WindowAttentionOps,
    "spatial-reduction": SpatialReductionOps,
}


def attention_ops(spec: AttentionSpec) -> AttentionOps:
    """The operations object for one block's attention."""
    return _OPS[spec.kind](spec)
