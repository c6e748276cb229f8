"""Bundled architectures: random init on request; a --weights file loads into them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vpeft.errors import ConfigError
from vpeft.factory import create_backbone


def test_random_init_differs_from_pretrained_and_is_seeded() -> None:
    pretrained = create_backbone("vit-tiny-synth")
    a = create_backbone("vit-tiny-synth", random_init=True)
    b = create_backbone("vit-tiny-synth", random_init=True)
    w = "blocks.0.attn.qkv.weight"
    assert not torch.equal(a.state_dict()[w], pretrained.state_dict()[w])
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])


def test_bundled_name_with_weights_file_loads_it(tmp_path: Path) -> None:
    source = create_backbone("vit-tiny-synth")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = create_backbone("vit-tiny-synth", weights=path)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ConfigError, match="not both"):
        create_backbone("vit-tiny-synth", weights=path, random_init=True)
