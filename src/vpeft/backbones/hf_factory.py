"""Build transformers backbones by name: ``hf:<ModelClass>[:key=value,…]`` or a local folder.

- ``hf:ViTModel`` — the class's default configuration, seeded random weights (no download);
- ``hf:ViTModel:hidden_size=64,num_hidden_layers=2`` — configuration overrides, each value
  typed by the configuration attribute's current type (int, float, bool, str); dotted keys reach
  nested configurations (``vision_config.hidden_size=64`` for CLIPModel);
- a local folder holding ``config.json`` (its ``architectures[0]`` names the class) and
  optionally ``model.safetensors`` (then the weights are loaded, else seeded random weights).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedBackboneError
from .hf import hf_families, require_transformers

PREFIX = "hf:"


def is_hf_name(name: str) -> bool:
    """True for ``hf:…`` names and for folders holding a ``config.json``."""
    return name.startswith(PREFIX) or (Path(name) / "config.json").is_file()


def _model_class(class_name: str) -> type[nn.Module]:
    classes = {cls.__name__: cls for cls in hf_families()}
    if class_name not in classes:
        raise UnsupportedBackboneError(
            f"hf:{class_name} is not a supported transformers backbone; choose one of "
            + ", ".join(f"hf:{n}" for n in classes)
        )
    return classes[class_name]


def _typed(current: Any, key: str, text: str) -> Any:
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"hf override {key}={text!r}: expected true or false")
        return text.lower() in ("true", "1")
    for kind in (int, float):
        if isinstance(current, kind):
            try:
                return kind(text)
            except ValueError:
                raise ConfigError(f"hf override {key}={text!r}: expected {kind.__name__}") from None
    return text


def apply_overrides(config: Any, overrides: str) -> None:
    """Set ``key=value,…`` on a transformers configuration (typed by the current values)."""
    for pair in filter(None, (p.strip() for p in overrides.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"hf override {pair!r}: expected key=value")
        *path, leaf = key.strip().split(".")
        target = config
        for part in path:
            target = getattr(target, part, None)
            if target is None:
                raise ConfigError(f"hf override {key}: the configuration has no {part!r}")
        if not hasattr(target, leaf):
            raise ConfigError(
                f"hf override {key}: {type(target).__name__} has no attribute {leaf!r}"
            )
        setattr(target, leaf, _typed(getattr(target, leaf), key, value.strip()))


def create_hf_backbone(name: str, seed: int, img_size: int | None = None) -> nn.Module:
    """A transformers base model from an ``hf:`` name or a local folder (see module doc)."""
    require_transformers()
    folder = None if name.startswith(PREFIX) else Path(name)
    if folder is None:
        class_name, _, overrides = name[len(PREFIX) :].partition(":")
        cls = _model_class(class_name)
        config = cls.config_class()
        apply_overrides(config, overrides)
    else:
        meta = json.loads((folder / "config.json").read_text())
        archs = meta.get("architectures") or []
        if not archs:
            raise ConfigError(f"{folder}/config.json names no 'architectures'")
        cls = _model_class(archs[0])
        config = cls.config_class.from_pretrained(str(folder))
    if img_size is not None and hasattr(config, "image_size"):
        config.image_size = img_size
    if folder is not None and (folder / "model.safetensors").is_file():
        return cls.from_pretrained(str(folder), config=config, local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return cls(config)
        except (ValueError, TypeError) as err:  # inconsistent overrides, e.g. heads vs width
            raise ConfigError(f"{name}: cannot build {cls.__name__}: {err}") from None
