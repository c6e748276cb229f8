"""Backbone interface: map a user's timm or transformers model to a declarative `BackboneSpec`.

transformers is optional: it is imported (by `vpeft.backbones.hf`) only when the model given
comes from the transformers package; likewise diffusers (`vpeft.backbones.diffusers_unet`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import UnsupportedBackboneError
from .head import BackboneWithHead
from .spec import (
    MATRIX_ROLES,
    AttentionSpec,
    BackboneSpec,
    BlockSpec,
    LinearSlot,
    MlpSpec,
    ModuleSite,
    TokenPath,
)

#: timm family names, in the order of `families()` (written out so that listing them, and
#: importing this package, does not import timm)
TIMM_FAMILIES: tuple[str, ...] = ("vit", "swin", "convnext", "pvt_v2")


@functools.cache
def families() -> dict[type[nn.Module], tuple[str, Callable[[nn.Module], BackboneSpec]]]:
    """Model class -> (family name, describer). Adding a family = one entry + one module (and
    its name in `TIMM_FAMILIES`). timm is imported on the first call."""
    from timm.models.convnext import ConvNeXt
    from timm.models.pvt_v2 import PyramidVisionTransformerV2
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    from .convnext import describe_convnext
    from .pvt import describe_pvt_v2
    from .swin import describe_swin
    from .vit import describe_vit

    return {
        VisionTransformer: ("vit", describe_vit),
        SwinTransformer: ("swin", describe_swin),
        ConvNeXt: ("convnext", describe_convnext),
        PyramidVisionTransformerV2: ("pvt_v2", describe_pvt_v2),
    }


def __getattr__(name: str) -> Any:
    if name == "FAMILIES":  # the mapping as it was, built (with timm) on first access
        return families()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: families described by `vpeft.backbones.hf` (needs the `hf` extra)
HF_FAMILIES: tuple[str, ...] = (
    "hf-vit",
    "hf-clip-vision",
    "hf-clip-text",
    "hf-clip",
    "hf-vilt",
    "hf-bridgetower",
)


#: families described by `vpeft.backbones.diffusers_unet` (needs the `diffusion` extra); they
#: have no task head and are adapted with `vpeft.adapt`
DIFFUSERS_FAMILIES: tuple[str, ...] = ("diffusers-unet",)


def supported_families() -> list[str]:
    """Names of the backbone families vpeft can describe (timm, transformers, diffusers)."""
    return list(TIMM_FAMILIES) + list(HF_FAMILIES) + list(DIFFUSERS_FAMILIES)


def is_diffusers_model(model: nn.Module) -> bool:
    """True when the model's class comes from the diffusers package (no import needed)."""
    return type(model).__module__.startswith("diffusers.")


def is_transformers_model(model: nn.Module) -> bool:
    """True when the model's class comes from the transformers package (no import needed)."""
    return type(model).__module__.startswith("transformers.")


def describe(model: nn.Module) -> BackboneSpec:
    """Return the `BackboneSpec` of a supported timm or transformers model (or of a
    `BackboneWithHead` around one), else raise a clear error."""
    if isinstance(model, BackboneWithHead):
        inner = describe(model.backbone)
        return dataclasses.replace(inner, model=model, headless=model.backbone)
    if is_transformers_model(model):
        from .hf import describe_hf

        return describe_hf(model)
    if is_diffusers_model(model):
        from .diffusers_unet import describe_diffusers

        return describe_diffusers(model)
    for cls, (_, describer) in families().items():
        if type(model) is cls:
            return describer(model)
    raise UnsupportedBackboneError(
        f"{type(model).__name__} is not a supported backbone. Supported timm families: "
        + ", ".join(f"{name} ({cls.__name__})" for cls, (name, _) in families().items())
        + "; transformers models: ViTModel, CLIPVisionModel, CLIPTextModel, CLIPModel, "
        "ViltModel, BridgeTowerModel; diffusers: UNet2DConditionModel"
    )


def with_head(model: nn.Module) -> nn.Module:
    """`model` itself when it has a timm classifier API, else a `BackboneWithHead` around it
    (transformers base models), so a task head can be attached the same way. Models without a
    pooled feature (a diffusers UNet) get a `ConfigError` pointing at `vpeft.adapt`."""
    if hasattr(model, "reset_classifier") and hasattr(model, "get_classifier"):
        return model
    spec = describe(model)
    if spec.family in DIFFUSERS_FAMILIES:
        from ..errors import ConfigError

        raise ConfigError(
            f"a {spec.family} backbone has no pooled feature to put a task head on; install a "
            "method without one: vpeft.adapt(model, method, **options)"
        )
    return BackboneWithHead(model, spec.pool, spec.num_features)


__all__ = [
    "DIFFUSERS_FAMILIES",
    "FAMILIES",
    "HF_FAMILIES",
    "MATRIX_ROLES",
    "TIMM_FAMILIES",
    "AttentionSpec",
    "BackboneSpec",
    "BackboneWithHead",
    "BlockSpec",
    "LinearSlot",
    "MlpSpec",
    "ModuleSite",
    "TokenPath",
    "describe",
    "families",
    "is_diffusers_model",
    "is_transformers_model",
    "supported_families",
    "with_head",
]
