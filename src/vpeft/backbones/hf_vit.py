"""transformers `ViTModel` (transformers 5 layout: `layers[i]` = ViTLayer with
`attention.{q,k,v,o}_proj`, `mlp.{fc1,fc2}`; residual adds in the layer).

Pooled feature: the class token of `last_hidden_state` (after the final `layernorm`), as
`ViTForImageClassification`; the optional `pooler` (dense + tanh) is then unused and stays
frozen under every method.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedBackboneError
from .hf_common import as_kwargs, image_inputs, proj_mlp_block
from .spec import BackboneSpec, BlockSpec, ModuleSite, TokenPath


def vit_pool(model: nn.Module, inputs: Any) -> torch.Tensor:
    """CLS token of the final-LayerNorm output."""
    return model(**as_kwargs(inputs, "pixel_values")).last_hidden_state[:, 0]


def _block(index: int, layer: nn.Module) -> BlockSpec:
    attn = layer.attention
    if not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
        raise UnsupportedBackboneError(
            f"ViTModel layer {index} has no q_proj/k_proj/v_proj/o_proj (the transformers 5 "
            "layout); install transformers>=5 (pip install 'vpeft[hf]')"
        )
    return proj_mlp_block(
        index,
        layer,
        "attention",
        "o_proj",
        attn.num_attention_heads,
        scale=float(attn.scaling),
        dropout=float(attn.attention_dropout),
        dim=layer.layernorm_before.normalized_shape[0],
        norms=[layer.layernorm_before, layer.layernorm_after],
    )


def describe_hf_vit(model: nn.Module) -> BackboneSpec:
    """Describe a transformers `ViTModel`."""
    cfg = model.config
    emb = model.embeddings
    patch = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0]
    return BackboneSpec(
        family="hf-vit",
        model=model,
        blocks=[_block(i, layer) for i, layer in enumerate(model.layers)],
        embed_dim=cfg.hidden_size,
        num_features=cfg.hidden_size,
        patch_size=int(patch),
        num_prefix_tokens=1,
        patch_embed=emb.patch_embeddings,
        cls_token=emb.cls_token,
        pos_embed=emb.position_embeddings,
        final_norms=[model.layernorm],
        stage_dims=[cfg.hidden_size],
        tokens=TokenPath(
            entry=ModuleSite(model, "embeddings"),
            blocks=model.layers,
            exit=ModuleSite(model, "layernorm"),
            prompt_at=1,
        ),
        pool=vit_pool,
        make_inputs=image_inputs,
        unused=[m for m in (model.pooler,) if m is not None],
    )


def vit_from_timm(state: dict[str, torch.Tensor], num_heads: int) -> dict[str, torch.Tensor]:
    """Convert a timm `VisionTransformer` state dict (class token, no register tokens,
    `qkv` fused) into `ViTModel` names — for checking that both give the same features, or for
    loading timm weights into transformers. The head and `fc_norm` are dropped."""
    del num_heads  # q/k/v are row blocks of qkv whatever the head count
    out: dict[str, torch.Tensor] = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    names = {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.o_proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"layers.{i}."
        for a, b in names.items():
            for p in ("weight", "bias"):
                out[f"{dst}{b}.{p}"] = state[f"{src}{a}.{p}"]
        for p in ("weight", "bias"):
            for role, chunk in zip(
                ("q", "k", "v"), state[f"{src}attn.qkv.{p}"].chunk(3), strict=True
            ):
                out[f"{dst}attention.{role}_proj.{p}"] = chunk
    return out
