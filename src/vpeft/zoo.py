"""Backbones bundled with vpeft: small timm models pretrained by `scripts/pretrain_tiny_vit.py`
(`vit-tiny-synth`) and `scripts/pretrain_tiny_swin.py` (`swin-tiny-synth`) on procedural
source tasks, so everything runs without a model hub.

Each entry is a plain timm constructor plus keyword arguments; the weights file loads through
timm's own `pretrained_cfg_overlay=dict(file=...)` mechanism.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .errors import UnsupportedBackboneError

ASSETS = Path(str(resources.files("vpeft") / "assets"))


@dataclass(frozen=True)
class BundledBackbone:
    """A small pretrained backbone shipped in `vpeft/assets/`."""

    name: str
    timm_name: str
    kwargs: dict[str, Any]
    weights_file: str
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_path(self) -> Path:
        return ASSETS / self.weights_file

    @property
    def recipe_path(self) -> Path:
        return ASSETS / (Path(self.weights_file).stem + ".json")

    def recipe(self) -> dict[str, Any]:
        """The pretraining recipe and source-task accuracy recorded beside the weights."""
        return json.loads(self.recipe_path.read_text())

    def pretrained_cfg_overlay(self) -> dict[str, Any]:
        size = self.kwargs.get("img_size", 224)
        return {
            "file": str(self.weights_path),
            "input_size": (3, size, size),
            "mean": self.mean,
            "std": self.std,
            "interpolation": "bicubic",
            "num_classes": 0,
        }

    def create(self, pretrained: bool = True, **overrides: Any) -> nn.Module:
        """Build the timm model; `pretrained=False` gives the same architecture, random init."""
        kwargs = {**self.kwargs, "num_classes": 0, **overrides}
        if pretrained and not self.weights_path.is_file():
            raise UnsupportedBackboneError(
                f"bundled weights {self.weights_path} are missing; re-install vpeft or run "
                "scripts/pretrain_tiny_vit.py"
            )
        return timm.create_model(
            self.timm_name,
            pretrained=pretrained,
            pretrained_cfg_overlay=self.pretrained_cfg_overlay(),
            **kwargs,
        )


BUNDLED: dict[str, BundledBackbone] = {
    "vit-tiny-synth": BundledBackbone(
        name="vit-tiny-synth",
        timm_name="vit_tiny_patch16_224",
        kwargs={"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4},
        weights_file="vit_tiny_synth.safetensors",
        description="ViT 4 blocks × 64 wide, patch 4, 32×32 input, pretrained on synth-source",
    ),
    "swin-tiny-synth": BundledBackbone(
        name="swin-tiny-synth",
        timm_name="swin_tiny_patch4_window7_224",
        kwargs={
            "img_size": 64,
            "patch_size": 4,
            "window_size": 4,
            "embed_dim": 24,
            "depths": (2, 2, 2, 2),
            "num_heads": (1, 2, 4, 8),
        },
        weights_file="swin_tiny_synth.safetensors",
        description="Swin 4 stages (24/48/96/192 wide, 2 blocks each), window 4, 64×64 input, "
        "pretrained by scripts/pretrain_tiny_swin.py on the dense-synthetic source task",
    ),
}


@dataclass(frozen=True)
class BundledTransformersBackbone:
    """A small pretrained transformers VL backbone shipped as a plain transformers folder
    (``config.json``, ``model.safetensors``, ``tokenizer.json``) in `vpeft/assets/`, produced
    by ``scripts/<script>``; the recipe and held-out accuracy sit beside it (``<folder>.json``).
    Loads with ``<Class>.from_pretrained(folder)``; the tokenizer is found beside the weights."""

    name: str
    folder: str
    script: str
    description: str = ""

    @property
    def path(self) -> Path:
        return ASSETS / self.folder

    @property
    def recipe_path(self) -> Path:
        return ASSETS / f"{self.folder}.json"

    def recipe(self) -> dict[str, Any]:
        """The pretraining recipe and held-out accuracy recorded beside the folder."""
        return json.loads(self.recipe_path.read_text())

    def create(self, pretrained: bool = True, seed: int = 0) -> nn.Module:
        """The transformers base model with the bundled weights, or (``pretrained=False``) the
        same architecture with seeded random weights; either way it knows its tokenizer."""
        from .backbones.hf_factory import create_hf_backbone
        from .backbones.text import TOKENIZER_ATTR

        if not (self.path / "model.safetensors").is_file():
            raise UnsupportedBackboneError(
                f"bundled weights {self.path}/model.safetensors are missing; re-install vpeft "
                f"or run scripts/{self.script}"
            )
        if pretrained:
            model = create_hf_backbone(str(self.path), seed)
        else:
            import transformers

            config = transformers.AutoConfig.from_pretrained(str(self.path))
            cls = getattr(transformers, config.architectures[0])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = cls(config)
        setattr(model, TOKENIZER_ATTR, str(self.path / "tokenizer.json"))
        return model


#: Bundled transformers VL backbones (need the ``hf`` extra).
BUNDLED_VL: dict[str, BundledTransformersBackbone] = {
    "vilt-tiny-synth": BundledTransformersBackbone(
        name="vilt-tiny-synth",
        folder="vilt_tiny_synth",
        script="pretrain_tiny_vilt.py",
        description="ViltModel 3 layers × 64 wide, patch 16, 64×64 input, 3 modality types; "
        "image-text matching + MLM on the VL suite's captions",
    ),
    "clip-tiny-synth": BundledTransformersBackbone(
        name="clip-tiny-synth",
        folder="clip_tiny_synth",
        script="pretrain_tiny_clip.py",
        description="CLIPModel: vision 3 layers × 64 (patch 16, 64×64), text 2 layers × 64, "
        "projection 64; contrastive on the VL suite's captions",
    ),
}


def bundled_backbone(name: str) -> BundledBackbone:
    """Look up a bundled backbone by name."""
    try:
        return BUNDLED[name]
    except KeyError:
        raise UnsupportedBackboneError(
            f"unknown bundled backbone {name!r}; available: {sorted(BUNDLED)}"
        ) from None
