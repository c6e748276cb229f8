"""SSF (Lian et al., Scaling & Shifting Your Features, NeurIPS 2022): y ↦ γ ⊙ y + β.

A learnable per-channel scale γ and shift β follow every `nn.Linear` (ViT qkv, proj, fc1, fc2;
PVT-v2 q and kv; Swin patch-merging reduction), every `nn.LayerNorm` (block norms, final norms,
patch-embedding / downsampling norms, incl. timm's NCHW `LayerNorm2d`) and the patch-embedding
convolution of the backbone (the task head excluded). With `convs="all"` every other `Conv2d`
(ConvNeXt depthwise and downsampling convs, PVT-v2 spatial-reduction, depthwise and
downsampling convs) gets one too.

Init: exact identity by default (γ = 1, β = 0). The paper draws γ ~ N(1, 0.02²),
β ~ N(0, 0.02²); `init_std=0.02` reproduces that (then the model is not the identity at init).
Mergeable (re-parameterisation): W' = γ ⊙ W, b' = γ ⊙ b + β folds into the preceding layer, so
the merged model is the plain timm model with the same outputs and no extra inference cost.

Trainable encoder parameters: 2 · Σ_targets C_out (ViT-B/16: 2 · 768 · (1 + 12·11 + 1) = 205,824).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ...core.config import MethodConfig, option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...core.wrapper import AdaptedLayer
from .residual import ResidualLink
from .scale_shift import ScaleShift, channel_layout


@dataclass
class SsfConfig(MethodConfig):
    init_std: float = option(
        0.0, "0: γ=1, β=0 (identity); > 0: γ~N(1, std²), β~N(0, std²) (paper: 0.02)"
    )
    convs: Literal["patch_embed", "all"] = option(
        "patch_embed", "which Conv2d layers get SSF: the patch embedding only, or all"
    )
    residual_links: bool = option(
        True,
        "recover the attention-projection and fc2 SSF outputs from the residual sums the "
        "norms keep (less activation memory, same gradients to rounding); false: keep them",
    )

    def validate(self) -> None:
        self._require(self.init_std >= 0, f"init_std must be >= 0, got {self.init_std}")
        self._require(
            self.convs in ("patch_embed", "all"),
            f"convs must be 'patch_embed' or 'all', got {self.convs!r}",
        )


def _innermost(module: nn.Module) -> nn.Module:
    while isinstance(module, AdaptedLayer):
        module = module.base
    return module


def _positions(root: nn.Module, skip: set[int]) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) of every layer under `root`, looking through vpeft wrappers.

    A wrapped layer is reported at the wrapper's position (so SSF follows the adapted output);
    the trainable pieces inside a wrapper are never entered.
    """
    for name, child in root.named_children():
        if id(child) in skip:
            continue
        layer = _innermost(child)
        yield root, name, layer
        yield from _positions(layer, skip)


def ssf_targets(ctx: InstallContext, convs: str) -> list[tuple[nn.Module, str, nn.Module]]:
    """Positions SSF follows: Linear, LayerNorm, and the patch-embedding (or every) Conv2d."""
    head = ctx.spec.excluded_modules()
    patch_convs = [m for m in ctx.spec.patch_embed.modules() if isinstance(m, nn.Conv2d)]
    patch_conv = patch_convs[0] if patch_convs else None

    def wanted(layer: nn.Module) -> bool:
        if isinstance(layer, nn.Conv2d):
            return convs == "all" or layer is patch_conv
        return isinstance(layer, nn.Linear | nn.LayerNorm)

    targets, seen = [], set()
    for parent, attr, layer in _positions(ctx.model, head):
        if wanted(layer) and id(layer) not in seen:  # a layer reachable twice gets one SSF
            seen.add(id(layer))
            targets.append((parent, attr, layer))
    return targets


def install_ssf(ctx: InstallContext, cfg: SsfConfig) -> None:
    """Attach one `ScaleShift` after each target layer (sequential, so it merges)."""
    installed: dict[int, tuple[AdaptedLayer, nn.Module]] = {}
    for parent, attr, layer in ssf_targets(ctx, cfg.convs):
        channels, trailing = channel_layout(layer)
        ref = layer.weight
        module = ctx.module(ScaleShift, channels, trailing, cfg.init_std, like=ref)
        wrapper = AdaptedLayer.wrap(parent, attr)
        wrapper.add_sequential("ssf", module)
        ctx.train(module)
        installed[id(layer)] = (wrapper, module)
    if cfg.residual_links:
        link_residual_branches(ctx, installed)


def link_residual_branches(
    ctx: InstallContext, installed: dict[int, tuple[AdaptedLayer, nn.Module]]
) -> int:
    """Tie the SSF modules of every `plain_residual` block with `ResidualLink`s, so the
    attention projection's and fc2's scale-and-shift keep no output of their own (see
    `vpeft.methods.ssf.residual`). A link needs plain `ScaleShift`s (not per-task copies) on
    the LayerNorms before and after the branch, and on the branch's last linear layer.
    Returns the number of links."""

    def ssf_of(layer: nn.Module | None) -> ScaleShift | None:
        entry = installed.get(id(_innermost(layer))) if layer is not None else None
        return entry[1] if entry is not None and type(entry[1]) is ScaleShift else None

    def norm_ssf(layer: nn.Module | None) -> ScaleShift | None:
        module = ssf_of(layer)
        plain_norm = isinstance(_innermost(layer), nn.LayerNorm) and module is not None
        return module if plain_norm and module.trailing == 0 else None

    def wrapper_of(module: ScaleShift) -> AdaptedLayer:
        return next(w for w, m in installed.values() if m is module)

    blocks = ctx.spec.blocks
    exit_site = ctx.spec.tokens.exit if ctx.spec.tokens is not None else None
    final = None
    if exit_site is not None and not ctx.spec.tokens.exit_after:
        final = _innermost(exit_site.module)
    links = 0
    for i, block in enumerate(blocks):
        if not block.plain_residual or block.attention is None or len(block.norms) != 2:
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        if following is None:
            after_mlp = norm_ssf(final)
        elif following.plain_residual and following.stream == block.stream:
            after_mlp = norm_ssf(following.norms[0])
        else:
            after_mlp = None
        norm1, norm2 = norm_ssf(block.norms[0]), norm_ssf(block.norms[1])
        for before, branch, after in (
            (norm1, ssf_of(block.attention.proj.linear), norm2),
            (norm2, ssf_of(block.fc2.linear), after_mlp),
        ):
            if before is None or branch is None or after is None:
                continue
            link = ResidualLink(wrapper_of(after), after)
            before.opens, branch.branch, after.closes = link, link, link
            links += 1
    return links


register(
    MethodInfo(
        name="ssf",
        family="reparameterization",
        paper="Lian et al., Scaling & Shifting Your Features: A New Baseline for Efficient "
        "Model Tuning, NeurIPS 2022",
        mergeable=True,
        config=SsfConfig,
        install=install_ssf,
        summary="per-channel scale and shift after every linear, LayerNorm and the patch conv",
    )
)
