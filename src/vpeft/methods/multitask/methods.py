"""The non-hypernetwork baselines of Polyhistor's dense multi-task benchmark (Liu et al.,
NeurIPS 2022, Table 1), as pinned in spec/polyhistor.md. Single-task methods are installed one
copy per task on a multi-task model (the default of `vpeft.apply`); `shared-adapter` is one copy
for all tasks.

- `relative-bias`: Swin's relative-position-bias tables train (Σ_blocks (2w−1)²·heads).
- `lora-qkv`: LoRA on the *fused* qkv projection, one rank-r update ``ΔW = s·B A`` (A r×d,
  B 3d×r, no bias) fed through a LayerNorm(d): ``qkv(x) + s·B A LN(x)``; r = 4, s = 4.
  Per block ``r·(d + 3d) + 2d`` = 18d at r = 4. (`lora` adapts q and v separately: a different
  method.)
- `adapter-ln`: one `PostNormAdapter` after every block's MLP, ``h + LN(W_up σ(W_down h))``
  with biases, n = ⌊d/λ⌋ (``reduction`` = λ, default 2). Per block ``2dn + n + 3d``.
- `low-rank-adapter`: the same unit with W_down and W_up each a product of rank
  r = max(⌊n/ρ⌋, 1) factors (λ = 16, ρ = 4). Per block ``2r(d + n) + n + 3d``.
- `shared-adapter`: `adapter-ln` installed once for all tasks, plus every backbone LayerNorm
  trained (as VL-Adapter's shared adapter does) and one set of stage-output norms for all dense
  tasks.

On a dense model the final norm of Swin is never run (the decoders read the raw stage outputs),
so no method trains or counts it (`BackboneSpec.unused_by_taps`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...backbones import BlockSpec
from ...core.block_choice import LastBlocksConfig, adapted_blocks
from ...core.config import option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...core.wrapper import AdaptedLayer
from ...errors import UnsupportedBackboneError
from ..adapters.bottleneck import ACTIVATIONS
from ..selective import NoOptions
from .layers import NormedLoraBranch, PostNormAdapter

PAPER = (
    "Liu et al., Polyhistor: Parameter-Efficient Multi-Task Adaptation for Dense Vision Tasks, "
    "NeurIPS 2022 (baselines of Table 1)"
)


# -- relative-bias ---------------------------------------------------------------------------
def install_relative_bias(ctx: InstallContext, cfg: NoOptions) -> None:
    """Train the relative-position-bias table of every (Swin) attention layer."""
    tables = ctx.spec.relative_position_tables
    if not tables:
        raise UnsupportedBackboneError(
            f"relative-bias trains relative-position-bias tables; the {ctx.spec.family} "
            "backbone has none (Swin has them)"
        )
    ctx.train(*tables)


# -- lora-qkv --------------------------------------------------------------------------------
@dataclass
class LoraQkvConfig(LastBlocksConfig):
    rank: int = option(4, "rank r of the update B·A on the fused qkv projection")
    scale: float = option(4.0, "output scale s of the branch (the paper's LoRA: 4)")
    input_norm: bool = option(True, "LayerNorm(d) on the branch input (the paper's LoRA)")
    dropout: float = option(0.0, "dropout on the branch input")

    def validate(self) -> None:
        super().validate()
        self._require(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        self._require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")


def _fused_qkv(ctx: InstallContext, block: BlockSpec) -> tuple[object, str, int, int]:
    """(parent, attr, d_in, d_out) of the block's fused qkv layer; a clear error otherwise."""
    a = block.attention
    assert a is not None
    fused = a.q.parent is a.k.parent is a.v.parent and a.q.attr == a.k.attr == a.v.attr
    if not fused or a.q.rows is None:
        raise UnsupportedBackboneError(
            f"lora-qkv adapts one fused qkv projection; the {ctx.spec.family} backbone projects "
            "q, k and v separately (use lora with targets=q,k,v)"
        )
    return a.q.parent, a.q.attr, a.q.in_features, a.q.linear.out_features


def install_lora_qkv(ctx: InstallContext, cfg: LoraQkvConfig) -> None:
    """One `NormedLoraBranch` (or plain `LoraBranch`) on every adapted block's fused qkv."""
    from ..lora.layer import LoraBranch

    ctx.require_attention()
    for block in adapted_blocks(ctx, cfg.last_blocks):
        parent, attr, d_in, d_out = _fused_qkv(ctx, block)
        build = NormedLoraBranch if cfg.input_norm else LoraBranch
        ref = block.attention.q.weight  # type: ignore[union-attr]
        branch = ctx.module(
            build, d_in, d_out, cfg.rank, scale=cfg.scale, dropout=cfg.dropout, like=ref
        )
        AdaptedLayer.wrap(parent, attr).add_parallel("lora_qkv", branch)  # type: ignore[arg-type]
        ctx.train(branch)


# -- adapters with a post-LayerNorm ----------------------------------------------------------
@dataclass
class AdapterLnConfig(LastBlocksConfig):
    reduction: int = option(2, "down-projection ratio λ: bottleneck n = floor(d / λ)")
    activation: str = option("gelu", "non-linearity σ: relu, gelu or silu")

    def validate(self) -> None:
        super().validate()
        self._require(self.reduction >= 1, f"reduction must be >= 1, got {self.reduction}")
        self._require(
            self.activation in ACTIVATIONS,
            f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}",
        )

    def width(self, dim: int) -> int:
        n = dim // self.reduction
        self._require(n >= 1, f"reduction={self.reduction} leaves no unit at width {dim}")
        return n

    def rank(self, bottleneck: int) -> int:
        """Rank of the projections (0: full matrices)."""
        return 0


@dataclass
class LowRankAdapterConfig(AdapterLnConfig):
    reduction: int = option(16, "down-projection ratio λ: bottleneck n = floor(d / λ)")
    rank_divisor: int = option(4, "ρ: each projection has rank r = max(floor(n / ρ), 1)")

    def validate(self) -> None:
        super().validate()
        self._require(self.rank_divisor >= 1, f"rank_divisor must be >= 1, got {self.rank_divisor}")

    def rank(self, bottleneck: int) -> int:
        return max(bottleneck // self.rank_divisor, 1)


@dataclass
class SharedAdapterConfig(AdapterLnConfig):
    train_norms: bool = option(True, "also train every LayerNorm of the backbone (VL-Adapter)")


def _install_post_norm_adapters(ctx: InstallContext, cfg: AdapterLnConfig) -> None:
    for block in adapted_blocks(ctx, cfg.last_blocks):
        n = cfg.width(block.dim)
        module = ctx.module(
            PostNormAdapter, block.dim, n, cfg.activation, cfg.rank(n), like=block.fc2.weight
        )
        AdaptedLayer.wrap(block.mlp_parent, block.mlp_attr).add_sequential("adapter_ln", module)
        ctx.train(module)


def install_adapter_ln(ctx: InstallContext, cfg: AdapterLnConfig) -> None:
    """`adapter-ln` / `low-rank-adapter`: one post-norm adapter after every block's MLP."""
    _install_post_norm_adapters(ctx, cfg)


def install_shared_adapter(ctx: InstallContext, cfg: SharedAdapterConfig) -> None:
    """One adapter set for every task, the backbone's LayerNorms, one set of stage norms."""
    ctx.per_task = False  # one copy for all tasks, whatever `shared` says
    ctx.share_stage_norms()
    _install_post_norm_adapters(ctx, cfg)
    if cfg.train_norms:
        ctx.train(*ctx.spec.norm_modules())


for _name, _family, _merge, _config, _install, _summary in (
    (
        "relative-bias",
        "selective",
        True,
        NoOptions,
        install_relative_bias,
        "Swin relative-position-bias tables",
    ),
    (
        "lora-qkv",
        "reparameterization",
        False,
        LoraQkvConfig,
        install_lora_qkv,
        "rank-4 update (scale 4) on the fused qkv, LayerNorm on the branch input",
    ),
    (
        "adapter-ln",
        "adapter",
        False,
        AdapterLnConfig,
        install_adapter_ln,
        "adapter h + LN(W_up σ(W_down h)) after every MLP, n = d/λ (λ=2)",
    ),
    (
        "low-rank-adapter",
        "adapter",
        False,
        LowRankAdapterConfig,
        install_adapter_ln,
        "adapter-ln with rank-max(n/4,1) factorised projections, λ=16",
    ),
    (
        "shared-adapter",
        "adapter",
        False,
        SharedAdapterConfig,
        install_shared_adapter,
        "one adapter-ln set for all tasks + all backbone LayerNorms",
    ),
):
    register(
        MethodInfo(
            name=_name,
            family=_family,
            paper=PAPER,
            mergeable=_merge,
            config=_config,
            install=_install,
            summary=_summary,
            backbones=("swin",) if _name == "relative-bias" else None,
        )
    )
