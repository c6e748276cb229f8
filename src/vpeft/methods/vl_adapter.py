"""VL-Adapter (Sung et al., "VL-Adapter: Parameter-Efficient Transfer Learning for
Vision-and-Language Tasks", CVPR 2022), as the APT paper compares it.

Pinned definition (docs/methods/vl_adapter.md): Houlsby-style sequential bottleneck adapters
h ↦ h + W_up σ(W_down h) on the output of every attention sub-layer (and of the cross-attention
in co-attention fusion layers) and of every MLP, before the residual add — only in the
**language and fusion** layers: every layer of single-stream ViLT (its layers are all fusion
layers), BridgeTower's text layers and fusion layers, CLIP's text tower; vision-only layers stay
untouched (Sung et al. keep the visual encoder frozen and adapter-free). Bottleneck m = d / 8
(96 at d = 768; ViLT-B/32: 12·2·(2·768·96 + 96 + 768) = 3,559,680, the APT paper's 3.56M),
σ = GELU, W_down kaiming-uniform, W_up and both biases zero: identity at init. Not mergeable.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import MethodConfig, option
from ..core.context import InstallContext
from ..core.registry import MethodInfo, register
from ..core.wrapper import AdaptedLayer
from ..errors import UnsupportedBackboneError
from .adapters.bottleneck import ACTIVATIONS, ResidualBottleneck

#: block streams that are language or fusion layers ("main": single-stream VL models)
VL_STREAMS = ("main", "text", "fusion-text", "fusion-image")


@dataclass
class VlAdapterConfig(MethodConfig):
    reduction: int = option(8, "bottleneck m = block width // reduction")
    activation: str = option("gelu", "non-linearity σ: relu, gelu or silu")
    cross_attention: bool = option(True, "also adapt the cross-attention of fusion layers")

    def validate(self) -> None:
        self._require(self.reduction >= 1, f"reduction must be >= 1, got {self.reduction}")
        self._require(
            self.activation in ACTIVATIONS,
            f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}",
        )


def install_vl_adapter(ctx: InstallContext, cfg: VlAdapterConfig) -> None:
    """Sequential adapters after attention (+ cross-attention) and MLP of the VL blocks."""
    blocks = [b for b in ctx.spec.blocks if b.stream in VL_STREAMS]
    if not blocks or not all(b.attention is not None for b in blocks):
        raise UnsupportedBackboneError(
            f"vl-adapter adapts the language / fusion layers of a vision-language model; the "
            f"{ctx.spec.family} backbone has none"
        )
    for block in blocks:
        sites = [block.attention.output_site]
        if cfg.cross_attention and block.cross_attention is not None:
            sites.append(block.cross_attention.output_site)
        sites.append(block.mlp.output)
        m = max(block.dim // cfg.reduction, 1)
        for site in sites:
            module = ctx.module(
                ResidualBottleneck, block.dim, m, cfg.activation, like=block.fc2.weight
            )
            AdaptedLayer.wrap(site.parent, site.attr).add_sequential("vl_adapter", module)
            ctx.train(module)


register(
    MethodInfo(
        name="vl-adapter",
        family="adapter",
        paper="Sung et al., VL-Adapter: Parameter-Efficient Transfer Learning for "
        "Vision-and-Language Tasks, CVPR 2022",
        mergeable=False,
        config=VlAdapterConfig,
        install=install_vl_adapter,
        summary="Houlsby adapters (m = d/8) in the language / fusion layers of a VL model",
        backbones=("hf-vilt", "hf-bridgetower", "hf-clip", "hf-clip-text"),
    )
)
