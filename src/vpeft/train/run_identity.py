"""What a run was trained on, as short hashes stored in its checkpoint, so that ``--resume``
refuses a changed dataset, split selection or method option instead of silently mixing runs.

Three parts, compared one by one (the error names the ones that differ):

- ``data``: the content of the train / val / test inputs — tensor inputs by their labels (all)
  and a strided sample of their pixels (`vpeft.io.fingerprint`); dataset inputs by their length
  and the file lists / labels / class names they expose;
- ``spec``: the caller's description of the data (the CLI's ``--data``, splits and augmentation;
  ``out`` excluded, so a moved folder still resumes);
- ``method``: the installed methods and all their options.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import fingerprint
from .checkpoint import CheckpointError

#: Key of the identity inside the config dict a checkpoint stores.
IDENTITY_KEY = "run_identity"
_DATASET_ATTRS = ("samples", "images", "labels", "targets", "classes", "num_classes", "name")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _array_digest(value: Any) -> str:
    t = torch.as_tensor(np.asarray(value)) if not torch.is_tensor(value) else value
    return fingerprint({"t": t}, samples=4096)


def _source_digest(source: Any) -> Any:
    images, labels = getattr(source, "images", None), getattr(source, "labels", None)
    if torch.is_tensor(images) and torch.is_tensor(labels):
        full = hashlib.sha256(labels.cpu().contiguous().numpy().tobytes()).hexdigest()[:32]
        return {"images": _array_digest(images), "labels": full, "n": len(labels)}
    dataset = getattr(source, "dataset", source)
    out: dict[str, Any] = {"type": type(dataset).__name__, "n": len(dataset)}
    for attr in _DATASET_ATTRS:
        value = getattr(dataset, attr, None)
        if isinstance(value, np.ndarray | torch.Tensor):
            out[attr] = _array_digest(value)
        elif value is not None and not callable(value):
            out[attr] = (
                _digest([str(v) if isinstance(v, Path) else v for v in value])
                if (isinstance(value, list | tuple))
                else str(value)
            )
    return out


def run_identity(
    pm: Any, sources: Mapping[str, Any], spec: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The identity of a run: hashes of its data content, data description and method options.

    `sources`: the run's inputs by split name (train / val / test), as the loop holds them.
    """
    methods = [m.to_json() for m in getattr(pm, "methods", [])]
    described = {k: v for k, v in (spec or {}).items() if k != "out"}
    return {
        "data": _digest({name: _source_digest(src) for name, src in sorted(sources.items())}),
        "spec": _digest(described),
        "method": _digest(methods),
    }


def check_identity(
    path: str | Path, saved_config: Mapping[str, Any], mine: Mapping[str, str]
) -> None:
    """Raise `CheckpointError` when the checkpoint at `path` was written by a run with another
    identity (checkpoints without one, from older versions, are accepted)."""
    saved = saved_config.get(IDENTITY_KEY)
    if not isinstance(saved, Mapping):
        return
    what = {"data": "the data content", "spec": "--data / splits / augmentation",
            "method": "the method or its options (--opt)"}  # fmt: skip
    differ = [what[k] for k in what if saved.get(k) != mine.get(k)]
    if differ:
        raise CheckpointError(
            f"cannot resume {path}: {', '.join(differ)} differ from the run that wrote it; "
            "resume with exactly the same data, splits and method options, or start a new run "
            "in another --out"
        )
