"""What an installer receives: the model, its backbone description and trainable bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..backbones import BackboneSpec
from ..errors import UnsupportedBackboneError


@dataclass
class InstallContext:
    """Handed to a method's installer. Installers mark what trains only through `train()`."""

    model: nn.Module
    spec: BackboneSpec
    method: str
    num_classes: int
    forward_override: nn.Module | None = None
    head: nn.Module | None = None
    trained: list[nn.Parameter] = field(default_factory=list)

    def train(self, *items: nn.Parameter | nn.Module) -> None:
        """Make these parameters (or every parameter of these modules) trainable."""
        for item in items:
            params = [item] if isinstance(item, nn.Parameter) else list(item.parameters())
            for p in params:
                p.requires_grad_(True)
                self.trained.append(p)

    def require_attention(self) -> None:
        """Raise a clear error when the backbone has no attention layers (e.g. ConvNeXt)."""
        if not self.spec.has_attention:
            raise UnsupportedBackboneError(
                f"method {self.method!r} needs attention layers; the {self.spec.family} "
                "backbone has none"
            )

    def require_family(self, *families: str) -> None:
        """Raise a clear error unless the backbone belongs to one of `families`."""
        if self.spec.family not in families:
            raise UnsupportedBackboneError(
                f"method {self.method!r} supports backbones {list(families)}; "
                f"got {self.spec.family}"
            )

    def set_forward(self, module: nn.Module, head: nn.Module) -> None:
        """Replace the model's forward by `module` (feature-extracting methods like VQT)."""
        self.forward_override = module
        self.head = head
