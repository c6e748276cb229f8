"""`BackboneWithHead`: a headless backbone (e.g. a transformers model) plus a task head.

timm models carry their own classifier (`get_classifier` / `reset_classifier`); transformers
base models (`ViTModel`, `CLIPVisionModel`, `ViltModel`, ...) have none. This wrapper gives them
the same small classifier API on top of the backbone's pooled feature (`BackboneSpec.pool`),
so `vpeft.apply` treats both alike. It wraps the user's model object; it copies nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .spec import Pool


class BackboneWithHead(nn.Module):
    """``head(pool(backbone, inputs))``; the head starts as `nn.Identity` (features out)."""

    def __init__(self, backbone: nn.Module, pool: Pool, num_features: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = pool
        self.num_features = num_features
        self.num_classes = 0
        self.head: nn.Module = nn.Identity()

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm-style metadata: the wrapped class is the architecture, the head is `head`, the
        input size is the configured image size (when the model takes images)."""
        out: dict[str, Any] = {"architecture": type(self.backbone).__name__, "classifier": "head"}
        config = getattr(self.backbone, "config", None)
        vision = getattr(config, "vision_config", None) or config
        if hasattr(vision, "image_size") and hasattr(vision, "num_channels"):
            out["input_size"] = (vision.num_channels, vision.image_size, vision.image_size)
        return out

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """A new linear head (`nn.Identity` for 0), on the backbone's device and dtype."""
        ref = next(self.backbone.parameters())
        self.num_classes = num_classes
        self.head = (
            nn.Linear(self.num_features, num_classes).to(ref.device, ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.head(self.pool(self.backbone, inputs))
