"""timm `PyramidVisionTransformerV2` (separate q and fused kv, spatial-reduction attention)."""

from __future__ import annotations

from timm.models.pvt_v2 import Attention, Block, PyramidVisionTransformerV2

from ..errors import UnsupportedBackboneError
from .spec import AttentionSpec, BackboneSpec, BlockSpec, LinearSlot, pre_norm_block


def _block_spec(index: int, stage: int, block: Block) -> BlockSpec:
    attn = block.attn
    if not isinstance(attn, Attention):
        raise UnsupportedBackboneError(f"PVT-v2 block {index}: {type(attn).__name__} unsupported")
    dim = attn.dim
    attention = AttentionSpec(
        module=attn,
        parent=block,
        attr="attn",
        kind="spatial-reduction",
        num_heads=attn.num_heads,
        head_dim=attn.head_dim,
        q=LinearSlot(attn, "q", "q"),
        k=LinearSlot(attn, "kv", "k", slice(0, dim)),
        v=LinearSlot(attn, "kv", "v", slice(dim, 2 * dim)),
        proj=LinearSlot(attn, "proj", "proj"),
    )
    return pre_norm_block(index, stage, block, dim, attention)


def describe_pvt_v2(model: PyramidVisionTransformerV2) -> BackboneSpec:
    """Describe a timm PyramidVisionTransformerV2."""
    blocks: list[BlockSpec] = []
    stage_dims: list[int] = []
    for stage_index, stage in enumerate(model.stages):
        stage_dims.append(stage.blocks[0].attn.dim)
        for block in stage.blocks:
            blocks.append(_block_spec(len(blocks), stage_index, block))
    return BackboneSpec(
        family="pvt_v2",
        model=model,
        blocks=blocks,
        embed_dim=stage_dims[0],
        num_features=model.num_features,
        patch_size=int(model.patch_embed.proj.kernel_size[0]),
        num_prefix_tokens=0,
        patch_embed=model.patch_embed,
        cls_token=None,
        pos_embed=None,
        final_norms=[stage.norm for stage in model.stages],
        final_norms_in_taps=True,
        stage_dims=stage_dims,
        token_layout="sequence",
    )
