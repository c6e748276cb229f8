"""Tiny transformers backbones (random weights, seeded; no download) for the HF tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import IMG

transformers = pytest.importorskip("transformers")

from vpeft.backbones import with_head  # noqa: E402

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=IMG,
    patch_size=8,
)


def hf_vit(seed: int = 0, **kw: object) -> nn.Module:
    """A `ViTModel` (with its pooler, unused by the CLS feature) behind a classifier API."""
    torch.manual_seed(seed)
    return with_head(transformers.ViTModel(transformers.ViTConfig(**{**TINY, **kw})))


def hf_clip_vision(seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.CLIPVisionConfig(**{**TINY, **kw})
    return with_head(transformers.CLIPVisionModel(cfg))


VILT = dict(TINY, vocab_size=50, max_position_embeddings=16, max_image_length=-1)


def hf_vilt(seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    return with_head(transformers.ViltModel(transformers.ViltConfig(**{**VILT, **kw})))


def vilt_inputs(batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    """Text + image batch; the second sample's last two text tokens are padding."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[1:, 4:] = 0
    return {
        "input_ids": torch.randint(1, 50, (batch, 6), generator=g),
        "attention_mask": mask,
        "pixel_values": torch.randn(batch, 3, IMG, IMG, generator=g),
        "pixel_mask": torch.ones(batch, IMG, IMG, dtype=torch.long),
    }
