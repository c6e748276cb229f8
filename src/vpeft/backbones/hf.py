"""Backbones from Hugging Face `transformers` (optional: ``pip install 'vpeft[hf]'``).

This module imports transformers, so `vpeft.backbones.describe` imports it only for a model
whose class comes from the transformers package. Each family lives in its own module
(`hf_vit`, `hf_clip`, `hf_vilt`, `hf_bridgetower`) as one describer; this table maps model
classes to them. Descriptions follow the module layout of transformers 5 (separate q/k/v
`nn.Linear`s, residual adds in the layer or in BERT-style `*Output` modules).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import ConfigError, UnsupportedBackboneError
from .spec import BackboneSpec

#: pip extra that installs transformers
EXTRA = "hf"


def require_transformers() -> None:
    """Raise a `ConfigError` naming the extra when transformers is not installed."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError(
            "this backbone needs Hugging Face transformers, which is not installed; "
            f"install it with: pip install 'vpeft[{EXTRA}]'"
        ) from None


def hf_families() -> dict[type[nn.Module], tuple[str, Callable[[nn.Module], BackboneSpec]]]:
    """transformers model class -> (family name, describer)."""
    require_transformers()
    from transformers import (
        BridgeTowerModel,
        CLIPModel,
        CLIPTextModel,
        CLIPVisionModel,
        ViltModel,
        ViTModel,
    )

    from .hf_bridgetower import describe_bridgetower
    from .hf_clip import describe_clip, describe_clip_text, describe_clip_vision
    from .hf_vilt import describe_vilt
    from .hf_vit import describe_hf_vit

    return {
        ViTModel: ("hf-vit", describe_hf_vit),
        CLIPVisionModel: ("hf-clip-vision", describe_clip_vision),
        CLIPTextModel: ("hf-clip-text", describe_clip_text),
        CLIPModel: ("hf-clip", describe_clip),
        ViltModel: ("hf-vilt", describe_vilt),
        BridgeTowerModel: ("hf-bridgetower", describe_bridgetower),
    }


def describe_hf(model: nn.Module) -> BackboneSpec:
    """The `BackboneSpec` of a supported transformers base model, else a clear error."""
    families = hf_families()
    entry = families.get(type(model))
    if entry is None:
        raise UnsupportedBackboneError(
            f"transformers {type(model).__name__} is not a supported backbone. Supported "
            "transformers models: " + ", ".join(c.__name__ for c in families)
        )
    return entry[1](model)
