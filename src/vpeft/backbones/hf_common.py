"""Pieces shared by the transformers descriptions (no transformers import here)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .spec import AttentionSpec, BlockSpec, LinearSlot, ModuleSite, single_mlp


def separate_attention(
    module: nn.Module,
    parent: nn.Module,
    attr: str,
    kind: str,
    linears: tuple[nn.Module, str, str, str],
    proj: tuple[nn.Module, str],
    num_heads: int,
    scale: float,
    dropout: float,
    cross: bool = False,
) -> AttentionSpec:
    """An attention with separate q/k/v `nn.Linear`s (rows=None slots, the same roles as a
    fused qkv) and an output projection that is the sub-layer's output site (before the
    residual add)."""
    holder, q, k, v = linears
    proj_parent, proj_attr = proj
    width = getattr(holder, q).out_features
    return AttentionSpec(
        module=module,
        parent=parent,
        attr=attr,
        kind=kind,
        num_heads=num_heads,
        head_dim=width // num_heads,
        q=LinearSlot(holder, q, "q"),
        k=LinearSlot(holder, k, "k"),
        v=LinearSlot(holder, v, "v"),
        proj=LinearSlot(proj_parent, proj_attr, "proj"),
        output=ModuleSite(proj_parent, proj_attr),
        cross=cross,
        scale=scale,
        dropout=dropout,
    )


def proj_mlp_block(
    index: int,
    layer: nn.Module,
    attr: str,
    out: str,
    num_heads: int,
    scale: float,
    dropout: float,
    dim: int,
    norms: list[nn.Module],
    stream: str = "main",
) -> BlockSpec:
    """A pre-norm block whose attention ``layer.<attr>`` has q_proj/k_proj/v_proj and the
    output projection ``out``, and whose MLP is ``layer.mlp`` with fc1/fc2 (CLIP, ViT)."""
    attn = getattr(layer, attr)
    attention = separate_attention(
        attn,
        layer,
        attr,
        "hf-proj",
        (attn, "q_proj", "k_proj", "v_proj"),
        (attn, out),
        num_heads,
        scale=scale,
        dropout=dropout,
    )
    return BlockSpec(
        index=index,
        stage=0,
        module=layer,
        dim=dim,
        attention=attention,
        fc1=LinearSlot(layer.mlp, "fc1", "fc1"),
        fc2=LinearSlot(layer.mlp, "fc2", "fc2"),
        mlp=single_mlp(layer, "mlp"),
        norms=norms,
        stream=stream,
    )


def as_kwargs(inputs: Any, main: str) -> dict[str, Any]:
    """A batch as model keyword arguments: a dict as is, a tensor as `main`."""
    if isinstance(inputs, dict):
        return dict(inputs)
    if isinstance(inputs, torch.Tensor):
        return {main: inputs}
    raise ConfigError(
        f"expected a tensor ({main}) or a dict of tensors, got {type(inputs).__name__}"
    )


#: text length of example inputs (APT counts ViLT FLOPs with 40 text tokens)
TEXT_TOKENS = 40


def _sub(config: Any, name: str) -> Any:
    return getattr(config, name, None) or config


def image_inputs(
    model: nn.Module, batch: int, img_size: int | None, generator: torch.Generator
) -> torch.Tensor:
    """Random `pixel_values` (B, C, S, S) at the configured (or given) size."""
    cfg = _sub(model.config, "vision_config")
    size = img_size or cfg.image_size
    return torch.randn(batch, cfg.num_channels, size, size, generator=generator)


def text_ids(model: nn.Module, batch: int, generator: torch.Generator, offset: int = 0) -> Any:
    """Random `input_ids` and an all-ones `attention_mask` (B, min(40, max positions))."""
    cfg = _sub(model.config, "text_config")
    length = min(TEXT_TOKENS, cfg.max_position_embeddings - offset)
    ids = torch.randint(0, cfg.vocab_size, (batch, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones(batch, length, dtype=torch.long)}


def text_inputs(model: nn.Module, batch: int, img_size: int | None, generator: torch.Generator):
    return text_ids(model, batch, generator)


def text_image_inputs(
    model: nn.Module, batch: int, img_size: int | None, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Text + image: `input_ids`, `attention_mask`, `pixel_values`, `pixel_mask` (all valid)."""
    pixels = image_inputs(model, batch, img_size, generator)
    # RoBERTa-style position ids (BridgeTower) start after the padding index
    offset = 2 if hasattr(model, "text_model") else 0
    return {
        **text_ids(model, batch, generator, offset),
        "pixel_values": pixels,
        "pixel_mask": torch.ones(batch, *pixels.shape[-2:], dtype=torch.long),
    }
