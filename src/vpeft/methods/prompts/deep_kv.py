"""The deep prompt baselines of APT (Wu et al., arXiv 2306.15706, Tables 1–2), by name.

- `deep-prompt-kv` — the paper's "deep prompt" as it counts it (spec/apt.md): p learnable
  tokens per attention layer, in the attention's input space, enter as **extra keys and values
  only**. Q, K and V are computed for the N + p tokens through the layer's own frozen
  projections, the prompts' queries are cut (never attended with), and the output projection and
  the MLP run on the N real tokens. This is `ExtendedAttention` + `PromptKeyValues`, the
  machinery of VPT on Swin / PVT-v2 (on transformers attention `key_value` projects q, k and v of
  the prompts: the paper's 3·p·d² per layer, computed once per batch). Extra MACs per layer and
  sample: 3·p·d² + 2·N·p·d; ViLT-B/32 at N = 241, p = 200: 5.14 G. On a co-attention
  backbone (BridgeTower, METER-style) the prompts go where APT goes: the self- and the
  cross-attention of every fusion layer (2·L sets of p prompts; in a cross-attention they join
  the other stream's keys/values).
- `deep-prompt-concat` — the prompts concatenated to every layer's input and the *whole* layer
  run on N + p tokens (the previous layer's prompt outputs discarded): `vpt-deep` with the
  paper's p = 200 and no prompt dropout. The real tokens' outputs equal `deep-prompt-kv`'s for
  the same prompts, up to the prompts passing through LN1 here; it costs about 3.8× more
  (the output projection and the MLP also run on the prompts).

Init uniform(−v, v), v = √(6/(3·patch² + d)) (VPT's); not an identity at init (the prompts take
attention mass); not mergeable. Trainable: p·d per prompted attention — ViLT-B/32, p = 200:
12·p·d = 1,843,200 (the paper's 1.84M); METER-sized BridgeTower: 24·p·d = 3,686,400 (3.68M).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ...backbones import AttentionSpec
from ...core.block_choice import adapted_blocks
from ...core.config import option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from .layers import ExtendedAttention, PromptKeyValues, PromptTokens, prompt_init_bound
from .vpt import VptConfig, install_vpt

PAPER = "Wu et al., Approximated Prompt Tuning for Vision-Language Pre-trained Models (baseline)"
#: families whose attention vpeft can re-run with extra keys/values
KV_BACKBONES = (
    "vit", "swin", "pvt_v2", "hf-vit", "hf-clip-vision", "hf-clip-text", "hf-vilt",
    "hf-bridgetower",
)  # fmt: skip
#: co-attention backbones: the streams of their fusion layers, whose self- and cross-attention
#: both take prompts (the paper's METER placement, as APT's)
FUSION_STREAMS: dict[str, tuple[str, ...]] = {"hf-bridgetower": ("fusion-text", "fusion-image")}


@dataclass
class DeepPromptConfig(VptConfig):
    num_tokens: int = option(200, "prompt length p per layer (the APT paper's 200)")
    dropout: float = option(0.0, "dropout on the prompt tokens during training")


def prompted_attentions(ctx: InstallContext, last_blocks: int) -> list[AttentionSpec]:
    """The attention modules that take prompts, in model order: the self-attention of every
    adapted block; on co-attention backbones the self- and cross-attention of the adapted
    fusion layers."""
    blocks = adapted_blocks(ctx, last_blocks)
    streams = FUSION_STREAMS.get(ctx.spec.family)
    if streams is None:
        return [b.attention for b in blocks if b.attention is not None]
    fusion = [b for b in blocks if b.stream in streams]
    return [a for b in fusion for a in (b.attention, b.cross_attention) if a is not None]


def install_deep_prompt_kv(ctx: InstallContext, cfg: DeepPromptConfig) -> None:
    """p prompts per prompted attention module as its extra keys/values."""
    ctx.require_attention()
    ctx.require_family(*KV_BACKBONES)
    bound = prompt_init_bound(ctx.spec.patch_size, ctx.spec.embed_dim)
    for attention in prompted_attentions(ctx, cfg.last_blocks):
        width = attention.k.in_features
        prompts = ctx.module(
            PromptTokens, cfg.num_tokens, width, bound, cfg.dropout, like=attention.k.weight
        )
        source = PromptKeyValues(prompts)
        ExtendedAttention.wrap(attention).add_source("deep_prompt", source)
        ctx.train(source, weight_decay=False)


register(
    MethodInfo(
        name="deep-prompt-kv",
        family="prompt",
        paper=PAPER,
        mergeable=False,
        config=DeepPromptConfig,
        install=install_deep_prompt_kv,
        summary="p prompts per layer as extra keys and values only (APT's deep prompt)",
        backbones=KV_BACKBONES,
    )
)
register(
    MethodInfo(
        name="deep-prompt-concat",
        family="prompt",
        paper=PAPER,
        mergeable=False,
        config=DeepPromptConfig,
        install=partial(install_vpt, deep=True),
        summary="p prompts concatenated to every layer's input, whole layer on N + p tokens",
        backbones=("vit", "hf-vit", "hf-clip-vision", "hf-vilt"),
    )
)
