"""transformers CLIP: `CLIPVisionModel`, `CLIPTextModel` and the two-tower `CLIPModel`
(transformers 5 layout: `embeddings`, [`pre_layrnorm`], `encoder.layers[i]` =
CLIPEncoderLayer with `self_attn.{q,k,v,out}_proj`, `mlp.{fc1,fc2}`; residual adds in the layer).

Pooled features: vision — `pooler_output` (the CLS token after `post_layernorm`); text —
`pooler_output` (the EOS token after `final_layer_norm`); CLIPModel — the projected image and
text embeddings concatenated, (B, 2·projection_dim), un-normalised.
Prompt tokens (VPT) enter the vision tower after `pre_layrnorm`, after the class token, and
leave after the last layer (`post_layernorm` only ever sees the class token).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .hf_common import (
    as_kwargs,
    image_inputs,
    proj_mlp_block,
    text_image_inputs,
    text_inputs,
)
from .spec import BackboneSpec, BlockSpec, ModuleSite, TokenPath


def clip_vision_pool(model: nn.Module, inputs: Any) -> torch.Tensor:
    return model(**as_kwargs(inputs, "pixel_values")).pooler_output


def clip_text_pool(model: nn.Module, inputs: Any) -> torch.Tensor:
    return model(**as_kwargs(inputs, "input_ids")).pooler_output


def clip_pool(model: nn.Module, inputs: Any) -> torch.Tensor:
    """[image embedding; text embedding] through CLIP's own projections."""
    kw = as_kwargs(inputs, "pixel_values")
    image = model.get_image_features(pixel_values=kw["pixel_values"]).pooler_output
    text = model.get_text_features(
        input_ids=kw["input_ids"], attention_mask=kw.get("attention_mask")
    ).pooler_output
    return torch.cat([image, text], dim=-1)


def _block(index: int, layer: nn.Module, stream: str) -> BlockSpec:
    attn = layer.self_attn
    return proj_mlp_block(
        index,
        layer,
        "self_attn",
        "out_proj",
        attn.num_heads,
        scale=float(attn.scale),
        dropout=float(attn.dropout),
        dim=attn.embed_dim,
        norms=[layer.layer_norm1, layer.layer_norm2],
        stream=stream,
    )


def _blocks(tower: nn.Module, stream: str, start: int = 0) -> list[BlockSpec]:
    return [_block(start + i, layer, stream) for i, layer in enumerate(tower.encoder.layers)]


def describe_clip_vision(model: nn.Module) -> BackboneSpec:
    """Describe a transformers `CLIPVisionModel`."""
    cfg = model.config
    emb = model.embeddings
    return BackboneSpec(
        family="hf-clip-vision",
        model=model,
        blocks=_blocks(model, "vision"),
        embed_dim=cfg.hidden_size,
        num_features=cfg.hidden_size,
        patch_size=int(cfg.patch_size),
        num_prefix_tokens=1,
        patch_embed=emb.patch_embedding,
        cls_token=emb.class_embedding,
        pos_embed=emb.position_embedding.weight,
        final_norms=[model.post_layernorm],
        stage_dims=[cfg.hidden_size],
        tokens=TokenPath(
            entry=ModuleSite(model, "pre_layrnorm"),
            blocks=model.encoder.layers,
            exit=ModuleSite(model.encoder.layers, str(len(model.encoder.layers) - 1)),
            prompt_at=1,
            exit_after=True,
        ),
        pool=clip_vision_pool,
        make_inputs=image_inputs,
    )


def describe_clip_text(model: nn.Module) -> BackboneSpec:
    """Describe a transformers `CLIPTextModel` (causal self-attention; no prompt path)."""
    cfg = model.config
    return BackboneSpec(
        family="hf-clip-text",
        model=model,
        blocks=_blocks(model, "text"),
        embed_dim=cfg.hidden_size,
        num_features=cfg.hidden_size,
        patch_size=0,
        num_prefix_tokens=0,
        patch_embed=model.embeddings.token_embedding,
        cls_token=None,
        pos_embed=model.embeddings.position_embedding.weight,
        final_norms=[model.final_layer_norm],
        stage_dims=[cfg.hidden_size],
        pool=clip_text_pool,
        make_inputs=text_inputs,
        input_names=("input_ids", "attention_mask"),
    )


def describe_clip(model: nn.Module) -> BackboneSpec:
    """Describe a two-tower `CLIPModel`: vision blocks (stream "vision") then text blocks
    (stream "text"); the token and patch fields are the vision tower's."""
    vision = describe_clip_vision(model.vision_model)
    text_blocks = _blocks(model.text_model, "text", start=vision.depth)
    return BackboneSpec(
        family="hf-clip",
        model=model,
        blocks=vision.blocks + text_blocks,
        embed_dim=vision.embed_dim,
        num_features=2 * model.config.projection_dim,
        patch_size=vision.patch_size,
        num_prefix_tokens=1,
        patch_embed=vision.patch_embed,
        cls_token=vision.cls_token,
        pos_embed=vision.pos_embed,
        final_norms=[model.vision_model.post_layernorm, model.text_model.final_layer_norm],
        stage_dims=[vision.embed_dim],
        pool=clip_pool,
        make_inputs=text_image_inputs,
        input_names=("input_ids", "attention_mask", "pixel_values"),
    )
