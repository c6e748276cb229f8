"""Dense decoders over multi-scale backbone maps (spec/polyhistor.md, "Decoder").

- `StageNorms`: one LayerNorm(C_i) per stage output, applied over channels of NCHW maps (the
  per-task stage-output norms of the Polyhistor parameter table).
- `AllMLPDecoder`: SegFormer's All-MLP decoder, pinned to the spec.
- `SetrPupDecoder`: SETR's progressive-upsampling (PUP) decoder for single-scale ViT taps.

Decoders return logits at the resolution of their finest input; the task upsamples them to the
image size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def _check_maps(maps: Sequence[torch.Tensor], dims: Sequence[int], who: str) -> None:
    if len(maps) != len(dims):
        raise ConfigError(f"{who} was built for {len(dims)} feature maps, got {len(maps)}")
    for i, (m, c) in enumerate(zip(maps, dims, strict=True)):
        if m.dim() != 4 or m.shape[1] != c:
            raise ConfigError(
                f"{who}: map {i} must be NCHW with {c} channels, got shape {tuple(m.shape)}"
            )


class StageNorms(nn.Module):
    """``y_i = LayerNorm_i(x_i)`` over the channel axis of each NCHW stage map ``x_i``
    (``2·C_i`` parameters per stage)."""

    def __init__(self, dims: Sequence[int], eps: float = 1e-5) -> None:
        super().__init__()
        self.dims = tuple(dims)
        self.norms = nn.ModuleList(nn.LayerNorm(c, eps=eps) for c in self.dims)

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        _check_maps(maps, self.dims, "StageNorms")
        return [
            n(m.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            for n, m in zip(self.norms, maps, strict=True)
        ]


class AllMLPDecoder(nn.Module):
    """SegFormer All-MLP decoder (Xie et al., 2021, Sec. 3.2), as pinned in the spec:

    1. ``F̂_i = Linear(C_i → E)(F_i)`` per stage (with bias), applied to every pixel;
    2. ``F̂_i = Upsample(F̂_i)`` to the size of the first (finest, 1/4-resolution) map,
       bilinear with ``align_corners=False``;
    3. ``F = BN(Conv1×1(Concat(F̂_i)))`` without conv bias, BatchNorm2d(E), then ReLU; the
       concatenation is in **reverse stage order** (coarsest first, ``[F̂_4, F̂_3, F̂_2, F̂_1]``),
       as in SegFormer's reference decoder;
    4. ``M = Conv1×1(E → K)(Dropout(F))`` with bias. Dropout defaults to 0 (SegFormer trains
       with 0.1; the Polyhistor paper does not say; set ``dropout`` to change it).

    Parameters: ``Σ_i (C_i·E + E) + n·E·E + 2E + E·K + K`` (n = number of stages).
    """

    def __init__(
        self, in_dims: Sequence[int], num_outputs: int, embed_dim: int = 256, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if not in_dims or num_outputs < 1 or embed_dim < 1:
            raise ConfigError(
                "AllMLPDecoder needs at least one input stage, num_outputs >= 1, embed_dim >= 1"
            )
        self.in_dims = tuple(in_dims)
        self.proj = nn.ModuleList(nn.Linear(c, embed_dim) for c in self.in_dims)
        self.fuse = nn.Conv2d(len(self.in_dims) * embed_dim, embed_dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(embed_dim)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.predict = nn.Conv2d(embed_dim, num_outputs, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_maps(maps, self.in_dims, "AllMLPDecoder")
        size = maps[0].shape[-2:]
        projected = []
        for proj, m in zip(self.proj, maps, strict=True):
            y = proj(m.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            projected.append(y)
        fused = F.relu(self.bn(self.fuse(torch.cat(projected[::-1], dim=1))))
        return self.predict(self.dropout(fused))


class SetrPupDecoder(nn.Module):
    """SETR progressive-upsampling decoder (Zheng et al., 2021, "SETR-PUP").

    Input: one ViT token map ``(B, C, H/16, W/16)`` (the last of ``maps`` is used, an earlier
    tap is ignored). Implemented: LayerNorm(C) over channels, then ``num_stages`` (default 4)
    times ``[Conv3×3(→E, no bias), BatchNorm2d(E), ReLU, 2× bilinear upsampling
    (align_corners=False)]`` — 16× in total — then ``Conv1×1(E → K)`` with bias. (SETR's
    auxiliary heads are not implemented.)
    """

    def __init__(
        self, in_dim: int, num_outputs: int, embed_dim: int = 256, num_stages: int = 4
    ) -> None:
        super().__init__()
        if num_stages < 1:
            raise ConfigError(f"SetrPupDecoder needs num_stages >= 1, got {num_stages}")
        self.in_dim = in_dim
        self.norm = nn.LayerNorm(in_dim)
        layers: list[nn.Module] = []
        for i in range(num_stages):
            layers += [
                nn.Conv2d(in_dim if i == 0 else embed_dim, embed_dim, 3, padding=1, bias=False),
                nn.BatchNorm2d(embed_dim),
                nn.ReLU(),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ]
        self.stages = nn.Sequential(*layers)
        self.predict = nn.Conv2d(embed_dim, num_outputs, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        x = maps[-1]
        _check_maps([x], (self.in_dim,), "SetrPupDecoder")
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.predict(self.stages(x))
