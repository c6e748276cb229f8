"""transformers `BridgeTowerModel` (METER-style two-stream co-attention).

Described blocks, in model order:
- the text encoder's layers (stream "text": RoBERTa, post-norm BERT layers);
- the cross-modal fusion layers, alternating ``fusion-text`` / ``fusion-image`` per depth
  (`cross_modal_text_layers[i]`, `cross_modal_image_layers[i]`). Each exposes its
  self-attention (`attention`) and its cross-attention (`cross_attention`: queries from its own
  stream, keys/values from the other) — the 2·L attention modules APT adapts in METER.

In these post-norm layers the sub-layer output before the residual add is the `dense` output of
`*SelfOutput` / `*Output` (which then add the residual and apply LayerNorm); the MLP is split
into `intermediate` (input site) and `output.dense` (output site).

Not described: the CLIP-style vision tower, whose `nn.MultiheadAttention` keeps q/k/v in one
`in_proj_weight` parameter rather than `nn.Linear`s (vpeft's slots wrap linear layers).
Pooled feature: `pooler_output`, the text and image fusion CLS features concatenated (2·d).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .hf_common import separate_attention, text_image_inputs
from .hf_vilt import bert_mlp
from .spec import AttentionSpec, BackboneSpec, BlockSpec


def bridgetower_pool(model: nn.Module, inputs: Any) -> torch.Tensor:
    return model(**inputs).pooler_output


def _attention(holder: nn.Module, attr: str, cross: bool) -> AttentionSpec:
    module = getattr(holder, attr)
    inner = module.self
    return separate_attention(
        module,
        holder,
        attr,
        "hf-bert",
        (inner, "query", "key", "value"),
        (module.output, "dense"),
        inner.num_attention_heads,
        scale=float(inner.scaling),
        dropout=float(inner.dropout.p),
        cross=cross,
    )


def _block(index: int, layer: nn.Module, stream: str, fusion: bool) -> BlockSpec:
    fc1, fc2, mlp = bert_mlp(layer)
    cross = _attention(layer, "crossattention", cross=True) if fusion else None
    norms = [layer.attention.output.LayerNorm, layer.output.LayerNorm]
    if cross is not None:
        norms.insert(1, layer.crossattention.output.LayerNorm)
    return BlockSpec(
        index=index,
        stage=0,
        module=layer,
        dim=layer.output.dense.out_features,
        attention=_attention(layer, "attention", cross=False),
        fc1=fc1,
        fc2=fc2,
        mlp=mlp,
        norms=norms,
        cross_attention=cross,
        stream=stream,
    )


def describe_bridgetower(model: nn.Module) -> BackboneSpec:
    """Describe a transformers `BridgeTowerModel` (text tower + fusion layers)."""
    cfg = model.config
    blocks: list[BlockSpec] = []
    for layer in model.text_model.encoder.layer:
        blocks.append(_block(len(blocks), layer, "text", fusion=False))
    for text, image in zip(
        model.cross_modal_text_layers, model.cross_modal_image_layers, strict=True
    ):
        blocks.append(_block(len(blocks), text, "fusion-text", fusion=True))
        blocks.append(_block(len(blocks), image, "fusion-image", fusion=True))
    visual = model.vision_model.visual
    return BackboneSpec(
        family="hf-bridgetower",
        model=model,
        blocks=blocks,
        embed_dim=cfg.hidden_size,
        num_features=2 * cfg.hidden_size,
        patch_size=int(visual.embeddings.patch_size),
        num_prefix_tokens=1,
        patch_embed=visual.embeddings.patch_embedding,
        cls_token=visual.embeddings.class_embedding,
        pos_embed=visual.embeddings.position_embedding.weight,
        final_norms=[model.cross_modal_text_layernorm, model.cross_modal_image_layernorm],
        stage_dims=[cfg.hidden_size],
        pool=bridgetower_pool,
        make_inputs=text_image_inputs,
        input_names=("input_ids", "attention_mask", "pixel_values", "pixel_mask"),
    )
