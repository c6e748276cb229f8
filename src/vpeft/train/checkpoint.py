"""Per-epoch training checkpoints: one safetensors file, written atomically, never pickled.

The file holds only what a resumed run needs:

- ``param.<name>``: every trainable tensor (`PeftModel.trainable_parameters`), plus
  ``buffer.<name>`` for buffers of modules that own trainable parameters (e.g. a trained
  BatchNorm's running statistics);
- ``optim.<i>.<key>``: the optimiser's state tensors, flattened; the JSON index in the metadata
  restores the nesting, the non-tensor values and the parameter groups;
- ``rng.*`` and ``data_rng``: torch / numpy / Python RNG states and the data-order generator;
- metadata (JSON): completed epoch, global step, the per-epoch metrics history, elapsed time and
  the training config.

`save_checkpoint` writes a temporary file in the same folder, fsyncs it and renames it over the
previous checkpoint (`os.replace` is atomic), so a crash at any moment leaves either the old or the
new checkpoint, never a torn one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..atomic import atomic_path, temporary_prefix
from ..core.buffers import trained_buffers
from ..errors import VpeftError
from ..io import CHECKSUM_KEY, FileKind, load_matching, read_safetensors, tensor_checksum
from ..jsonsafe import dumps_strict
from . import rng

CHECKPOINT_NAME = "checkpoint.safetensors"
FORMAT = "vpeft-checkpoint"
VERSION = 1


class CheckpointError(VpeftError):
    """A checkpoint that is missing, corrupted, or does not fit the model being resumed."""


CHECKPOINT_FILE = FileKind(
    format=FORMAT,
    error=CheckpointError,
    missing="no checkpoint at {path}",
    unreadable="{path} is not a readable checkpoint ({err}); delete it",
    foreign="{path} is not a vpeft training checkpoint",
    corrupted="{path} has corrupted metadata ({err}); delete it",
    mismatch="{path} does not match the model's trainable tensors: missing {missing}, "
    "unexpected {unexpected}; resume with the same backbone, method and options",
    bad_shape="{path}: {name} has shape {shape}, the model expects {expected}",
)


@dataclass
class TrainState:
    """Progress of a run: what a checkpoint records besides tensors."""

    epoch: int = 0  # completed epochs
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        entry: dict[str, Any] = {}
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
                entry[key] = {"tensor": True}
            else:
                entry[key] = {"value": value}
        index[str(pid)] = entry
    return tensors, {"state": index, "param_groups": sd["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_generator: torch.Generator,
    state: TrainState,
    config: dict[str, Any],
) -> None:
    """Atomically write the checkpoint of `model` (its trainable tensors only) to `path`."""
    path = Path(path)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    tensors = {f"param.{n}": p for n, p in trainable.items()}
    tensors.update({f"buffer.{n}": b for n, b in trained_buffers(model).items()})
    optim_tensors, optim_index = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    rng_tensors, rng_meta = rng.capture()
    tensors.update({f"rng.{k}": v for k, v in rng_tensors.items()})
    tensors["data_rng"] = data_generator.get_state()
    meta = {
        "format": FORMAT,
        "version": dumps_strict(VERSION),
        "epoch": dumps_strict(state.epoch),
        "global_step": dumps_strict(state.global_step),
        "elapsed_s": dumps_strict(state.elapsed_s),
        "history": dumps_strict(state.history),
        "config": dumps_strict(config),
        "optimizer": dumps_strict(optim_index),
        "rng": dumps_strict(rng_meta),
    }
    atomic_save(path, {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta)


def atomic_save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """`save_file` to a temporary sibling, fsync, then rename over `path`."""
    meta = {**meta, CHECKSUM_KEY: dumps_strict(tensor_checksum(tensors))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete temporary files a killed `atomic_save` may have left beside `path`."""
    path = Path(path)
    for tmp in path.parent.glob(f"{temporary_prefix(path)}*.tmp"):
        tmp.unlink(missing_ok=True)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a checkpoint; `CheckpointError` when unreadable."""
    tensors, meta = read_safetensors(path, CHECKPOINT_FILE)
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {meta.get('version')}, this vpeft reads {VERSION}"
        )
    return tensors, meta


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_generator: torch.Generator,
    restore_rng: bool = True,
) -> tuple[TrainState, dict[str, Any]]:
    """Restore `model`'s trainable tensors, the optimiser, RNGs and data order from `path`.

    Returns the run's progress and the config the checkpoint was written with.
    """
    tensors, meta = read_checkpoint(path)
    _load_named(path, model, tensors)
    index = meta["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in index["state"].items():
        state[int(pid)] = {
            key: tensors[f"optim.{pid}.{key}"] if spec.get("tensor") else spec["value"]
            for key, spec in entry.items()
        }
    groups = index["param_groups"]
    for saved, live in zip(groups, optimizer.param_groups, strict=False):
        for key, value in saved.items():  # JSON turned tuples (e.g. Adam's betas) into lists
            if isinstance(live.get(key), tuple) and isinstance(value, list):
                saved[key] = tuple(value)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise CheckpointError(
            f"{path}: optimiser state does not fit this run ({err}); was it written with another "
            "method, optimiser or weight-decay setting?"
        ) from None
    data_generator.set_state(tensors["data_rng"])
    if restore_rng:
        rng.restore({k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}, meta["rng"])
    progress = TrainState(meta["epoch"], meta["global_step"], meta["history"], meta["elapsed_s"])
    return progress, meta["config"]


def _load_named(path: str | Path, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    expected = {f"param.{n}": p for n, p in model.named_parameters() if p.requires_grad}
    expected.update({f"buffer.{n}": b for n, b in trained_buffers(model).items()})
    saved = {k: v for k, v in tensors.items() if k.startswith(("param.", "buffer."))}
    load_matching(path, expected, saved, CHECKPOINT_FILE)
