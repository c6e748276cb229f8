"""Safetensors files with JSON metadata: writing atomically, reading safely (each `FileKind`
with its own error type and messages), checked copies into a model, fingerprints."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from .atomic import atomic_write_bytes
from .errors import AdapterFileError, VpeftError
from .jsonsafe import dumps_strict

FORMAT = "vpeft"


@dataclass(frozen=True)
class FileKind:
    """A kind of vpeft safetensors file: its ``format`` metadata value, the error type its
    readers raise, and their messages (`str.format` templates; fields named in each comment)."""

    format: str
    error: type[VpeftError]
    missing: str  # {path}
    unreadable: str  # {path}, {err}
    foreign: str  # {path}
    corrupted: str  # {path}, {err}
    mismatch: str  # {path}, {missing}, {unexpected}: tensor names (the first five)
    bad_shape: str  # {path}, {name}, {shape}, {expected}
    bad_dtype: str = (  # {path}, {name}, {dtype}, {expected}
        "{path}: tensor {name} holds {dtype} data, the model expects {expected}; the file is "
        "damaged or was not written for this model"
    )

    def fail(self, template: str, **fields: Any) -> VpeftError:
        """The error to raise, worded by `template` filled with `fields`."""
        return self.error(template.format(**fields))


#: What `write_safetensors` writes: adapters, SPT plans and sensitivity scores.
ADAPTER_FILE = FileKind(
    format=FORMAT,
    error=AdapterFileError,
    missing="no such vpeft file: {path}",
    unreadable="{path} is not a readable safetensors file ({err})",
    foreign="{path} was not written by vpeft (no 'format: vpeft' metadata)",
    corrupted="{path} has corrupted metadata ({err})",
    mismatch="{path} does not match the rebuilt model: missing {missing}, unexpected {unexpected}",
    bad_shape="{path}: tensor {name} has shape {shape}, the model expects {expected}",
)


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


#: Metadata key holding `tensor_checksum` of a file's tensors (checked by `read_safetensors`).
CHECKSUM_KEY = "tensor_sha256"


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and raw bytes, in name order.

    Stored in each file vpeft writes, so that bytes flipped inside the tensor data (which
    safetensors itself does not detect) are caught on load.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_safetensors(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write tensors + JSON metadata atomically (temp file in the same folder, then rename).

    `extra` entries (e.g. class names, preprocessing; see `vpeft.adapter_info`) are stored like
    `meta`. Top-level keys are written sorted, so identical content
    gives byte-identical files; a checksum of the tensor bytes is added under `CHECKSUM_KEY`.
    """
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    merged = {**meta, **(extra or {}), CHECKSUM_KEY: tensor_checksum(contiguous)}
    metadata = {"format": FORMAT}
    metadata.update({k: dumps_strict(merged[k]) for k in sorted(merged)})
    atomic_write_bytes(path, canonical_header(save(contiguous, metadata=metadata)))


def canonical_header(data: bytes) -> bytes:
    """`data` (a serialised safetensors file) with its JSON header in one canonical order:
    metadata keys sorted, tensors by data offset (safetensors' writer orders the metadata map
    arbitrarily, so identical content would otherwise give different bytes)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    ordered: dict[str, Any] = {}
    if "__metadata__" in header:
        meta = header.pop("__metadata__")
        ordered["__metadata__"] = {k: meta[k] for k in sorted(meta)}
    for name in sorted(header, key=lambda n: (header[n]["data_offsets"][0], n)):
        ordered[name] = header[name]
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the writer's own alignment padding
    return struct.pack("<Q", len(text)) + text + data[8 + length :]


def read_safetensors(
    path: str | Path, kind: FileKind = ADAPTER_FILE
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a vpeft file of `kind`; raise `kind.error` when it is missing, corrupted or foreign."""
    path = Path(path)
    if not path.is_file():
        raise kind.fail(kind.missing, path=path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise kind.fail(kind.unreadable, path=path, err=err) from None
    if raw_meta.get("format") != kind.format:
        raise kind.fail(kind.foreign, path=path)
    try:
        meta = {k: json.loads(v) for k, v in raw_meta.items() if k != "format"}
    except json.JSONDecodeError as err:
        raise kind.fail(kind.corrupted, path=path, err=err) from None
    except RecursionError:  # hostile nesting ([[[[…) exhausts the JSON parser's stack
        raise kind.fail(kind.corrupted, path=path, err="JSON nested too deeply") from None
    saved_sum = meta.pop(CHECKSUM_KEY, None)
    if saved_sum is not None and saved_sum != tensor_checksum(tensors):
        raise kind.fail(
            kind.corrupted,
            path=path,
            err="the checksum of its tensor data does not match: the file was altered or damaged "
            "after it was written; restore it from a backup or re-create it",
        )
    return tensors, meta


def load_matching(
    path: str | Path,
    targets: dict[str, torch.Tensor],
    saved: dict[str, torch.Tensor],
    kind: FileKind = ADAPTER_FILE,
) -> None:
    """Copy `saved[name]` into each `targets[name]` in place (cast to its dtype).

    Raises `kind.error` when the two hold different names, or a tensor has another shape.
    """
    missing = sorted(set(targets) - set(saved))
    unexpected = sorted(set(saved) - set(targets))
    if missing or unexpected:
        raise kind.fail(kind.mismatch, path=path, missing=missing[:5], unexpected=unexpected[:5])
    with torch.no_grad():
        for name, target in targets.items():
            value = saved[name]
            if value.shape != target.shape:
                raise kind.fail(
                    kind.bad_shape,
                    path=path,
                    name=name,
                    shape=tuple(value.shape),
                    expected=tuple(target.shape),
                )
            if value.is_floating_point() != target.is_floating_point():  # no silent int -> float
                raise kind.fail(
                    kind.bad_dtype, path=path, name=name, dtype=value.dtype, expected=target.dtype
                )
            target.copy_(value.to(target.dtype))


def frozen_state(model: nn.Module, exclude: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of `model`, minus those of `exclude` (the head)."""
    skip = {id(t) for t in exclude.parameters()} if exclude is not None else set()
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if id(v) not in skip}
