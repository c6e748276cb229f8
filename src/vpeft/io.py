"""Safetensors files with JSON metadata: writing atomically, reading safely, fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .atomic import atomic_path
from .errors import AdapterFileError

FORMAT = "vpeft"


def fingerprint(named_tensors: dict[str, torch.Tensor], samples: int = 1024) -> str:
    """A short hash of names, shapes and a strided sample of values of `named_tensors`.

    Cheap on ViT-B (reads ≤ `samples` values per tensor) yet different for different
    architectures or weights.
    """
    digest = hashlib.sha256()
    for name in sorted(named_tensors):
        t = named_tensors[name].detach()
        flat = t.reshape(-1)
        stride = max(1, flat.numel() // samples)
        sample = flat[::stride][:samples].to(torch.float32).cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:32]


def write_safetensors(
    path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Write tensors + JSON metadata atomically (temp file in the same folder, then rename)."""
    metadata = {"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=metadata)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a vpeft file; raise `AdapterFileError` when it is missing, corrupted or foreign."""
    path = Path(path)
    if not path.is_file():
        raise AdapterFileError(f"no such vpeft file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise AdapterFileError(f"{path} is not a readable safetensors file ({err})") from None
    if raw_meta.get("format") != FORMAT:
        raise AdapterFileError(f"{path} was not written by vpeft (no 'format: vpeft' metadata)")
    try:
        meta = {k: json.loads(v) for k, v in raw_meta.items() if k != "format"}
    except json.JSONDecodeError as err:
        raise AdapterFileError(f"{path} has corrupted metadata ({err})") from None
    return tensors, meta


def frozen_state(model: nn.Module, exclude: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of `model`, minus those of `exclude` (the head)."""
    skip = {id(t) for t in exclude.parameters()} if exclude is not None else set()
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if id(v) not in skip}
