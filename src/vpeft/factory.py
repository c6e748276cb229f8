"""Build backbones by name: vpeft's bundled ones, any timm model, or a transformers model
(``hf:<ModelClass>[:key=value,…]`` or a local folder with ``config.json``; see
`vpeft.backbones.hf_factory`), with random or local weights.

No network: pretrained weights come from a local file (`weights=`), checked strictly — a file
that lacks any backbone tensor is an error (timm's own headless loading silently skips them).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from .errors import ConfigError, UnsupportedBackboneError

#: random-weight backbones are drawn with this seed, so `vpeft eval` rebuilds what `train` adapted
DEFAULT_SEED = 0


def create_backbone(
    name: str,
    weights: str | Path | None = None,
    img_size: int | None = None,
    seed: int = DEFAULT_SEED,
    random_init: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """A headless backbone: a bundled vpeft model (e.g. ``vit-tiny-synth``, pretrained) or the
    timm model `name` with seeded random weights, or with `weights` from a local file.

    `img_size` is passed to models whose constructor takes it (ViT, Swin); fully convolutional
    ones (ConvNeXt) are built without it and accept any size.

    `random_init=True` builds a bundled backbone's architecture with seeded random weights (the
    control for "does pretraining help?"); `weights` with a bundled name loads that file into
    the bundled architecture.
    """
    from .backbones.hf_factory import create_hf_backbone, is_hf_name
    from .zoo import BUNDLED, BUNDLED_VL

    if name in BUNDLED_VL:
        if weights is not None:
            raise ConfigError(
                f"--weights is for timm checkpoints; {name} is a transformers folder "
                f"({BUNDLED_VL[name].path}); give another folder as --backbone instead"
            )
        return BUNDLED_VL[name].create(pretrained=not random_init, seed=seed)
    if is_hf_name(name):
        if weights is not None:
            return _hf_from_folder(name, Path(weights), seed, img_size)
        return create_hf_backbone(name, seed, img_size)
    sized = {} if img_size is None else {"img_size": img_size}
    if random_init and weights is not None:
        raise ConfigError("give either --weights FILE or --random-init, not both")
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"weights: no such file {weights}")
    if name in BUNDLED:
        if weights is None and not random_init:
            return BUNDLED[name].create(pretrained=True, **sized, **kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BUNDLED[name].create(pretrained=False, **sized, **kwargs)
        if weights is not None:
            load_backbone_weights(model, Path(weights))
        return model
    if not timm.is_model(name):
        raise UnsupportedBackboneError(
            f"unknown backbone {name!r}: neither a bundled vpeft backbone "
            f"({', '.join(sorted(BUNDLED) + sorted(BUNDLED_VL))}), a timm model name, nor "
            "hf:<ModelClass> (e.g. hf:ViTModel) / a folder with a transformers config.json"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(name, sized, {"num_classes": 0, **kwargs})
    if weights is not None:
        load_backbone_weights(model, Path(weights))
    return model


def _hf_from_folder(name: str, folder: Path, seed: int, img_size: int | None) -> nn.Module:
    """``hf:<Class> --weights DIR``: the transformers model saved in DIR (``config.json`` +
    ``model.safetensors``, and ``tokenizer.json`` for VL texts), which must be a <Class>."""
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"--weights {folder}: a transformers backbone ({name}) takes a local folder holding "
            "config.json and model.safetensors (timm checkpoint files are for timm backbones)"
        )
    if not (folder / "model.safetensors").is_file():
        raise ConfigError(f"--weights {folder}: model.safetensors is missing")
    from .backbones.hf_factory import PREFIX, create_hf_backbone

    model = create_hf_backbone(str(folder), seed, img_size)
    wanted = name[len(PREFIX) :].partition(":")[0] if name.startswith(PREFIX) else ""
    if wanted and type(model).__name__ != wanted:
        raise ConfigError(
            f"--weights {folder} holds a {type(model).__name__}, not the {wanted} of --backbone "
            f"{name}"
        )
    return model


def _build(name: str, sized: dict[str, Any], kwargs: dict[str, Any]) -> nn.Module:
    try:
        try:
            return timm.create_model(name, pretrained=False, **sized, **kwargs)
        except TypeError:  # the constructor has no img_size argument
            if not sized:
                raise
            return timm.create_model(name, pretrained=False, **kwargs)
    except (AssertionError, ValueError) as err:
        if not sized:
            raise
        raise ConfigError(f"{name} cannot be built for image size {sized}: {err}") from None


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Load a local timm checkpoint (.safetensors / .pth) into a headless timm `model`.

    The checkpoint goes through the model family's own timm `checkpoint_filter_fn` (key
    conversions, position-embedding resampling). A checkpoint lacking any backbone tensor is an
    error; extra keys other than the classifier's are reported as a warning.
    """
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)  # never unpickle
        filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
        if filter_fn is not None:
            state = filter_fn(state, model)
        result = model.load_state_dict(state, strict=False)
    except Exception as err:  # unreadable file, wrong shapes: all mean "not this model's weights"
        detail = " ".join(str(err).split()[:40]) or type(err).__name__
        raise ConfigError(f"--weights {path} does not load into {_arch(model)}: {detail}") from None
    if result.missing_keys:
        raise ConfigError(
            f"--weights {path} lacks {len(result.missing_keys)} tensor(s) of {_arch(model)}, "
            f"e.g. {result.missing_keys[:3]}; is it a checkpoint of this architecture?"
        )
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "head")
    extra = [k for k in result.unexpected_keys if not k.startswith(f"{head}.")]
    if extra:
        warnings.warn(
            f"--weights {path}: {len(extra)} tensor(s) not used, e.g. {extra[:3]}", stacklevel=2
        )


def _arch(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture", type(model).__name__))
