"""timm `SwinTransformer` (hierarchical, shifted-window attention)."""

from __future__ import annotations

from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock, WindowAttention
from torch import nn

from ..errors import UnsupportedBackboneError
from .spec import AttentionSpec, BackboneSpec, BlockSpec, LinearSlot, pre_norm_block


def _block_spec(index: int, stage: int, block: SwinTransformerBlock) -> BlockSpec:
    attn = block.attn
    if not isinstance(attn, WindowAttention):
        raise UnsupportedBackboneError(f"Swin block {index}: {type(attn).__name__} unsupported")
    width = attn.qkv.out_features // 3
    q, k, v = (
        LinearSlot(attn, "qkv", role, slice(i * width, (i + 1) * width))
        for i, role in enumerate(("q", "k", "v"))
    )
    attention = AttentionSpec(
        module=attn,
        parent=block,
        attr="attn",
        kind="window",
        num_heads=attn.num_heads,
        head_dim=width // attn.num_heads,
        q=q,
        k=k,
        v=v,
        proj=LinearSlot(attn, "proj", "proj"),
    )
    return pre_norm_block(index, stage, block, block.norm1.normalized_shape[0], attention)


def describe_swin(model: SwinTransformer) -> BackboneSpec:
    """Describe a timm SwinTransformer (v1)."""
    blocks: list[BlockSpec] = []
    stage_dims: list[int] = []
    for stage_index, stage in enumerate(model.layers):
        stage_dims.append(stage.blocks[0].norm1.normalized_shape[0])
        for block in stage.blocks:
            blocks.append(_block_spec(len(blocks), stage_index, block))
    return BackboneSpec(
        family="swin",
        model=model,
        blocks=blocks,
        embed_dim=model.embed_dim,
        num_features=model.num_features,
        patch_size=int(model.patch_embed.patch_size[0]),
        num_prefix_tokens=0,
        patch_embed=model.patch_embed,
        cls_token=None,
        pos_embed=getattr(model, "absolute_pos_embed", None),
        final_norms=[model.norm],
        relative_position_tables=[
            t
            for b in blocks
            if isinstance(
                t := getattr(b.attention.module, "relative_position_bias_table", None), nn.Parameter
            )
        ],
        stage_dims=stage_dims,
        token_layout="nhwc",
        patch_merging=[
            LinearSlot(stage.downsample, "reduction", "reduction")
            for stage in model.layers
            if hasattr(stage.downsample, "reduction")
        ],
    )
