"""timm `ConvNeXt` (no attention; per-block depthwise conv + linear MLP)."""

from __future__ import annotations

from timm.models.convnext import ConvNeXt, ConvNeXtBlock

from ..errors import UnsupportedBackboneError
from .spec import BackboneSpec, BlockSpec, LinearSlot, single_mlp


def _block_spec(index: int, stage: int, block: ConvNeXtBlock) -> BlockSpec:
    if block.use_conv_mlp:
        raise UnsupportedBackboneError(
            "ConvNeXt with conv_mlp=True (1x1 conv MLP) is not supported; use conv_mlp=False"
        )
    return BlockSpec(
        index=index,
        stage=stage,
        module=block,
        dim=block.norm.normalized_shape[0],
        attention=None,
        fc1=LinearSlot(block.mlp, "fc1", "fc1"),
        fc2=LinearSlot(block.mlp, "fc2", "fc2"),
        mlp=single_mlp(block, "mlp"),
        norms=[block.norm],
    )


def describe_convnext(model: ConvNeXt) -> BackboneSpec:
    """Describe a timm ConvNeXt."""
    blocks: list[BlockSpec] = []
    stage_dims: list[int] = []
    for stage_index, stage in enumerate(model.stages):
        dims = [b.norm.normalized_shape[0] for b in stage.blocks]
        stage_dims.append(dims[-1] if dims else 0)
        for block in stage.blocks:
            blocks.append(_block_spec(len(blocks), stage_index, block))
    stem_conv = model.stem[0]
    return BackboneSpec(
        family="convnext",
        model=model,
        blocks=blocks,
        embed_dim=stage_dims[0],
        num_features=model.num_features,
        patch_size=int(stem_conv.kernel_size[0]),
        num_prefix_tokens=0,
        patch_embed=model.stem,
        cls_token=None,
        pos_embed=None,
        final_norms=[m for m in (model.norm_pre, model.head.norm) if hasattr(m, "weight")],
        stage_dims=stage_dims,
        token_layout="nchw",
    )
