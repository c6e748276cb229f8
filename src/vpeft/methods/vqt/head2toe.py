"""`Head2ToeFeatures`: pooled intermediate features of a frozen ViT (Evci et al., ICML 2022;
as described in VQT, Tu et al. 2023, §3.1.2).

Taps, in this order: the input tokens of the first block (Z_0), then in every block
    1. after LayerNorm 1 (the attention input),
    2. after MSA (the attention module's output, before layer-scale and the residual),
    3. inside the MLP after the activation (the input of fc2),
    4. after the MLP (its output, before layer-scale and the residual).
Every tap (B, N, C) is average-pooled over tokens in `pool_groups` contiguous groups by token
index (`adaptive_avg_pool1d`), giving C·g features, then L2-normalised on its own (as VQT's
groups). Pooling happens inside the hook, so the full intermediate tensors are freed at once;
the backbone runs without autograd, so memory stays that of inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...backbones.spec import BackboneSpec
from .capture import capture_inputs, capture_outputs
from .head import SelectedLinear, normalize_groups

TAPS_PER_BLOCK = ("norm1", "attention", "mlp_hidden", "mlp")


def pool_tokens(tokens: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, N, C) -> (B, C·g): the mean of each of g contiguous token groups, channel-major."""
    return F.adaptive_avg_pool1d(tokens.transpose(1, 2), groups).flatten(1)


class Head2ToeFeatures(nn.Module):
    """Frozen backbone, pooled taps from every block, one linear head (optionally on a subset)."""

    def __init__(
        self,
        spec: BackboneSpec,
        num_classes: int,
        pool_groups: int = 1,
        normalize: bool = True,
        selection: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.pool_groups = pool_groups
        self.normalize = normalize
        like = spec.blocks[0].fc1.weight
        self.head = SelectedLinear(self.feature_dim, num_classes, selection).to(
            like.device, like.dtype
        )

    def group_sizes(self) -> list[int]:
        """Width of each tap's features: [input, (norm1, attention, mlp_hidden, mlp) × M]."""
        g = self.pool_groups
        sizes = [self.spec.embed_dim * g]
        for block in self.spec.blocks:
            sizes += [block.dim * g, block.dim * g, block.fc2.in_features * g, block.dim * g]
        return sizes

    @property
    def feature_dim(self) -> int:
        return sum(self.group_sizes())

    def _pool(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return pool_tokens(tokens, self.pool_groups)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) pooled, per-tap normalised features; no autograd through the model."""
        blocks = self.spec.blocks
        first = [blocks[0].module]
        outputs = [
            module
            for b in blocks
            for module in (b.norms[0], b.attention.output_site.module)  # type: ignore[union-attr]
        ]
        hidden = [b.fc2.module for b in blocks]
        mlps = [b.mlp.output.module for b in blocks]
        with (
            capture_inputs(first, self._pool) as z0,
            capture_outputs(outputs, self._pool) as norm_attn,
            capture_inputs(hidden, self._pool) as mlp_hidden,
            capture_outputs(mlps, self._pool) as mlp_out,
        ):
            self.spec.features(x)
        groups = list(z0)
        for m in range(len(blocks)):
            groups += [norm_attn[2 * m], norm_attn[2 * m + 1], mlp_hidden[m], mlp_out[m]]
        if self.normalize:
            return normalize_groups(groups)
        return torch.cat(groups, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
