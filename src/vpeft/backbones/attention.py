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

import math

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


def prepend_keys(extra: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[extra; keys] on the token axis; `extra` (1 or B, H, p, d) is broadcast over the batch."""
    extra = extra.to(keys.dtype).expand(keys.shape[0], -1, -1, -1)
    return torch.cat([extra, keys], dim=2)


def masked_scores(scores: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Attention scores under a boolean mask (True = may attend; the others get the dtype's
    minimum, as transformers' eager attention does) or an additive bias."""
    if bias is not None and bias.dtype == torch.bool:
        return scores.masked_fill(~bias, torch.finfo(scores.dtype).min)
    return scores if bias is None else scores + bias


def pad_key_columns(bias: torch.Tensor | None, extra: int) -> torch.Tensor | None:
    """Left-pad the key axis of an additive bias (0) or boolean mask (True) for `extra` keys.

    Every query may then attend to the `extra` prepended keys with no bias.
    """
    if bias is None:
        return None
    fill = True if bias.dtype == torch.bool else 0.0
    return F.pad(bias, (extra, 0), value=fill)


class AttentionOps:
    """The three operations for one attention module (global multi-head attention, ViT)."""

    def __init__(self, spec: AttentionSpec) -> None:
        self.spec = spec
        self.module: nn.Module = spec.module

    @property
    def scale(self) -> float:
        return float(self.module.scale) if self.spec.scale is None else self.spec.scale

    def dropout_p(self) -> float:
        if not self.module.training:
            return 0.0
        return float(self.module.attn_drop.p) if self.spec.dropout is None else self.spec.dropout

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.split_qkv(self.module.qkv(x))

    def split_qkv(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v (B, H, N, d) from the output (B, N, 3·H·d) of the module's fused `qkv` layer.

        Lets a method re-use the projections the backbone already computed (VQT reads the
        frozen keys and values of every block from a forward hook on `qkv`).
        """
        m = self.module
        q, k, v = (split_heads(t, m.num_heads) for t in fused.chunk(3, dim=-1))
        return m.q_norm(q), m.k_norm(k), v

    def output(self, o: torch.Tensor) -> torch.Tensor:
        m = self.module
        return m.proj_drop(m.proj(m.norm(merge_heads(o))))

    def key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, N, d) of tokens `x` (B, N, C) through the module's projections."""
        _, k, v = self.qkv(x)
        return k, v

    def forward_extra_kv(
        self,
        x: torch.Tensor,
        k_extra: torch.Tensor,
        v_extra: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """The module's forward with p extra keys/values (1|B, H, p, d) that every query sees."""
        if is_causal:
            raise UnsupportedBackboneError(
                "causal attention with extra keys/values (prompts, prefixes) is not supported; "
                "pass an explicit attn_mask instead"
            )
        q, k, v = self.qkv(x)
        bias = pad_key_columns(attn_mask, k_extra.shape[2])
        k, v = prepend_keys(k_extra, k), prepend_keys(v_extra, v)
        return self.output(attend(q, k, v, self.scale, bias, self.dropout_p()))


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

    def window_bias(self, mask: torch.Tensor | None, batch_windows: int) -> torch.Tensor:
        """Additive bias (B·nW or 1, H, N, N): relative-position bias + the shift mask.

        `mask` is the block's (nW, N, N) 0/-100 shift mask (None without shift); windows are
        ordered batch-major, as `window_partition` lays them out.
        """
        bias = self.position_bias()
        if mask is None:
            return bias
        num_windows, n, _ = mask.shape
        both = bias.unsqueeze(1) + mask.to(bias.dtype).unsqueeze(1).unsqueeze(0)  # 1, nW, H, N, N
        both = both.expand(batch_windows // num_windows, -1, -1, -1, -1)
        return both.reshape(batch_windows, -1, n, n)

    def forward_extra_kv(  # type: ignore[override]
        self,
        x: torch.Tensor,
        k_extra: torch.Tensor,
        v_extra: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Window attention where every window also sees p extra keys/values (zero bias/mask)."""
        q, k, v = self.qkv(x)
        bias = pad_key_columns(self.window_bias(mask, x.shape[0]), k_extra.shape[2])
        k, v = prepend_keys(k_extra, k), prepend_keys(v_extra, v)
        return self.output(attend(q, k, v, self.scale, bias, self.dropout_p()))


class SpatialReductionOps(AttentionOps):
    """PVT-v2 attention: queries from all tokens, keys/values from a spatially reduced map."""

    def reduce(self, x: torch.Tensor, feat_size: list[int]) -> torch.Tensor:
        """The tokens keys and values are computed from (B, N', C)."""
        m = self.module
        b, _, c = x.shape
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

    def key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of tokens that already live in the reduced space (after sr + norm)."""
        m = self.module
        k, v = (split_heads(t, m.num_heads) for t in m.kv(x).chunk(2, -1))
        return k, v

    def forward_extra_kv(  # type: ignore[override]
        self,
        x: torch.Tensor,
        k_extra: torch.Tensor,
        v_extra: torch.Tensor,
        feat_size: list[int],
    ) -> torch.Tensor:
        """Spatial-reduction attention with p extra keys/values appended after the reduction."""
        q, k, v = self.qkv_reduced(x, feat_size)
        k, v = prepend_keys(k_extra, k), prepend_keys(v_extra, v)
        return self.output(attend(q, k, v, self.scale, None, self.dropout_p()))


class SeparateProjectionOps(AttentionOps):
    """transformers attention with separate q/k/v `nn.Linear`s and an output projection that
    returns ``(output, weights)``: ViT and CLIP (transformers 5). Projections go through the
    spec's slots, so wrappers installed there (LoRA, adapters) apply."""

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.spec
        return tuple(  # type: ignore[return-value]
            split_heads(slot.module(x), s.num_heads) for slot in (s.q, s.k, s.v)
        )

    def output(self, o: torch.Tensor) -> torch.Tensor:
        return self.spec.proj.module(merge_heads(o))

    def extended_qkv(
        self,
        x: torch.Tensor,
        k_extra: torch.Tensor,
        v_extra: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """q, [K_e; K], [V_e; V] and the mask padded so every query sees the extra keys."""
        q, k, v = self.qkv(x)
        bias = pad_key_columns(attention_mask, k_extra.shape[2])
        return q, prepend_keys(k_extra, k), prepend_keys(v_extra, v), bias

    def attend_extra(
        self,
        x: torch.Tensor,
        k_extra: torch.Tensor,
        v_extra: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        q, k, v, bias = self.extended_qkv(x, k_extra, v_extra, attention_mask)
        return self.output(attend(q, k, v, self.scale, bias, self.dropout_p()))

    def forward_extra_kv(  # type: ignore[override]
        self,
        x: torch.Tensor,
        k_extra: torch.Tensor,
        v_extra: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: object,
    ) -> tuple[torch.Tensor, None]:
        """The module's forward (same arguments, same ``(output, weights)`` return, weights
        None) with p extra keys/values that every query sees."""
        if attention_mask is None and kwargs.get("is_causal"):
            raise UnsupportedBackboneError(
                "causal attention without an explicit mask cannot take extra keys/values"
            )
        return self.attend_extra(x, k_extra, v_extra, attention_mask), None


class ViltAttentionOps(SeparateProjectionOps):
    """ViLT's `ViltAttention` (`attention.{query,key,value}`, `output.dense` + dropout, no
    residual); its forward returns a 1-tuple.

    ViLT's own attention is eager (explicit softmax, probabilities kept for the backward, its
    own dropout module on them); with extra keys/values it runs the same way, so the training
    memory and numerics of prompt methods compare with the plain layer's (a fused kernel would
    make the prompted layer cheaper than the plain one)."""

    def probabilities(
        self, q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """dropout(softmax(q kᵀ / √d_h + bias)) as `ViltSelfAttention` computes it (eager, the
        same division, its own dropout module): bit-identical to the plain layer without extra
        keys."""
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.spec.head_dim)
        return self.module.attention.dropout(torch.softmax(masked_scores(scores, bias), dim=-1))

    def attend_extra(
        self,
        x: torch.Tensor,
        k_extra: torch.Tensor,
        v_extra: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        q, k, v, bias = self.extended_qkv(x, k_extra, v_extra, attention_mask)
        return self.output(torch.matmul(self.probabilities(q, k, bias), v))

    def context_factors(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The plain attention's probabilities (B, H, N, N) and values (B, H, N, d): its context
        (the output projection's input) is ``merge_heads(probs @ v)``."""
        q, k, v = self.qkv(x)
        return self.probabilities(q, k, attention_mask), v

    def project(self, context: torch.Tensor) -> torch.Tensor:
        """Output projection (+ its dropout) of the merged context (B, N, H·d)."""
        return self.module.output.dropout(self.spec.proj.module(context))

    def output(self, o: torch.Tensor) -> torch.Tensor:
        return self.project(merge_heads(o))

    def forward_extra_kv(  # type: ignore[override]
        self,
        x: torch.Tensor,
        k_extra: torch.Tensor,
        v_extra: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor]:
        return (self.attend_extra(x, k_extra, v_extra, attention_mask),)


class BertAttentionOps(SeparateProjectionOps):
    """transformers' BERT-style `*Attention` (BridgeTower's text and fusion layers): a `self`
    module with `query`/`key`/`value` and a `*SelfOutput` (dense → dropout → LayerNorm of the
    residual sum). Its forward takes ``(hidden_states, attention_mask, encoder_hidden_states,
    encoder_attention_mask, …)`` and returns ``(output, weights)``; in a cross-attention the
    keys/values come from ``encoder_hidden_states`` under ``encoder_attention_mask``.

    Eager softmax attention, as the model's own layers run here (`attn_implementation="eager"`):
    with no extra keys the result is bit-identical to the module's forward."""

    def forward_extra_kv(  # type: ignore[override]
        self,
        x: torch.Tensor,
        k_extra: torch.Tensor,
        v_extra: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: object | None = None,
        **kwargs: object,
    ) -> tuple[torch.Tensor, None]:
        """softmax(q [K_e; K]ᵀ·scale + [0 | mask]) [V_e; V], then the module's `*SelfOutput`
        with the residual `x`; the extra keys/values are visible to every query."""
        if cache is not None:
            raise UnsupportedBackboneError(
                "extra keys/values (prompts) with a key/value cache (generation) are not supported"
            )
        cross = self.spec.cross
        source = encoder_hidden_states if cross else x
        if source is None:
            raise UnsupportedBackboneError(
                "a cross-attention with extra keys/values needs encoder_hidden_states"
            )
        s = self.spec
        q = split_heads(s.q.module(x), s.num_heads)
        k, v = (split_heads(slot.module(source), s.num_heads) for slot in (s.k, s.v))
        bias = pad_key_columns(
            encoder_attention_mask if cross else attention_mask, k_extra.shape[2]
        )
        k, v = prepend_keys(k_extra, k), prepend_keys(v_extra, v)
        scores = masked_scores(torch.matmul(q, k.transpose(2, 3)) * self.scale, bias)
        probs = F.dropout(F.softmax(scores, dim=-1), self.dropout_p(), self.module.training)
        o = torch.matmul(probs, v)
        return self.module.output(merge_heads(o), x), None


_OPS: dict[str, type[AttentionOps]] = {
    "global": AttentionOps,
    "window": WindowAttentionOps,
    "spatial-reduction": SpatialReductionOps,
    "hf-proj": SeparateProjectionOps,
    "hf-vilt": ViltAttentionOps,
    "hf-bert": BertAttentionOps,
}


def attention_ops(spec: AttentionSpec) -> AttentionOps:
    """The operations object for one block's attention."""
    ops = _OPS.get(spec.kind)
    if ops is None:
        raise UnsupportedBackboneError(
            f"re-running {spec.kind!r} attention with extra keys/values (prompts, prefixes, "
            f"queries) is not supported; supported kinds: {sorted(_OPS)}"
        )
    return ops(spec)
