"""Bottleneck adapters: Houlsby, Pfeiffer, AdaptFormer and the scaled parallel adapter.

All four insert Δ(h) = s · W_up σ(W_down h + b_down) + s · b_up (`bottleneck.py`; W_down
kaiming-uniform, W_up and both biases zero, so every method is the identity at init) and differ
only in *placement*, given by a `Placement` (which sub-layers, sequential or parallel):

- `adapter` (Houlsby et al., ICML 2019, Fig. 2): sequential, after attention and after the MLP,
  on the sub-layer output before the residual add: h ↦ h + Δ(h). σ = GELU, m = 8, s = 1.
- `adapter-pfeiffer` (Pfeiffer et al., EACL 2021): one sequential adapter after the MLP only.
  σ = ReLU, m = 8, s = 1.
- `adaptformer` (Chen et al., NeurIPS 2022): parallel to the MLP, fed the MLP input x̃
  (the LN2 output): MLP(x̃) + s · Δ(x̃). σ = ReLU, m = 64, s = 0.1, dropout 0.1 on the
  bottleneck activation (the authors' released block).
- `scaled-pa` (He et al., ICLR 2022; parallel adapter with fixed scale): the same parallel
  form with s = 4, σ = ReLU, m = 96. He et al. report NLP only; 96 = 768 / 8 is the width that
  reproduces the Scaled-PA budget of the vision-language comparison in APT (Liu et al. 2024,
  ViLT-B/32: 12 · (2·768·96 + 96 + 768) = 1.78M vs the reported 1.80M).

Trainable encoder parameters: Σ_blocks n_sites · (2·d·m + m + d), n_sites = 2 for `adapter`,
1 otherwise; d = block width, m = `bottleneck` or d // `reduction`.
On ConvNeXt (no attention) the MLP-only methods apply (its MLP is a Linear pair on NHWC);
Houlsby's `adapter` raises `UnsupportedBackboneError`.

Sites come from the backbone description, so the placement is the paper's on every family:
the attention site is `AttentionSpec.output_site` (timm: the attention module; transformers:
the output projection, before dropout and the residual add); the MLP output is
`MlpSpec.output` and a parallel branch is fed `MlpSpec.input`'s input — directly when the MLP is
one module, through `core.taps` when it is split (ViLT, BridgeTower: `intermediate` → `output`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ...backbones import BlockSpec, ModuleSite
from ...core.block_choice import LastBlocksConfig, adapted_blocks
from ...core.config import option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...core.taps import InputTap, TappedBranch
from ...core.wrapper import AdaptedLayer
from ...errors import UnsupportedBackboneError
from .bottleneck import ACTIVATIONS, Bottleneck, ResidualBottleneck

Site = Literal["attention", "mlp"]

#: where each site's output (before the residual add) is produced in a block.
SITES: dict[str, Callable[[BlockSpec], ModuleSite]] = {
    "attention": lambda b: b.attention.output_site,  # type: ignore[union-attr]
    "mlp": lambda b: b.mlp.output,
}


def _fed_input(block: BlockSpec, site: str, branch: nn.Module) -> nn.Module:
    """A parallel branch for `site`, fed the sub-layer's input: as is when one module is the
    whole sub-layer, else through an `InputTap` on the MLP's input module."""
    if site != "mlp" or block.mlp.single:
        return branch
    tap = InputTap.wrap(block.mlp.input.parent, block.mlp.input.attr)
    return TappedBranch(branch, tap)


@dataclass
class AdapterConfig(LastBlocksConfig):
    """Options shared by the sequential (Houlsby / Pfeiffer) bottleneck adapters."""

    bottleneck: int = option(8, "bottleneck width m of every adapter")
    reduction: int = option(
        0, "if > 0, m = block width // reduction per block (overrides bottleneck)"
    )
    activation: str = option("gelu", "non-linearity σ: relu, gelu or silu")
    dropout: float = option(0.0, "dropout on the bottleneck activation (training only)")

    def validate(self) -> None:
        super().validate()
        self._require(self.bottleneck >= 1, f"bottleneck must be >= 1, got {self.bottleneck}")
        self._require(self.reduction >= 0, f"reduction must be >= 0, got {self.reduction}")
        self._require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        self._require(
            self.activation in ACTIVATIONS,
            f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}",
        )

    def width(self, dim: int) -> int:
        """Bottleneck width m for a block of width `dim`."""
        if self.reduction <= 0:
            return self.bottleneck
        m = dim // self.reduction
        self._require(
            m >= 1,
            f"reduction={self.reduction} leaves no bottleneck unit on a block of width {dim}; "
            f"use reduction <= {dim}",
        )
        return m

    def branch_scale(self) -> float:
        """The factor s on Δ (1 for sequential adapters)."""
        return 1.0


@dataclass
class PfeifferConfig(AdapterConfig):
    activation: str = option("relu", "non-linearity σ: relu, gelu or silu")


@dataclass
class ParallelAdapterConfig(AdapterConfig):
    """AdaptFormer options (the scaled parallel adapter overrides the defaults)."""

    bottleneck: int = option(64, "bottleneck width m of every adapter")
    activation: str = option("relu", "non-linearity σ: relu, gelu or silu")
    dropout: float = option(0.1, "dropout on the bottleneck activation (training only)")
    scale: float = option(0.1, "fixed scale s on the parallel branch (> 0)")

    def validate(self) -> None:
        super().validate()
        self._require(self.scale > 0, f"scale must be > 0, got {self.scale}")

    def branch_scale(self) -> float:
        return self.scale


@dataclass
class ScaledPAConfig(ParallelAdapterConfig):
    bottleneck: int = option(96, "bottleneck width m of every adapter")
    dropout: float = option(0.0, "dropout on the bottleneck activation (training only)")
    scale: float = option(4.0, "fixed scale s on the parallel branch (> 0)")


@dataclass(frozen=True)
class Placement:
    """Where a bottleneck method inserts its adapters in every block."""

    sites: tuple[Site, ...]
    parallel: bool  # True: beside the sub-layer, fed its input; False: after it, on its output
    key: str  # name of the piece inside the wrapper (and in parameter names)


def bottleneck_installer(placement: Placement) -> Callable[[InstallContext, AdapterConfig], None]:
    """The installer of a bottleneck-adapter method with this `placement`."""
    kind = Bottleneck if placement.parallel else ResidualBottleneck

    def install(ctx: InstallContext, cfg: AdapterConfig) -> None:
        if "attention" in placement.sites and not ctx.spec.has_attention:
            raise UnsupportedBackboneError(
                f"method {ctx.method!r} places an adapter after every attention layer; the "
                f"{ctx.spec.family} backbone has none. Use adapter-pfeiffer, adaptformer or "
                "scaled-pa, which adapt the MLP only"
            )
        for block in adapted_blocks(ctx, cfg.last_blocks):
            width, ref = cfg.width(block.dim), block.fc2.weight
            for site in placement.sites:
                where = SITES[site](block)
                module = ctx.module(
                    kind,
                    block.dim,
                    width,
                    cfg.activation,
                    cfg.branch_scale(),
                    cfg.dropout,
                    like=ref,
                )
                wrapper = AdaptedLayer.wrap(where.parent, where.attr)
                if placement.parallel:
                    wrapper.add_parallel(placement.key, _fed_input(block, site, module))
                else:
                    wrapper.add_sequential(placement.key, module)
                ctx.train(module)

    return install


_METHODS: tuple[tuple[str, type[AdapterConfig], Placement, str, str], ...] = (
    (
        "adapter",
        AdapterConfig,
        Placement(("attention", "mlp"), parallel=False, key="adapter"),
        "Houlsby et al., Parameter-Efficient Transfer Learning for NLP, ICML 2019",
        "sequential bottleneck h + W_up σ(W_down h) after attention and after the MLP",
    ),
    (
        "adapter-pfeiffer",
        PfeifferConfig,
        Placement(("mlp",), parallel=False, key="adapter"),
        "Pfeiffer et al., AdapterFusion: Non-Destructive Task Composition, EACL 2021",
        "one sequential bottleneck adapter after the MLP",
    ),
    (
        "adaptformer",
        ParallelAdapterConfig,
        Placement(("mlp",), parallel=True, key="adaptformer"),
        "Chen et al., AdaptFormer: Adapting Vision Transformers for Scalable Visual "
        "Recognition, NeurIPS 2022",
        "parallel bottleneck beside the MLP, scaled by s=0.1, m=64",
    ),
    (
        "scaled-pa",
        ScaledPAConfig,
        Placement(("mlp",), parallel=True, key="scaled_pa"),
        "He et al., Towards a Unified View of Parameter-Efficient Transfer Learning, ICLR 2022",
        "scaled parallel adapter beside the MLP, s=4, m=96",
    ),
)

for _name, _config, _placement, _paper, _summary in _METHODS:
    register(
        MethodInfo(
            name=_name,
            family="adapter",
            paper=_paper,
            mergeable=False,
            config=_config,
            install=bottleneck_installer(_placement),
            summary=_summary,
        )
    )
