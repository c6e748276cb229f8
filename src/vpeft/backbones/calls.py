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


# --------------------------------------------------------------------------- vision-language


def _dict_inputs(spec: BackboneSpec, inputs: Inputs, kind: str) -> dict[str, Any]:
    if not isinstance(inputs, dict):
        raise ConfigError(
            f"feature kind {kind!r} reads a dict of fields ({list(spec.input_names)}), got "
            f"{type(inputs).__name__}"
        )
    return inputs


def pooled_pair_features(spec: BackboneSpec, inputs: Inputs) -> torch.Tensor:
    """NLVR2's "pair" features ``(B, 2, D)`` (ViLT §4.3, transformers
    ``ViltForImagesAndTextClassification``): the backbone runs once per image with the same
    text, ``pixel_values[:, i]`` / ``pixel_mask[:, i]`` and ``image_token_type_idx = i + 1``;
    the pooled features are stacked in image order. Needs a ViLT with
    ``modality_type_vocab_size >= 3``."""
    fields = _dict_inputs(spec, inputs, "pooled_pair")
    if spec.family != "hf-vilt":
        raise ConfigError(
            f"feature kind 'pooled_pair' (NLVR2) runs a ViLT once per image with "
            f"image_token_type_idx; {spec.family} backbones do not take it"
        )
    pixels, mask = fields["pixel_values"], fields.get("pixel_mask")
    if pixels.dim() != 5:
        raise ConfigError(
            f"NLVR2 inputs need pixel_values (B, images, 3, H, W), got {tuple(pixels.shape)}"
        )
    types = spec.backbone.config.modality_type_vocab_size
    if types < pixels.shape[1] + 1:
        raise ConfigError(
            f"this ViLT has modality_type_vocab_size={types}; {pixels.shape[1]} images per "
            f"sample need {pixels.shape[1] + 1} (text + one type per image, as ViLT's NLVR2 "
            "models: build it with modality_type_vocab_size=3)"
        )
    text = {k: v for k, v in fields.items() if k in spec.input_names and not k.startswith("pixel")}
    pooled = []
    for i in range(pixels.shape[1]):
        one = {**text, "pixel_values": pixels[:, i], "image_token_type_idx": i + 1}
        if mask is not None:
            one["pixel_mask"] = mask[:, i]
        pooled.append(spec.model(one))
    return torch.stack(pooled, dim=1)


def _pooler(output: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projected
    embedding; earlier versions return the tensor itself."""
    return output if torch.is_tensor(output) else output.pooler_output


def _two_tower(spec: BackboneSpec, kind: str) -> nn.Module:
    model = spec.backbone
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ConfigError(
            f"feature kind {kind!r} needs a two-tower model (CLIPModel) with "
            f"get_image_features / get_text_features; {spec.family} has none"
        )
    return model


def image_embeddings(spec: BackboneSpec, pixels: torch.Tensor) -> torch.Tensor:
    """A two-tower model's projected image embeddings ``(B, E)`` (CLIP
    ``get_image_features``), not normalised."""
    return _pooler(_two_tower(spec, "embeddings").get_image_features(pixel_values=pixels))


def text_embeddings(spec: BackboneSpec, texts: dict[str, torch.Tensor]) -> torch.Tensor:
    """A two-tower model's projected text embeddings ``(T, E)`` (CLIP ``get_text_features``)
    of ``{"input_ids", "attention_mask"}``, not normalised."""
    model = _two_tower(spec, "embeddings")
    return _pooler(
        model.get_text_features(
            input_ids=texts["input_ids"], attention_mask=texts.get("attention_mask")
        )
    )


def pair_embeddings(spec: BackboneSpec, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image_emb (B, E), text_emb (B, E))`` of each (image, text) pair (CLIP retrieval)."""
    fields = _dict_inputs(spec, inputs, "embeddings")
    return image_embeddings(spec, fields["pixel_values"]), text_embeddings(spec, fields)


def class_embeddings(
    spec: BackboneSpec, inputs: Inputs, class_texts: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image_emb (B, E), class_emb (C, E))``: the images' embeddings and those of the
    tokenized class prompts (one row per class), through the model's own text tower — so a
    method installed in it (CoOp, APT) acts on every step."""
    image = image_embeddings(spec, pixel_values(inputs))
    device = image.device
    texts = {k: v.to(device) for k, v in class_texts.items()}
    return image, text_embeddings(spec, texts)
