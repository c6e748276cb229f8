"""timm `ConvNeXt` (no attention; per-block depthwise conv + linear MLP).

Blocks built with ``conv_mlp=True`` — every timm ConvNeXt-V2 (``convnextv2_*``: 1x1-conv MLP
with GRN, LayerNorm2d on NCHW) and some V1 sizes — are **converted in place** to the equivalent
channels-last layout the methods describe (``conv_mlp=False``): each 1x1 conv becomes an
``nn.Linear`` holding the same numbers (weight (out, in, 1, 1) viewed as (out, in)), LayerNorm2d
becomes a channels-last LayerNorm sharing its parameters, GRN switches to channels-last (same
parameters). The block computes the same function (tested against timm's own conv_mlp model,
with weights from its state_dict), and every method that works on ConvNeXt works on it. Other
norms (RMSNorm / SimpleNorm variants) or a normed ConvMlp raise `UnsupportedBackboneError`.
"""

from __future__ import annotations

import torch
from timm.layers import LayerNorm, LayerNorm2d
from timm.models.convnext import ConvNeXt, ConvNeXtBlock
from torch import nn

from ..errors import UnsupportedBackboneError
from .spec import BackboneSpec, BlockSpec, LinearSlot, single_mlp


def _as_linear(conv: nn.Module) -> nn.Linear:
    """A 1x1 `nn.Conv2d` as the `nn.Linear` computing the same map on channels-last input."""
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1):
        raise UnsupportedBackboneError(f"ConvNeXt conv MLP layer {conv} is not a plain 1x1 conv")
    weight = conv.weight
    linear = nn.Linear(
        conv.in_channels, conv.out_channels, bias=conv.bias is not None,
        device=weight.device, dtype=weight.dtype,
    )  # fmt: skip
    linear.weight = nn.Parameter(
        weight.detach().reshape(conv.out_channels, conv.in_channels).clone(),
        requires_grad=weight.requires_grad,
    )
    if conv.bias is not None:
        linear.bias = conv.bias
    return linear


def convert_conv_mlp(block: ConvNeXtBlock) -> None:
    """Turn a ``conv_mlp=True`` block into the equivalent channels-last (``conv_mlp=False``)
    block in place (module docstring); a no-op on channels-last blocks."""
    if not block.use_conv_mlp:
        return
    mlp, norm = block.mlp, block.norm
    if type(norm) is not LayerNorm2d or not isinstance(
        getattr(mlp, "norm", nn.Identity()), nn.Identity
    ):
        raise UnsupportedBackboneError(
            f"ConvNeXt conv_mlp=True blocks with {type(norm).__name__} / a normed MLP are not "
            "supported (LayerNorm2d and an un-normed MLP are: every timm convnextv2_* model)"
        )
    with torch.no_grad():
        fc1, fc2 = _as_linear(mlp.fc1), _as_linear(mlp.fc2)
    channels_last = LayerNorm(norm.normalized_shape[0], eps=norm.eps)
    channels_last.weight, channels_last.bias = norm.weight, norm.bias
    grn = getattr(mlp, "grn", None)
    if grn is not None:  # GlobalResponseNorm: the same parameters, channels-last reduction axes
        grn.spatial_dim, grn.channel_dim, grn.wb_shape = (1, 2), -1, (1, 1, 1, -1)
    mlp.fc1, mlp.fc2, block.norm = fc1, fc2, channels_last
    block.use_conv_mlp = False


def _block_spec(index: int, stage: int, block: ConvNeXtBlock) -> BlockSpec:
    convert_conv_mlp(block)
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
