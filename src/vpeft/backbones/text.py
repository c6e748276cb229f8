"""The tokenizer of a vision-language backbone, for texts the *model* encodes itself (the class
prompts of CLIP zero-shot classification).

A backbone's tokenizer travels with its weights: transformers records the folder a model was
loaded from in ``config.name_or_path``, and vpeft's bundled VL backbones are such folders, with
a ``tokenizer.json`` beside ``config.json`` and ``model.safetensors``. No hub: the tokenizer is
found, in order,

1. on the model object itself: an attribute ``vpeft_tokenizer`` (a tokenizer, or the path of a
   ``tokenizer.json`` / a folder holding one) — what a user sets for a model built in code;
2. in the folder the model was loaded from (``config.name_or_path``), if it holds
   ``tokenizer.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

#: attribute of a backbone object that names its tokenizer (object or path)
TOKENIZER_ATTR = "vpeft_tokenizer"


def tokenizer_for(model: nn.Module) -> Any:
    """The tokenizer of a transformers backbone (see the module docstring), or a `ConfigError`
    saying how to provide one."""
    from ..data.vl.tokenizer import load_tokenizer

    given = getattr(model, TOKENIZER_ATTR, None)
    if given is not None:
        return load_tokenizer(given) if isinstance(given, str | Path) else given
    config = getattr(model, "config", None)
    folder = getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "")
    if folder and (Path(folder) / "tokenizer.json").is_file():
        return load_tokenizer(folder)
    raise ConfigError(
        f"the class prompts need the tokenizer of this {type(model).__name__}, and none was "
        f"found: load the backbone from a folder holding tokenizer.json (e.g. a bundled VL "
        f"backbone such as clip-tiny-synth), or set pm.tokenizer = <tokenizer or path>"
    )


def tokenize_prompts(tokenizer: Any, prompts: list[str], max_length: int) -> dict[str, Any]:
    """``{"input_ids", "attention_mask"}`` int64 ``(C, L)`` of `prompts`, padded to the longest
    and truncated at ``max_length`` (the text tower's positions)."""
    out = tokenizer(
        list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {k: out[k].to(torch.int64) for k in ("input_ids", "attention_mask")}


def text_positions(model: nn.Module) -> int:
    """How many text positions the model's text tower has (512 when not configured)."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    return int(getattr(text, "max_position_embeddings", 512) or 512)
