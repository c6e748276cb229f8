"""transformers `ViltModel` (single-stream vision-language: text + image tokens in one
sequence; BERT-style modules, pre-norm).

A ViltLayer is ``h = x + attention.output.dense(attn(LN1(x)))`` (ViltSelfOutput adds no
residual), then ``output(intermediate(LN2(h)), h)`` where ViltOutput = dense → dropout →
``+ h``. So the MLP is split: its input site is `intermediate` (receives LN2(h)), its output
site is `output.dense` (MLP(x̃) before the residual add); the attention output site is
`attention.output.dense`.

Inputs are a dict: `input_ids`, `attention_mask`, `pixel_values`, `pixel_mask`.
Pooled feature: `pooler_output` (dense + tanh on the first text token), as ViLT's VQA head.
Prompt tokens (VPT) go after the whole sequence (text tokens, image class token, image
patches), because text and image lengths vary with the batch; the embeddings' key mask is
extended with ones so every token sees them. They are removed before the final `layernorm`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .hf_common import separate_attention, text_image_inputs
from .spec import BackboneSpec, BlockSpec, LinearSlot, MlpSpec, ModuleSite, TokenPath


def vilt_pool(model: nn.Module, inputs: Any) -> torch.Tensor:
    out = model(**inputs)
    return out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, 0]


def bert_mlp(layer: nn.Module) -> tuple[LinearSlot, LinearSlot, MlpSpec]:
    """fc1 / fc2 slots and the split MLP of a BERT-style layer (`intermediate`, `output`)."""
    return (
        LinearSlot(layer.intermediate, "dense", "fc1"),
        LinearSlot(layer.output, "dense", "fc2"),
        MlpSpec(ModuleSite(layer, "intermediate"), ModuleSite(layer.output, "dense")),
    )


def _block(index: int, layer: nn.Module) -> BlockSpec:
    self_attn = layer.attention.attention
    attention = separate_attention(
        layer.attention,
        layer,
        "attention",
        "hf-vilt",
        (self_attn, "query", "key", "value"),
        (layer.attention.output, "dense"),
        self_attn.num_attention_heads,
        scale=1.0 / math.sqrt(self_attn.attention_head_size),
        dropout=float(self_attn.dropout.p),
    )
    fc1, fc2, mlp = bert_mlp(layer)
    return BlockSpec(
        index=index,
        stage=0,
        module=layer,
        dim=layer.layernorm_before.normalized_shape[0],
        attention=attention,
        fc1=fc1,
        fc2=fc2,
        mlp=mlp,
        norms=[layer.layernorm_before, layer.layernorm_after],
    )


def describe_vilt(model: nn.Module) -> BackboneSpec:
    """Describe a transformers `ViltModel`."""
    cfg = model.config
    emb = model.embeddings
    return BackboneSpec(
        family="hf-vilt",
        model=model,
        blocks=[_block(i, layer) for i, layer in enumerate(model.encoder.layer)],
        embed_dim=cfg.hidden_size,
        num_features=cfg.hidden_size,
        patch_size=int(cfg.patch_size),
        num_prefix_tokens=1,
        patch_embed=emb.patch_embeddings,
        cls_token=emb.cls_token,
        pos_embed=emb.position_embeddings,
        final_norms=[model.layernorm],
        stage_dims=[cfg.hidden_size],
        tokens=TokenPath(
            entry=ModuleSite(model, "embeddings"),
            blocks=model.encoder.layer,
            exit=ModuleSite(model, "layernorm"),
            prompt_at=None,
            entry_with_mask=True,
        ),
        pool=vilt_pool,
        make_inputs=text_image_inputs,
        modality_embed=emb.token_type_embeddings,
        input_names=("input_ids", "attention_mask", "pixel_values", "pixel_mask"),
    )
