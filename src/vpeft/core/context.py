"""What an installer receives: the model, its backbone description and trainable bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..backbones import BackboneSpec
from ..errors import UnsupportedBackboneError

#: Parameter attribute read by the optimiser's weight-decay rule (`vpeft.train.optim`).
NO_DECAY_ATTR = "_vpeft_no_decay"


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

    def train(self, *items: nn.Parameter | nn.Module, weight_decay: bool | None = None) -> None:
        """Make these parameters (or every parameter of these modules) trainable.

        ``weight_decay=False`` tags them so the optimiser never decays them (prompts, query
        tokens, sparse deltas), ``True`` forces decay; ``None`` leaves the structural rule of
        `vpeft.train.optim` (no decay on 1-D, norm and token-embedding tensors).
        """
        for item in items:
            params = [item] if isinstance(item, nn.Parameter) else list(item.parameters())
            for p in params:
                p.requires_grad_(True)
                if weight_decay is not None:
                    setattr(p, NO_DECAY_ATTR, not weight_decay)
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
        """Replace the model's forward by `module` (feature-extracting methods like VQT).

        `head` must be a submodule of `module`: its parameters are named once, under the
        module; `PeftModel.head` keeps a plain reference to it.
        """
        if not any(m is head for m in module.modules()):
            raise ValueError("set_forward: the head must be a submodule of the forward module")
        self.forward_override = module
        self.head = head
