"""APT (Wu et al., arXiv 2306.15706): approximated prompt tuning, installed per attention
sub-layer from the backbone description.

Pinned definition (spec/apt.md, docs/methods/apt.md): every adapted attention sub-layer gets an
`ApproximatedPrompts` module (p prompts, key transform, scale s) applied to the output
projection's result with X = the sub-layer's input: exp(s)·(SA(X) + ΔX). With P = 0 and s = 0
the model is exactly the frozen one (ΔX = 0, exp(0) = 1).

Placement (`placement="auto"`, the paper's): ViLT — every self-attention; BridgeTower (METER-
style) — self- and cross-attention of every fusion layer (2·L modules); CLIP — the text
encoder's self-attention layers; diffusers UNet (Stable Diffusion) — attn1 and attn2 of every
transformer block (2·L modules, X = the image tokens in both); other backbones — every
self-attention. `self` / `cross` / `both` choose the attention kinds within those blocks.
Also trained on ViLT (the paper's setting): the image class token and the modality-type
embedding (`train_embeddings`); the task head always trains.

Trainable per module: p·d + 2·d·r + 1 (lowrank), p·d + 1 (identity), p·d + d² + 1 (dense);
ViLT-B/32, p=200, r=4: 12·(200·768 + 2·4·768 + 1) = 1,916,940.

Weight decay (the paper trains with each task's default AdamW, weight decay 0.01 — which decays
every weight but biases and norms — and CLIP with SGD, weight decay 0.3): APT's tensors are not
tagged, so `vpeft.train.optim`'s structural rule decides — P, W1, W2 (and W_p) are 2-D weights
and decay; the scalar s is 1-D-or-less and does not (like a norm gain); on ViLT the modality-type
embedding decays and the class token, a declared token embedding, does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...backbones import AttentionSpec, BlockSpec
from ...core.config import MethodConfig, option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...core.wrapper import AdaptedLayer
from ...errors import UnsupportedBackboneError
from .layer import KEY_TRANSFORMS, ApproximatedPrompts, TappedApt, tap_attention

PLACEMENTS = ("auto", "self", "cross", "both")
#: family -> (streams of the adapted blocks (None: all), attention kinds) for placement="auto"
AUTO: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "hf-vilt": (None, "self"),
    "hf-bridgetower": (("fusion-text", "fusion-image"), "both"),
    "hf-clip": (("text",), "self"),
    "hf-clip-text": (None, "self"),
    # Stable Diffusion (the paper's DreamBooth setting): self- and cross-attention of every
    # UNet transformer block; X = the query-side input (image tokens) in both
    "diffusers-unet": (None, "both"),
}


@dataclass
class AptConfig(MethodConfig):
    num_prompts: int = option(200, "number of approximated prompts p per attention sub-layer")
    rank: int = option(4, "rank r of the low-rank key transform W1 W2 (key_transform=lowrank)")
    key_transform: str = option(
        "lowrank", "prompt keys: lowrank (P + P W1 W2), identity (P), dense (P + P W_p)"
    )
    learn_scale: bool = option(True, "train the scale s of exp(s)·(SA(X) + ΔX) (else s = 0)")
    placement: str = option(
        "auto", "attention kinds: auto (the paper's per backbone), self, cross or both"
    )
    attn_dropout: float = option(0.0, "dropout on the ReLU prompt attention A (training only)")
    train_embeddings: bool = option(
        True, "also train the class token and modality-type embedding where present (ViLT)"
    )

    def validate(self) -> None:
        self._require(self.num_prompts >= 1, f"num_prompts must be >= 1, got {self.num_prompts}")
        self._require(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        self._require(
            self.key_transform in KEY_TRANSFORMS,
            f"key_transform must be one of {list(KEY_TRANSFORMS)}, got {self.key_transform!r}",
        )
        self._require(
            self.placement in PLACEMENTS,
            f"placement must be one of {list(PLACEMENTS)}, got {self.placement!r}",
        )
        dropout = self.attn_dropout
        self._require(0.0 <= dropout < 1.0, f"attn_dropout must be in [0, 1), got {dropout}")


def apt_sites(ctx: InstallContext, placement: str) -> list[AttentionSpec]:
    """The attention sub-layers APT adapts, in model order."""
    streams, kinds = AUTO.get(ctx.spec.family, (None, "self"))
    if placement != "auto":
        kinds = placement
    blocks: list[BlockSpec] = [b for b in ctx.spec.blocks if streams is None or b.stream in streams]
    sites: list[AttentionSpec] = []
    for block in blocks:
        if kinds in ("self", "both") and block.attention is not None:
            sites.append(block.attention)
        if kinds in ("cross", "both") and block.cross_attention is not None:
            sites.append(block.cross_attention)
    if not sites:
        raise UnsupportedBackboneError(
            f"APT with placement={placement!r} finds no attention layer in the "
            f"{ctx.spec.family} backbone (cross-attention exists only in co-attention fusion "
            "layers, e.g. BridgeTower, and UNet transformer blocks); use placement=self"
        )
    return sites


def install_apt(ctx: InstallContext, cfg: AptConfig) -> None:
    """One `ApproximatedPrompts` on the output projection of every adapted attention, fed the
    attention's input through an `AttentionInputTap`."""
    for attention in apt_sites(ctx, cfg.placement):
        out = attention.output_site
        tap = tap_attention(attention)
        apt = ctx.module(
            ApproximatedPrompts,
            attention.proj.out_features,
            cfg.num_prompts,
            cfg.rank,
            cfg.key_transform,
            cfg.learn_scale,
            cfg.attn_dropout,
            like=attention.proj.weight,
        )
        AdaptedLayer.wrap(out.parent, out.attr).add_sequential("apt", TappedApt(apt, tap))
        ctx.train(apt)  # the optimiser's structural rule: P, W1, W2 (W_p) decay, s does not
    spec = ctx.spec
    if cfg.train_embeddings and spec.modality_embed is not None:
        extras = [spec.modality_embed] + ([spec.cls_token] if spec.cls_token is not None else [])
        ctx.train(*extras)


register(
    MethodInfo(
        name="apt",
        family="prompt",
        paper="Wu et al., Approximated Prompt Tuning for Vision-Language Pre-trained Models, "
        "arXiv 2306.15706",
        mergeable=False,
        config=AptConfig,
        install=install_apt,
        summary="approximated prompts beside every (VL) attention: exp(s)·(SA(X) + ΔX)",
    )
)
