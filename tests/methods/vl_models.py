"""Tiny vision-language backbones (random weights, seeded) for the APT / VL-baseline tests."""

from __future__ import annotations

import torch
from torch import nn

from tests.backbones.hf_models import TINY, hf_vilt, transformers, vilt_inputs  # noqa: F401
from tests.helpers import IMG

TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def hf_bridgetower(seed: int = 0) -> nn.Module:
    """2 text layers + 2 × (fusion-text, fusion-image) layers, width 32."""
    torch.manual_seed(seed)
    cfg = transformers.BridgeTowerConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        text_config=dict(TEXT, vocab_size=50, max_position_embeddings=16),
        vision_config=dict(hidden_size=64, num_hidden_layers=2, image_size=IMG, patch_size=8),
    )
    return transformers.BridgeTowerModel(cfg)


def bridgetower_inputs(batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 5, dtype=torch.long)
    mask[1:, 4:] = 0
    return {
        "input_ids": torch.randint(3, 50, (batch, 5), generator=g),
        "attention_mask": mask,
        "pixel_values": torch.randn(batch, 3, IMG, IMG, generator=g),
        "pixel_mask": torch.ones(batch, IMG, IMG, dtype=torch.long),
    }


#: CLIP text tower: token ids 0..49; BOS 48, EOS 49 (the highest id, as in CLIP's vocabulary)
CLIP_VOCAB, CLIP_BOS, CLIP_EOS, CLIP_PAD = 50, 48, 49, 0


def hf_clip(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.CLIPConfig(
        text_config=dict(
            TEXT,
            vocab_size=CLIP_VOCAB,
            max_position_embeddings=16,
            bos_token_id=CLIP_BOS,
            eos_token_id=CLIP_EOS,
            pad_token_id=CLIP_PAD,
        ),
        vision_config=dict(TINY),
        projection_dim=16,
    )
    return transformers.CLIPModel(cfg)
