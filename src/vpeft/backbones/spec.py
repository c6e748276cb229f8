"""Declarative description of where things live inside a backbone (design.md, layer 4).

Methods talk to these descriptions, never to parameter names. A `LinearSlot` names one
*logical* linear map — e.g. the query projection — even when the backbone fuses q, k and v into
one `qkv` layer; the slot then covers a row range of the fused weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

#: Logical matrix roles every transformer block may expose.
MATRIX_ROLES: tuple[str, ...] = ("q", "k", "v", "proj", "fc1", "fc2")


@dataclass
class LinearSlot:
    """One logical linear map: `getattr(parent, attr)` restricted to output rows `rows`.

    `rows=None` means the whole layer. For a fused `qkv` layer of width `3·D`, the query slot is
    rows `[0, D)`, the key slot `[D, 2D)`, the value slot `[2D, 3D)`.
    """

    parent: nn.Module
    attr: str
    role: str
    rows: slice | None = None

    @property
    def module(self) -> nn.Module:
        """The module currently installed at this position (possibly a vpeft wrapper)."""
        return getattr(self.parent, self.attr)

    @property
    def linear(self) -> nn.Linear:
        """The frozen base `nn.Linear`, looking through vpeft wrappers."""
        module = self.module
        while hasattr(module, "base"):
            module = module.base
        if not isinstance(module, nn.Linear):
            raise TypeError(f"slot {self.role} is a {type(module).__name__}, not nn.Linear")
        return module

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        if self.rows is None:
            return self.linear.out_features
        return self.rows.stop - self.rows.start

    @property
    def weight(self) -> torch.Tensor:
        """This slot's rows of the frozen weight (a view)."""
        w = self.linear.weight
        return w if self.rows is None else w[self.rows]

    @property
    def bias(self) -> torch.Tensor | None:
        b = self.linear.bias
        if b is None or self.rows is None:
            return b
        return b[self.rows]


@dataclass
class AttentionSpec:
    """Attention of one block: its module, its logical q/k/v/proj slots and head layout."""

    module: nn.Module
    parent: nn.Module
    attr: str
    kind: str  # "global" (ViT), "window" (Swin), "spatial-reduction" (PVT-v2)
    num_heads: int
    head_dim: int
    q: LinearSlot
    k: LinearSlot
    v: LinearSlot
    proj: LinearSlot


@dataclass
class BlockSpec:
    """One residual block: position, width, and the sub-modules methods attach to."""

    index: int
    stage: int
    module: nn.Module
    dim: int
    attention: AttentionSpec | None
    fc1: LinearSlot
    fc2: LinearSlot
    mlp_parent: nn.Module
    mlp_attr: str
    norms: list[nn.Module]

    def matrices(self) -> dict[str, LinearSlot]:
        """The block's logical matrices by role (q, k, v, proj, fc1, fc2 where present)."""
        out: dict[str, LinearSlot] = {}
        if self.attention is not None:
            a = self.attention
            out.update(q=a.q, k=a.k, v=a.v, proj=a.proj)
        out.update(fc1=self.fc1, fc2=self.fc2)
        return out


def pre_norm_block(
    index: int, stage: int, block: nn.Module, dim: int, attention: AttentionSpec
) -> BlockSpec:
    """The usual timm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``
    with ``block.mlp.fc1`` / ``block.mlp.fc2`` (ViT, Swin, PVT-v2)."""
    return BlockSpec(
        index=index,
        stage=stage,
        module=block,
        dim=dim,
        attention=attention,
        fc1=LinearSlot(block.mlp, "fc1", "fc1"),
        fc2=LinearSlot(block.mlp, "fc2", "fc2"),
        mlp_parent=block,
        mlp_attr="mlp",
        norms=[block.norm1, block.norm2],
    )


@dataclass
class BackboneSpec:
    """Everything a method needs to know about one backbone instance."""

    family: str
    model: nn.Module
    blocks: list[BlockSpec]
    embed_dim: int
    num_features: int
    patch_size: int
    num_prefix_tokens: int
    patch_embed: nn.Module
    cls_token: nn.Parameter | None
    pos_embed: nn.Parameter | None
    final_norms: list[nn.Module]
    stage_dims: list[int] = field(default_factory=list)
    token_layout: str = "sequence"  # "sequence" (B, N, C), "nhwc" (Swin), "nchw" (ConvNeXt)
    #: feature taps for dense decoders: stage indices (hierarchical) or block indices (ViT);
    #: None = every stage (hierarchical) / four evenly spaced blocks (ViT)
    tap_indices: tuple[int, ...] | None = None
    #: whether `tap_features` runs `final_norms` (PVT-v2's per-stage norms) or not (Swin, ViT,
    #: ConvNeXt: the final norm serves only the pooled classification path)
    final_norms_in_taps: bool = False
    #: learnable relative-position-bias tables of the attention layers (Swin), in block order
    relative_position_tables: list[nn.Parameter] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def has_attention(self) -> bool:
        return all(b.attention is not None for b in self.blocks)

    def taps(self) -> list[int]:
        """Indices of the tapped stages / blocks, in order."""
        if self.tap_indices is not None:
            return list(self.tap_indices)
        if self.family == "vit":
            step = max(self.depth // 4, 1)
            return [min(step * (i + 1), self.depth) - 1 for i in range(min(4, self.depth))]
        return list(range(len(self.stage_dims)))

    def tap_channels_and_strides(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(channels, stride w.r.t. the input) of every tapped map (timm's ``feature_info``)."""
        info = getattr(self.model, "feature_info", None) or []
        taps = self.taps()
        if len(info) <= max(taps, default=-1):
            return (), ()
        return (
            tuple(int(info[i]["num_chs"]) for i in taps),
            tuple(int(info[i]["reduction"]) for i in taps),
        )

    def tap_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped maps (B, C, H, W), no final norm (timm ``forward_intermediates``); the
        blocks run through their own (possibly wrapped) modules, so methods apply."""
        run = getattr(self.model, "forward_intermediates", None)
        if run is None:
            from ..errors import UnsupportedBackboneError

            raise UnsupportedBackboneError(f"{self.family} backbones give no feature maps")
        return list(run(x, indices=self.taps(), intermediates_only=True))

    def unused_by_taps(self) -> list[nn.Module]:
        """Modules `tap_features` never runs (a dense model never reads them, so never trains
        them): the final norms of Swin, ViT and ConvNeXt."""
        return [] if self.final_norms_in_taps else list(self.final_norms)

    def classifier(self) -> nn.Module:
        """The task head currently installed in the backbone."""
        return self.model.get_classifier()

    def norm_modules(self) -> list[nn.Module]:
        """Every normalisation layer (LayerNorm / BatchNorm / GroupNorm) of the backbone."""
        head = self.classifier()
        head_ids = {id(m) for m in head.modules()}
        return [
            m for m in self.model.modules() if isinstance(m, NORM_TYPES) and id(m) not in head_ids
        ]


NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
)
