"""Kronecker (hypercomplex) adapters: `phm`, `compacter`, `compacter++`.

Each inserts ``h + LN(up(σ(down(h))))`` (`layers.PHMAdapter`) on a sub-layer output, its down
(d → n, n = d // λ) and up (n → d) projections PHM layers ``W = Σ_i A_i ⊗ B_i`` with
hypercomplex dimension p, one p×p×p rule A per task shared by all layers and both projections,
biases, and a per-task LayerNorm(d) on the branch (Polyhistor's table counts it).

- ``phm`` (PHM layer; Zhang et al. ICLR 2021, as an adapter in Compacter's comparison):
  full fast matrices B_i, λ = 16, p = 2, after the MLP (the placement that reproduces
  Polyhistor's 0.59M; ``sites=attention,mlp`` adds one after attention).
- ``compacter`` (Mahabadi et al., NeurIPS 2021): B_i = s_i t_iᵀ (rank one), λ = 2, p = 2, after
  attention and after the MLP.
- ``compacter++``: the same, after the MLP only.

Trainable parameters per adapter: 2·(d·n)/p (PHM) or 2·(d + n)·rank (Compacter) fast weights,
n + d biases, 2d LayerNorm; plus p³ per task. Single-task methods: on a multi-task model they are
installed once per task (×T) unless ``shared=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.block_choice import LastBlocksConfig, adapted_blocks
from ...core.config import option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...core.wrapper import AdaptedLayer
from ...errors import ConfigError, UnsupportedBackboneError
from ..adapters.bottleneck import ACTIVATIONS
from ..adapters.method import SITES
from .layers import PHMAdapter, PHMRule

#: attribute of the backbone that holds the PHM rule(s)
RULE_ATTR = "vpeft_phm_rule"


@dataclass
class PHMConfig(LastBlocksConfig):
    """Options of `phm`."""

    reduction: int = option(16, "down-projection ratio λ: bottleneck n = d // λ")
    hypercomplex: int = option(2, "hypercomplex dimension p (divides d and n)")
    rank: int = option(0, "rank of each fast matrix B_i (0: full matrices, PHM)")
    sites: tuple[str, ...] = option(("mlp",), "where adapters go in every block: attention/mlp")
    activation: str = option("gelu", "adapter non-linearity σ: relu, gelu or silu")

    def validate(self) -> None:
        super().validate()
        self._require(self.reduction >= 1, f"reduction must be >= 1, got {self.reduction}")
        self._require(self.hypercomplex >= 1, f"hypercomplex must be >= 1, got {self.hypercomplex}")
        self._require(self.rank >= 0, f"rank must be >= 0, got {self.rank}")
        unknown = sorted(set(self.sites) - set(SITES))
        self._require(
            bool(self.sites) and not unknown and len(set(self.sites)) == len(self.sites),
            f"sites must be distinct names among {sorted(SITES)}, got {list(self.sites)}",
        )
        self._require(
            self.activation in ACTIVATIONS,
            f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}",
        )

    def bottleneck(self, dim: int) -> int:
        n, p = dim // self.reduction, self.hypercomplex
        if n < 1 or dim % p or n % p:
            raise ConfigError(
                f"{type(self).__name__}: hypercomplex p={p} must divide the width {dim} and the "
                f"bottleneck {n} (= {dim} // reduction {self.reduction}); choose another p or λ"
            )
        return n


@dataclass
class CompacterConfig(PHMConfig):
    """Options of `compacter` (rank-one fast matrices, attention + MLP)."""

    reduction: int = option(2, "down-projection ratio λ: bottleneck n = d // λ")
    rank: int = option(1, "rank of each fast matrix B_i (0: full matrices, PHM)")
    sites: tuple[str, ...] = option(
        ("attention", "mlp"), "where adapters go in every block: attention/mlp"
    )


@dataclass
class CompacterPPConfig(CompacterConfig):
    """Options of `compacter++` (rank-one fast matrices, MLP only)."""

    sites: tuple[str, ...] = option(("mlp",), "where adapters go in every block: attention/mlp")


def install_phm(ctx: InstallContext, cfg: PHMConfig) -> None:
    """One rule per task (on the backbone), one PHM adapter per site of every adapted block."""
    if "attention" in cfg.sites and not ctx.spec.has_attention:
        raise UnsupportedBackboneError(
            f"method {ctx.method!r} with sites={list(cfg.sites)} places adapters after "
            f"attention; the {ctx.spec.family} backbone has none: use sites=mlp"
        )
    blocks = adapted_blocks(ctx, cfg.last_blocks)
    ref = blocks[0].fc2.weight
    rule = ctx.module(PHMRule, cfg.hypercomplex, like=ref)
    name, i = RULE_ATTR, 1
    while hasattr(ctx.model, name):
        i += 1
        name = f"{RULE_ATTR}_{i}"
    ctx.model.add_module(name, rule)
    ctx.train(rule)
    rank = cfg.rank or None
    piece = ctx.method.replace("+", "p")
    for block in blocks:
        n = cfg.bottleneck(block.dim)
        for site in cfg.sites:
            module = ctx.module(
                PHMAdapter, block.dim, n, cfg.hypercomplex, rank, cfg.activation, rule, like=ref
            )
            where = SITES[site](block)
            AdaptedLayer.wrap(where.parent, where.attr).add_sequential(piece, module)
            ctx.train(module)


_COMPACTER = (
    "Mahabadi et al., Compacter: Efficient Low-Rank Hypercomplex Adapter Layers, NeurIPS 2021"
)
for _name, _config, _paper, _summary in (
    (
        "phm",
        PHMConfig,
        "Zhang et al., Beyond Fully-Connected Layers with Quaternions: Parameterization of "
        "Hypercomplex Multiplications with 1/n Parameters, ICLR 2021",
        "adapter with PHM projections W = Σ A_i ⊗ B_i (shared rule A), after the MLP",
    ),
    (
        "compacter",
        CompacterConfig,
        _COMPACTER,
        "PHM adapter with rank-one fast matrices, after attention and MLP",
    ),
    ("compacter++", CompacterPPConfig, _COMPACTER, "Compacter after the MLP only"),
):
    register(
        MethodInfo(
            name=_name,
            family="adapter",
            paper=_paper,
            mergeable=False,
            config=_config,
            install=install_phm,
            summary=_summary,
        )
    )
