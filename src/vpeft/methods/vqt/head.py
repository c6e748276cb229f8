"""The linear head of feature-extracting methods (VQT, Head2Toe) and their feature grouping.

Features come in *groups* (VQT: the final CLS and each layer's T·D query summary; Head2Toe: each
pooled tap). Each group is L2-normalised on its own before concatenation (the VQT reference), so
no group dominates by scale. An optional column `selection` (from group lasso) keeps a subset of
the concatenated features before the linear map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError


class SelectionError(ConfigError, IndexError):
    """A feature `selection` index beyond the features (an `IndexError` too, as before)."""


#: Reference bias init: −log((1 − π)/π) with prior π = 0.01, so every logit starts at −4.595.
PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)


def normalize_groups(groups: Sequence[torch.Tensor]) -> torch.Tensor:
    """[g_1/‖g_1‖; …; g_n/‖g_n‖] — each (B, F_i) group L2-normalised, then concatenated."""
    return torch.cat([F.normalize(g.flatten(1), dim=-1) for g in groups], dim=-1)


class SelectedLinear(nn.Linear):
    """y = W x[selection] + b; `selection` None means every input feature.

    Init (VQT reference): W kaiming-normal with fan_out, b = −log(0.99/0.01).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        selection: torch.Tensor | None = None,
    ) -> None:
        width = in_features if selection is None else int(selection.numel())
        super().__init__(width, num_classes)
        self.total_features = in_features
        index = None if selection is None else torch.as_tensor(selection, dtype=torch.long)
        if index is not None and index.numel() and int(index.max()) >= in_features:
            raise SelectionError(
                f"selection refers to feature {int(index.max())}, but the head has "
                f"{in_features} features (indices 0..{in_features - 1})"
            )
        self.register_buffer("selection", index, persistent=False)

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        nn.init.constant_(self.bias, PRIOR_BIAS)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.selection is not None:
            features = features.index_select(-1, self.selection)
        return super().forward(features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, of_features={self.total_features}"

    @torch.no_grad()
    def load_selection(
        self, selection: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor
    ) -> None:
        """Switch to the columns `selection` with a trained (C, |selection|) `weight` and `bias`.

        Changes this module in place (same object, same parameter names), so references held
        elsewhere — e.g. `PeftModel.head` — stay valid.
        """
        index = None if selection is None else torch.as_tensor(selection, dtype=torch.long)
        width = self.total_features if index is None else int(index.numel())
        if tuple(weight.shape) != (self.out_features, width) or bias.shape != (self.out_features,):
            raise ValueError(
                f"head of shape {tuple(weight.shape)} / {tuple(bias.shape)} does not fit "
                f"{self.out_features} classes and {width} selected features"
            )
        device, dtype = self.weight.device, self.weight.dtype
        trains = self.weight.requires_grad
        self.weight = nn.Parameter(weight.detach().to(device, dtype).clone(), requires_grad=trains)
        self.bias = nn.Parameter(bias.detach().to(device, dtype).clone(), requires_grad=trains)
        self.in_features = width
        self.selection = None if index is None else index.to(device)
