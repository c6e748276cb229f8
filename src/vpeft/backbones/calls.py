"""How a model wrapper calls a described backbone: pooled features, multi-scale feature maps and
the backbone's own classifier factory (timm models). One place for the family differences, so
`PeftModel` never touches timm attributes.

Inputs are an image tensor or a dict of tensors (``pixel_values``, ``input_ids``, ...).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .spec import BackboneSpec

Inputs = torch.Tensor | dict[str, Any]


def pixel_values(inputs: Inputs) -> torch.Tensor:
    """The image tensor of `inputs` (the tensor itself, or its ``pixel_values`` field)."""
    if torch.is_tensor(inputs):
        return inputs
    if isinstance(inputs, dict) and "pixel_values" in inputs:
        return inputs["pixel_values"]
    have = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
    raise ConfigError(
        f"this backbone reads an image tensor or a dict with 'pixel_values'; got {have}"
    )


def pooled_features(spec: BackboneSpec, inputs: Inputs) -> torch.Tensor:
    """The pooled representation a classification head reads (`BackboneSpec.features`): timm's
    pre-logits feature, which is what a headless timm model returns; for transformers models
    what their `BackboneWithHead` returns with no head. Image-only backbones take the image
    tensor; text + image backbones the dict of their input fields."""
    if spec.input_names == ("pixel_values",):
        return spec.model(pixel_values(inputs))
    if not isinstance(inputs, dict):
        raise ConfigError(
            f"{spec.family} reads the fields {list(spec.input_names)}; pass a dict of them"
        )
    return spec.model({k: v for k, v in inputs.items() if k in spec.input_names})


def feature_maps(spec: BackboneSpec, inputs: Inputs) -> list[torch.Tensor]:
    """Multi-scale feature maps (B, C_i, H_i, W_i) of the backbone's taps, in order.

    Hierarchical timm models (Swin, PVT-v2, ConvNeXt): the raw output of every stage (no
    final norm); ViT: the outputs of ``spec.tap_blocks`` as (B, D, H/p, W/p) maps. Every method
    installed in the blocks runs underneath (the stages run through their own modules).
    """
    x = pixel_values(inputs)
    return spec.tap_features(x)


def classifier_factory(spec: BackboneSpec) -> Any:
    """A function ``num_classes -> nn.Module`` that builds the backbone's own classifier (timm's
    ``reset_classifier``, whose init and input width are the model's), leaving the backbone
    headless; ``None`` when the family has none (a plain `nn.Linear` is used)."""
    model = spec.model
    if not (hasattr(model, "reset_classifier") and hasattr(model, "get_classifier")):
        return None

    def build(num_classes: int) -> nn.Module:
        model.reset_classifier(num_classes)
        head = model.get_classifier()
        model.reset_classifier(0)  # the backbone returns pre-logits; heads live in PeftModel
        return head

    return build


def reattach_classifier(model: nn.Module, head: nn.Module, num_classes: int) -> None:
    """Put `head` where the (headless) timm `model` keeps its classifier (for `merge`)."""
    current = model.get_classifier()
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is current:
                setattr(parent, name, head)
                model.num_classes = num_classes
                return
    raise ConfigError(f"cannot find the classifier slot of {type(model).__name__}")
