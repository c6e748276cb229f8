"""Image (or sequence) classification: a linear head, cross-entropy, top-1 accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import FeatureInfo, Metric, Task, register_task


class TopKAccuracy(Metric):
    """Share (in percent) of samples whose label is among the k highest logits, plus the mean
    cross-entropy. State: [loss sum, correct, count]."""

    higher_is_better = (True, False)

    def __init__(self, k: int = 1) -> None:
        self.k = k
        self.names = (f"top{k}", "loss")  # type: ignore[misc]
        self._state = torch.zeros(3, dtype=torch.float64)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        logits = output.float()
        target = target.to(logits.device)
        if self._state.device != logits.device:  # accumulate where the outputs are (no sync)
            self._state = self._state.to(logits.device)
        loss = F.cross_entropy(logits, target, reduction="sum").double()
        top = logits.topk(min(self.k, logits.shape[-1]), dim=-1).indices
        correct = (top == target.unsqueeze(-1)).any(dim=-1).sum().double()
        count = torch.tensor(float(len(target)), dtype=torch.float64, device=logits.device)
        self._state += torch.stack([loss, correct, count])

    def state(self) -> torch.Tensor:
        return self._state.clone()

    def compute(self, state: torch.Tensor | None = None) -> dict[str, float]:
        loss, correct, count = (self._state if state is None else state).tolist()
        count = max(count, 1.0)
        return {self.names[0]: 100.0 * correct / count, "loss": loss / count}


@register_task
@dataclass
class ClassificationTask(Task):
    """`num_classes`-way classification of the pooled feature by a linear head.

    Loss: cross-entropy with optional label smoothing (summed over samples). Metric: top-1 (%)
    and the mean cross-entropy (without smoothing).
    """

    num_classes: int = 0
    label_smoothing: float = 0.0

    kind: ClassVar[str] = "classification"
    features: ClassVar[str] = "pooled"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes < 1:
            raise ConfigError(f"task {self.name}: num_classes must be >= 1, got {self.num_classes}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"task {self.name}: label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )

    def build_head(self, info: FeatureInfo) -> nn.Module:
        """The backbone's own classifier when it has one (timm), else ``Linear(D, K)``."""
        if info.new_classifier is not None:
            return info.new_classifier(self.num_classes)
        return nn.Linear(info.pooled_dim, self.num_classes)

    def loss(self, output: torch.Tensor, target: Any) -> tuple[torch.Tensor, int]:
        loss = F.cross_entropy(
            output.float(), target, reduction="sum", label_smoothing=self.label_smoothing
        )
        return loss, len(target)

    def metrics(self) -> list[Metric]:
        return [TopKAccuracy(1)]

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
        }
