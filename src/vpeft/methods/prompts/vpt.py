"""Visual Prompt Tuning (Jia et al., ECCV 2022): `vpt-shallow` and `vpt-deep`.

Pinned definition (spec/baselines.md, docs/methods/prompts.md):

- ViT — p prompt tokens enter the token sequence after the class/register tokens,
  [x_cls, P, x_patches], at the input of the first block (Eq. 1, shallow); deep re-inserts p new
  tokens at the input of every block, discarding the previous block's prompt outputs (Eq. 2).
  Prompts are removed before the final norm, so the head (class token or average pooling over
  patches) never sees them. Trainable: p·D (shallow), L·p·D (deep).
- Swin / PVT-v2 — p tokens of the stage width act as extra keys/values of a block's attention
  (every Swin window, zero bias and mask; PVT-v2 after the spatial reduction), projected by the
  frozen k/v layers; their query outputs are not computed. Shallow: the first block only (p·C₀);
  deep: every block (Σ_blocks p·C_stage).
- transformers ViT / CLIP vision / ViLT — the same token method at the places the backbone's
  `TokenPath` names: after the class token (ViT, CLIP vision after `pre_layrnorm`); ViLT after
  the whole text + image sequence, with the key mask extended so every token sees the prompts.
- ConvNeXt has no tokens: unsupported.
- `last_blocks=N` prompts only the last N blocks (VQT Fig. 3b's low-memory regime): the prompts
  enter at the input of block L−N (shallow: there only), and the earlier blocks see no prompts.

Init uniform(−v, v), v = √(6 / (3·patch² + width)); prompt dropout 0.1. Not an identity at init
(the prompts take attention mass) and not mergeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ...core.block_choice import LastBlocksConfig, adapted_blocks, first_adapted_block
from ...core.config import option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...errors import ConfigError
from .layers import (
    ExtendedAttention,
    MaskedPromptInsertion,
    PromptInsertion,
    PromptKeyValues,
    PromptRemoval,
    PromptRemovalAfter,
    PromptReplacement,
    PromptTokens,
    prompt_init_bound,
)

PAPER = "Jia et al., Visual Prompt Tuning, ECCV 2022"
BACKBONES = ("vit", "swin", "pvt_v2", "hf-vit", "hf-clip-vision", "hf-vilt")
KEY_VALUE_FAMILIES = ("swin", "pvt_v2")


@dataclass
class VptConfig(LastBlocksConfig):
    num_tokens: int = option(50, "prompt length p (tokens per prompted layer)")
    dropout: float = option(0.1, "dropout on the prompt tokens during training")

    def validate(self) -> None:
        super().validate()
        self._require(self.num_tokens >= 1, f"num_tokens must be >= 1, got {self.num_tokens}")
        self._require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")


def _new_prompts(
    ctx: InstallContext, cfg: VptConfig, width: int, like: torch.Tensor
) -> PromptTokens | nn.Module:
    bound = prompt_init_bound(ctx.spec.patch_size, width)
    return ctx.module(PromptTokens, cfg.num_tokens, width, bound, cfg.dropout, like=like)


def install_token_prompts(ctx: InstallContext, cfg: VptConfig, deep: bool) -> None:
    """Token-sequence backbones (through `spec.tokens`): insert at the entry (or at the first
    prompted block's input), replace at every later block input (deep), drop at the exit."""
    spec, path = ctx.spec, ctx.spec.tokens
    assert path is not None
    if isinstance(path.exit.module, PromptRemoval):  # every install (shallow, deep, last_blocks)
        raise ConfigError("prompt tokens are already installed in this model; apply VPT only once")
    at, width, blocks = path.prompt_at, spec.embed_dim, path.blocks
    like = spec.blocks[0].attention.q.weight
    start = first_adapted_block(ctx, cfg.last_blocks)
    if start > 0 and path.entry_with_mask:
        raise ConfigError(
            f"VPT with last_blocks on {spec.family}: the attention mask is built from the "
            "embeddings' key mask, so prompts must enter there; use last_blocks=0"
        )
    first = _new_prompts(ctx, cfg, width, like)
    if start == 0:
        insertion = MaskedPromptInsertion if path.entry_with_mask else PromptInsertion
        setattr(path.entry.parent, path.entry.attr, insertion(path.entry.module, first, at))
    else:
        blocks[start] = PromptReplacement(blocks[start], first, at, drop=0)
    ctx.train(first, weight_decay=False)
    if deep:
        for i in range(start + 1, len(blocks)):
            prompts = _new_prompts(ctx, cfg, width, like)
            blocks[i] = PromptReplacement(blocks[i], prompts, at)
            ctx.train(prompts, weight_decay=False)
    removal = PromptRemovalAfter if path.exit_after else PromptRemoval
    setattr(path.exit.parent, path.exit.attr, removal(path.exit.module, at, cfg.num_tokens))


def install_key_value_prompts(ctx: InstallContext, cfg: VptConfig, deep: bool) -> None:
    """Swin / PVT-v2: prompts as extra keys/values of the first block (shallow) or every block."""
    prompted = adapted_blocks(ctx, cfg.last_blocks)
    blocks = prompted if deep else prompted[:1]
    for block in blocks:
        attention = block.attention
        like = attention.k.weight
        source = PromptKeyValues(_new_prompts(ctx, cfg, attention.k.in_features, like))
        # the prompts inside switch per task; the projection wrapper has no state of its own
        ExtendedAttention.wrap(attention).add_source("vpt", source)
        ctx.train(source, weight_decay=False)


def install_vpt(ctx: InstallContext, cfg: VptConfig, deep: bool) -> None:
    """Install VPT-shallow (`deep=False`) or VPT-deep (`deep=True`): prompt tokens in the
    sequence where the backbone has a token path, else extra keys/values (Swin, PVT-v2)."""
    ctx.require_attention()
    ctx.require_family(*BACKBONES)
    if ctx.spec.family in KEY_VALUE_FAMILIES:
        install_key_value_prompts(ctx, cfg, deep)
    else:
        install_token_prompts(ctx, cfg, deep)


for _name, _deep, _summary in (
    ("vpt-shallow", False, "p prompt tokens at the input of the first block"),
    ("vpt-deep", True, "p new prompt tokens at the input of every block"),
):
    register(
        MethodInfo(
            name=_name,
            family="prompt",
            paper=PAPER,
            mergeable=False,
            config=VptConfig,
            install=partial(install_vpt, deep=_deep),
            summary=_summary,
            backbones=BACKBONES,
        )
    )
