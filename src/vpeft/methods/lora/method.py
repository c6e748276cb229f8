"""LoRA (Hu et al., ICLR 2022): W' = W + (α/r)·B A on chosen logical matrices.

Pinned definition (spec/baselines.md): targets q and v of every attention layer by default
(also k, proj, fc1, fc2), A kaiming-uniform, B zero (identity at init), mergeable.
Trainable count: Σ_targets r·(d_in + d_out) (over the last `last_blocks` blocks when set).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...backbones import MATRIX_ROLES
from ...core.block_choice import LastBlocksConfig, adapted_blocks
from ...core.config import option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...core.wrapper import AdaptedLayer
from ...errors import ConfigError
from .layer import LoraBranch


@dataclass
class LoraConfig(LastBlocksConfig):
    rank: int = option(8, "rank r of the update B·A")
    alpha: float = option(8.0, "scaling numerator: the update is multiplied by alpha / rank")
    targets: tuple[str, ...] = option(("q", "v"), "matrices to adapt: any of q,k,v,proj,fc1,fc2")
    dropout: float = option(0.0, "dropout on the LoRA branch input")

    def validate(self) -> None:
        super().validate()
        self._require(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        self._require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        bad = [t for t in self.targets if t not in MATRIX_ROLES]
        self._require(not bad, f"unknown targets {bad}; choose from {list(MATRIX_ROLES)}")
        self._require(len(self.targets) > 0, "targets must not be empty")


def install_lora(ctx: InstallContext, cfg: LoraConfig) -> None:
    """Attach one `LoraBranch` per (adapted block, target) slot."""
    if any(t in ("q", "k", "v", "proj") for t in cfg.targets):
        ctx.require_attention()
    for block in adapted_blocks(ctx, cfg.last_blocks):
        slots = block.matrices()
        for role in cfg.targets:
            slot = slots[role]
            _check_rank(cfg.rank, role, slot.in_features, slot.out_features)
            branch = ctx.module(
                LoraBranch,
                slot.in_features,
                slot.out_features,
                cfg.rank,
                scale=cfg.alpha / cfg.rank,
                dropout=cfg.dropout,
                like=slot.weight,
            )
            AdaptedLayer.wrap(slot.parent, slot.attr).add_parallel(
                f"lora_{role}", branch, slot.rows
            )
            ctx.train(branch)


def _check_rank(rank: int, role: str, d_in: int, d_out: int) -> None:
    """A rank above min(d_in, d_out) only adds parameters: B·A is then full-rank already."""
    if rank > min(d_in, d_out):
        raise ConfigError(
            f"lora rank {rank} is larger than min(d_in, d_out) = {min(d_in, d_out)} of the "
            f"{role} matrix ({d_out} x {d_in}); use rank <= {min(d_in, d_out)}"
        )


register(
    MethodInfo(
        name="lora",
        family="reparameterization",
        paper="Hu et al., LoRA: Low-Rank Adaptation of Large Language Models, ICLR 2022",
        mergeable=True,
        config=LoraConfig,
        install=install_lora,
        summary="low-rank update B·A·(alpha/r) on attention q and v (configurable)",
    )
)
