"""What an adapter file says about the task beside its tensors: class names (index order), the
preprocessing (input size, mean, std, interpolation) and the backbone name given on the
command line. Stored as extra metadata by `PeftModel.save`, restored by `vpeft.load`.

The information travels on the `PeftModel` as a plain attribute, so any code path that builds a
model (CLI, API) can attach it without changing the model's constructor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .io import read_safetensors

#: Metadata keys this module owns.
KEYS: tuple[str, ...] = ("classes", "preprocessing", "backbone_name")
_ATTR = "_vpeft_adapter_info"


def attach(
    pm: Any,
    classes: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    backbone_name: str | None = None,
) -> None:
    """Record class names (index i = label i), preprocessing and backbone name on `pm`."""
    info = dict(getattr(pm, _ATTR, {}))
    if classes is not None:
        info["classes"] = [str(c) for c in classes]
    if preprocessing is not None:
        info["preprocessing"] = _jsonable(dict(preprocessing))
    if backbone_name is not None:
        info["backbone_name"] = str(backbone_name)
    object.__setattr__(pm, _ATTR, info)


def extras(pm: Any) -> dict[str, Any]:
    """The metadata entries to write with `pm` (empty when nothing was attached)."""
    return dict(getattr(pm, _ATTR, {}))


def restore(pm: Any, meta: Mapping[str, Any]) -> None:
    """Attach what a loaded file's metadata `meta` records."""
    object.__setattr__(pm, _ATTR, {k: meta[k] for k in KEYS if k in meta})


def class_names(pm: Any) -> list[str] | None:
    """The class names recorded on `pm`, or None."""
    names = extras(pm).get("classes")
    return list(names) if isinstance(names, list) else None


def read_info(path: str | Path) -> dict[str, Any]:
    """The entries of `KEYS` stored in the adapter file at `path`."""
    _, meta = read_safetensors(path)
    return {k: meta[k] for k in KEYS if k in meta}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
