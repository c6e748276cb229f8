"""A `diffusers` `UNet2DConditionModel` (Stable Diffusion's denoiser), described by its
attention layers (optional: ``pip install 'vpeft[diffusion]'``; diffusers is imported only here,
and only for a model whose class comes from the diffusers package).

The UNet is a convolutional network with transformer blocks (`BasicTransformerBlock`) inside the
``CrossAttn*`` down / mid / up blocks. Each transformer block is one `BlockSpec` (model order:
down blocks, mid block, up blocks; `stage` = index of the UNet block holding it) with

- ``attention`` = ``attn1``: self-attention over the image tokens (the flattened feature map);
- ``cross_attention`` = ``attn2``: **q reads the image tokens, k and v the text states**
  (``encoder_hidden_states``, width ``cross_attention_dim``) — so q and proj are ``dim × dim``
  while k and v are ``inner × cross_attention_dim``;
- ``fc1`` = ``ff.net[0].proj`` (GEGLU: value and gate in one ``2·inner × dim`` linear),
  ``fc2`` = ``ff.net[2]``; the MLP is the one ``ff`` module.

Both attentions are diffusers `Attention` modules with separate ``to_q``, ``to_k``, ``to_v``
linears and the output projection ``to_out[0]`` (``to_out[1]`` is dropout; SD's blocks add the
residual outside the module, so ``to_out[0]``'s output is the sub-layer output before the
residual add). The module is called as ``attn(norm_hidden_states, encoder_hidden_states=...)``:
its first positional argument is the query-side input — the X that APT reads, for self- and
cross-attention alike.

The UNet has no pooled feature and no classification head: it is adapted without a task head
by `vpeft.adapt(unet, method, ...)`; `vpeft.apply` refuses it with a pointer there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedBackboneError
from .spec import AttentionSpec, BackboneSpec, BlockSpec, LinearSlot, ModuleSite, single_mlp

FAMILY = "diffusers-unet"
#: pip extra that installs diffusers
EXTRA = "diffusion"


def describe_diffusers(model: nn.Module) -> BackboneSpec:
    """The `BackboneSpec` of a `UNet2DConditionModel`, else a clear error."""
    try:
        from diffusers import UNet2DConditionModel
    except ImportError:
        raise ConfigError(
            "this backbone needs diffusers, which is not installed; install it with: "
            f"pip install 'vpeft[{EXTRA}]'"
        ) from None
    if type(model) is not UNet2DConditionModel:
        raise UnsupportedBackboneError(
            f"diffusers {type(model).__name__} is not a supported backbone. Supported diffusers "
            "models: UNet2DConditionModel"
        )
    return describe_unet(model)


def _attention(attn: nn.Module, parent: nn.Module, attr: str, cross: bool) -> AttentionSpec:
    heads = int(attn.heads)
    return AttentionSpec(
        module=attn,
        parent=parent,
        attr=attr,
        kind="diffusers",
        num_heads=heads,
        head_dim=int(attn.inner_dim) // heads,
        q=LinearSlot(attn, "to_q", "q"),
        k=LinearSlot(attn, "to_k", "k"),
        v=LinearSlot(attn, "to_v", "v"),
        proj=LinearSlot(attn.to_out, "0", "proj"),
        output=ModuleSite(attn.to_out, "0"),
        cross=cross,
        scale=float(attn.scale),
        dropout=0.0,
    )


def _unet_blocks(model: nn.Module) -> list[nn.Module]:
    """The UNet's down, mid and up blocks in the order the forward runs them."""
    mid = [model.mid_block] if model.mid_block is not None else []
    return [*model.down_blocks, *mid, *model.up_blocks]


def describe_unet(model: nn.Module) -> BackboneSpec:
    """One `BlockSpec` per `BasicTransformerBlock` (attn1 self, attn2 cross)."""
    blocks: list[BlockSpec] = []
    for stage, unet_block in enumerate(_unet_blocks(model)):
        for transformer in getattr(unet_block, "attentions", None) or []:
            for block in getattr(transformer, "transformer_blocks", []):
                dim = int(block.norm1.normalized_shape[0])
                attn2 = getattr(block, "attn2", None)
                blocks.append(
                    BlockSpec(
                        index=len(blocks),
                        stage=stage,
                        module=block,
                        dim=dim,
                        attention=_attention(
                            block.attn1, block, "attn1", bool(block.attn1.is_cross_attention)
                        ),
                        cross_attention=(
                            None
                            if attn2 is None
                            else _attention(attn2, block, "attn2", bool(attn2.is_cross_attention))
                        ),
                        fc1=LinearSlot(block.ff.net[0], "proj", "fc1"),
                        fc2=LinearSlot(block.ff.net, "2", "fc2"),
                        mlp=single_mlp(block, "ff"),
                        norms=[n for n in (block.norm1, block.norm2, block.norm3) if n is not None],
                    )
                )
    if not blocks:
        raise UnsupportedBackboneError(
            "this UNet2DConditionModel has no transformer blocks (no CrossAttn* down/mid/up "
            "block); there is no attention layer to adapt"
        )
    channels = [int(c) for c in model.config.block_out_channels]
    return BackboneSpec(
        family=FAMILY,
        model=model,
        blocks=blocks,
        embed_dim=channels[0],
        num_features=channels[-1],
        patch_size=1,
        num_prefix_tokens=0,
        patch_embed=model.conv_in,
        cls_token=None,
        pos_embed=None,
        final_norms=[model.conv_norm_out] if model.conv_norm_out is not None else [],
        stage_dims=channels,
        token_layout="nchw",
        pool=_no_pool,
        input_names=("sample", "timestep", "encoder_hidden_states"),
        make_inputs=_make_inputs,
    )


def _no_pool(model: nn.Module, inputs: Any) -> torch.Tensor:
    raise UnsupportedBackboneError(
        "a diffusers UNet has no pooled feature for a task head; adapt it with "
        "vpeft.adapt(unet, method) and train it on its own (denoising) loss"
    )


def _make_inputs(
    model: nn.Module, batch: int, img_size: int | None, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random ``sample`` (B, C, H, W), ``timestep`` (B,) and text states (B, 8, cross_dim)."""
    cfg = model.config
    ref = next(model.parameters())
    size = img_size or int(cfg.sample_size)
    cross = cfg.cross_attention_dim
    cross = int(cross[0] if isinstance(cross, list | tuple) else cross)
    return {
        "sample": torch.randn(batch, cfg.in_channels, size, size, generator=generator).to(ref),
        "timestep": torch.randint(0, 1000, (batch,), generator=generator).to(ref.device),
        "encoder_hidden_states": torch.randn(batch, 8, cross, generator=generator).to(ref),
    }
