"""Which blocks a block-wise method adapts: every block, or only the last N.

Adapting only the last N blocks is the low-memory regime of VQT (Tu et al., CVPR 2023, Fig. 3b):
nothing before the first adapted block needs gradients, so autograd keeps no activations there.
HF PEFT exposes the same idea as ``layers_to_transform``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backbones import BlockSpec
from ..errors import ConfigError
from .config import MethodConfig, option
from .context import InstallContext


@dataclass
class LastBlocksConfig(MethodConfig):
    """A method config with the `last_blocks` option."""

    last_blocks: int = option(
        0, "adapt only the last N blocks (0: every block); the low-memory regime of VQT Fig. 3b"
    )

    def validate(self) -> None:
        self._require(self.last_blocks >= 0, f"last_blocks must be >= 0, got {self.last_blocks}")


def adapted_blocks(ctx: InstallContext, last_blocks: int) -> list[BlockSpec]:
    """The blocks to adapt, in model order: all of them, or the last `last_blocks`."""
    blocks = list(ctx.spec.blocks)
    if last_blocks > len(blocks):
        raise ConfigError(
            f"last_blocks={last_blocks} but this {ctx.spec.family} backbone has {len(blocks)} "
            f"blocks; use 0 (every block) up to {len(blocks)}"
        )
    return blocks[len(blocks) - last_blocks :] if last_blocks else blocks


def first_adapted_block(ctx: InstallContext, last_blocks: int) -> int:
    """Index (in `spec.blocks`) of the first block `adapted_blocks` returns."""
    return len(ctx.spec.blocks) - len(adapted_blocks(ctx, last_blocks))
