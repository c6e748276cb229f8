"""LoRA (Hu et al., ICLR 2022): W' = W + (α/r)·B A on chosen logical matrices.

Pinned definition (spec/baselines.md): targets q and v of every attention layer by default
(also k, proj, fc1, fc2), A kaiming-uniform, B zero (identity at init), mergeable.
`attention` chooses whose q/k/v/proj: the blocks' self-attention (default), their
cross-attention (BridgeTower fusion layers, UNet attn2) or both; "auto" is self-attention except
on a diffusers UNet, where it is both (attn1 and attn2: the usual Stable Diffusion LoRA).
Trainable count: Σ_targets r·(d_in + d_out) (over the last `last_blocks` blocks when set).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...backbones import MATRIX_ROLES, LinearSlot
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
    attention: str = option(
        "auto", "attention whose q/k/v/proj are adapted: auto, self, cross or both"
    )

    def validate(self) -> None:
        super().validate()
        self._require(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        self._require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        bad = [t for t in self.targets if t not in MATRIX_ROLES]
        self._require(not bad, f"unknown targets {bad}; choose from {list(MATRIX_ROLES)}")
        self._require(len(self.targets) > 0, "targets must not be empty")
        self._require(
            self.attention in ATTENTION_CHOICES,
            f"attention must be one of {list(ATTENTION_CHOICES)}, got {self.attention!r}",
        )


#: `attention` values; "auto" = "both" on these families, "self" elsewhere
ATTENTION_CHOICES = ("auto", "self", "cross", "both")
AUTO_BOTH = ("diffusers-unet",)
ATTENTION_ROLES = ("q", "k", "v", "proj")


def install_lora(ctx: InstallContext, cfg: LoraConfig) -> None:
    """Attach one `LoraBranch` per (adapted block, target) slot."""
    if any(t in ("q", "k", "v", "proj") for t in cfg.targets):
        ctx.require_attention()
    kinds = cfg.attention
    if kinds == "auto":
        kinds = "both" if ctx.spec.family in AUTO_BOTH else "self"
    slots: list[LinearSlot] = []
    for block in adapted_blocks(ctx, cfg.last_blocks):
        own, cross = block.matrices(), block.cross_matrices()
        for role in cfg.targets:
            if role not in ATTENTION_ROLES or kinds in ("self", "both"):
                slots.append(own[role])
            if role in ATTENTION_ROLES and kinds in ("cross", "both") and role in cross:
                slots.append(cross[role])
    if kinds == "cross" and not any(b.cross_attention for b in ctx.spec.blocks):
        raise ConfigError(
            f"lora attention='cross' but the {ctx.spec.family} backbone has no cross-attention"
        )
    for slot in slots:  # every rank check before any change
        _check_rank(cfg.rank, slot.role, slot.in_features, slot.out_features)
    for slot in slots:
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
            f"lora_{slot.role}", branch, slot.rows
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
