"""Prefix tuning (Li & Liang, ACL 2021), as used for vision PETL (He et al., ICLR 2022).

Pinned definition (docs/methods/prompts.md): every attention layer gets learnable key and value
prefixes P_k, P_v ∈ R^{p × H·d}, concatenated in front of its keys and values:

    head_i = softmax(q_i [P_k,i; K_i]ᵀ · s + [0 | bias]) [P_v,i; V_i]

On Swin every window sees the same prefixes (zero relative-position bias, never shift-masked);
on PVT-v2 they are appended after the spatial reduction. Prefixes are raw key/value activations
(they do not pass the layer's key norm). Init N(0, 0.02²); no reparameterisation MLP. Not an
identity at init (the prefixes take attention mass) and not mergeable.
Trainable: Σ_layers 2·p·H·d (ViT-B, p=10: 184,320).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.config import MethodConfig, option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from .layers import ExtendedAttention, PrefixKeyValues


@dataclass
class PrefixConfig(MethodConfig):
    num_tokens: int = option(10, "prefix length p (extra keys and values per attention layer)")
    init_std: float = option(0.02, "standard deviation of the normal init of keys and values")

    def validate(self) -> None:
        self._require(self.num_tokens >= 1, f"num_tokens must be >= 1, got {self.num_tokens}")
        self._require(self.init_std > 0.0, f"init_std must be > 0, got {self.init_std}")


def install_prefix(ctx: InstallContext, cfg: PrefixConfig) -> None:
    """One `PrefixKeyValues` per attention layer, through an `ExtendedAttention` wrapper."""
    ctx.require_attention()
    for block in ctx.spec.blocks:
        attention = block.attention
        like = attention.k.weight
        source = ctx.module(
            PrefixKeyValues,
            cfg.num_tokens,
            attention.k.out_features,
            attention.num_heads,
            cfg.init_std,
            like=like,
        )
        ExtendedAttention.wrap(attention).add_source("prefix", source)
        ctx.train(source, weight_decay=False)


register(
    MethodInfo(
        name="prefix",
        family="prompt",
        paper="Li & Liang, Prefix-Tuning, ACL 2021 (vision use: He et al., ICLR 2022)",
        mergeable=False,
        config=PrefixConfig,
        install=install_prefix,
        summary="learnable key/value prefixes in every attention layer",
        backbones=("vit", "swin", "pvt_v2", "hf-vit", "hf-clip-vision", "hf-clip-text", "hf-vilt"),
    )
)
