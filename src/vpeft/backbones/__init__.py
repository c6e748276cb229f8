"""Backbone interface: map a user's timm model to a declarative `BackboneSpec`."""

from __future__ import annotations

from collections.abc import Callable

from timm.models.convnext import ConvNeXt
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..errors import UnsupportedBackboneError
from .convnext import describe_convnext
from .pvt import describe_pvt_v2
from .spec import MATRIX_ROLES, AttentionSpec, BackboneSpec, BlockSpec, LinearSlot
from .swin import describe_swin
from .vit import describe_vit

#: model class -> (family name, describer). Adding a family = one entry + one module.
FAMILIES: dict[type[nn.Module], tuple[str, Callable[[nn.Module], BackboneSpec]]] = {
    VisionTransformer: ("vit", describe_vit),
    SwinTransformer: ("swin", describe_swin),
    ConvNeXt: ("convnext", describe_convnext),
    PyramidVisionTransformerV2: ("pvt_v2", describe_pvt_v2),
}


def supported_families() -> list[str]:
    """Names of the backbone families vpeft can describe."""
    return [name for name, _ in FAMILIES.values()]


def describe(model: nn.Module) -> BackboneSpec:
    """Return the `BackboneSpec` of a supported timm model, else raise a clear error."""
    for cls, (_, describer) in FAMILIES.items():
        if type(model) is cls:
            return describer(model)
    raise UnsupportedBackboneError(
        f"{type(model).__name__} is not a supported backbone. Supported timm families: "
        + ", ".join(f"{name} ({cls.__name__})" for cls, (name, _) in FAMILIES.items())
    )


__all__ = [
    "FAMILIES",
    "MATRIX_ROLES",
    "AttentionSpec",
    "BackboneSpec",
    "BlockSpec",
    "LinearSlot",
    "describe",
    "supported_families",
]
