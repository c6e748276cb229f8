"""timm `VisionTransformer` (ViT, DeiT, and the MAE / MoCo-v3 / CLIP / DINOv2 variants)."""

from __future__ import annotations

from timm.layers import Attention, Mlp
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from ..errors import UnsupportedBackboneError
from .spec import (
    AttentionSpec,
    BackboneSpec,
    BlockSpec,
    LinearSlot,
    ModuleSite,
    TokenPath,
    pre_norm_block,
)


def _fused_qkv_slots(attn: Attention) -> tuple[LinearSlot, LinearSlot, LinearSlot]:
    width = attn.num_heads * attn.head_dim
    return tuple(  # type: ignore[return-value]
        LinearSlot(attn, "qkv", role, slice(i * width, (i + 1) * width))
        for i, role in enumerate(("q", "k", "v"))
    )


def _block_spec(index: int, block: Block) -> BlockSpec:
    if type(block) is not Block or type(block.attn) is not Attention:
        raise UnsupportedBackboneError(
            f"ViT block {index} is {type(block).__name__} with {type(block.attn).__name__}; "
            "vpeft supports the standard pre-norm timm Block with fused-qkv Attention"
        )
    if block.attn.gate is not None:
        raise UnsupportedBackboneError("gated ViT attention is not supported")
    attn = block.attn
    q, k, v = _fused_qkv_slots(attn)
    attention = AttentionSpec(
        module=attn,
        parent=block,
        attr="attn",
        kind="global",
        num_heads=attn.num_heads,
        head_dim=attn.head_dim,
        q=q,
        k=k,
        v=v,
        proj=LinearSlot(attn, "proj", "proj"),
    )
    mlp = block.mlp
    if not isinstance(mlp, Mlp):
        raise UnsupportedBackboneError(f"ViT block {index} MLP {type(mlp).__name__} unsupported")
    dim = block.norm1.normalized_shape[0]
    return pre_norm_block(index, 0, block, dim, attention, _plain_residual(block))


def _passes_through(module: nn.Module) -> bool:
    """Identity, or a dropout with p = 0 (timm's default; it returns its input as is)."""
    return isinstance(module, nn.Identity) or (isinstance(module, nn.Dropout) and module.p == 0)


def _plain_residual(block: Block) -> bool:
    """Whether the attention projection's and fc2's outputs reach the residual adds unchanged
    (no layer scale, drop-path, or active dropout; no norm after fc2)."""
    between = (
        block.ls1, block.drop_path1, block.attn.proj_drop,
        block.ls2, block.drop_path2, block.mlp.drop2,
    )  # fmt: skip
    return all(_passes_through(m) for m in between)


def describe_vit(model: VisionTransformer) -> BackboneSpec:
    """Describe a timm VisionTransformer."""
    if getattr(model, "attn_pool", None) is not None:
        raise UnsupportedBackboneError("ViT with attention pooling (MAP head) is not supported")
    patch = model.patch_embed.patch_size
    finals = [
        m
        for m in (model.norm, model.fc_norm)
        if m is not None and m.__class__.__name__ != "Identity"
    ]
    return BackboneSpec(
        family="vit",
        model=model,
        blocks=[_block_spec(i, b) for i, b in enumerate(model.blocks)],
        embed_dim=model.embed_dim,
        num_features=model.num_features,
        patch_size=int(patch[0]),
        num_prefix_tokens=model.num_prefix_tokens,
        patch_embed=model.patch_embed,
        cls_token=model.cls_token,
        pos_embed=model.pos_embed,
        final_norms=finals,
        stage_dims=[model.embed_dim],
        token_layout="sequence",
        tokens=TokenPath(
            entry=ModuleSite(model, "norm_pre"),
            blocks=model.blocks,
            exit=ModuleSite(model, "norm"),
            prompt_at=model.num_prefix_tokens,
        ),
    )
