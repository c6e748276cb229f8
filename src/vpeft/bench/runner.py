"""Execute one run of a sweep: build, measure (parameters, FLOPs, memory), train, record.

A run spec is a plain JSON-able dict (its hash is the run key, `store.run_key`)::

    {"backbone": "vit-tiny-synth", "weights": null, "img_size": null,
     "method": "lora", "options": {"rank": 4},
     "data": "synthetic:synth-digits", "train_split": "train800",
     "eval_splits": {"val": "val200"},            # or {"test": "test"} in a final run
     "train": {... TrainConfig fields, seed included ...},
     "limit": null}                                # or {"train": N, "eval": N}: first N images

Training goes to the run's work folder with checkpoints every epoch, so a run whose worker was
killed continues from its last finished epoch when it is picked up again (`train(resume=True)`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from .. import __version__
from ..analysis import train_step_flops, training_memory
from ..cli.data_option import (
    DataSpec,
    backbone_data_config,
    load_split,
    num_classes_of,
    training_input,
)
from ..factory import create_backbone
from ..model import apply
from ..train import TrainConfig, train
from ..train.checkpoint import CHECKPOINT_NAME
from ..train.loop import ADAPTER_NAME
from ..train.rng import seed_everything
from .tracking import make_tracker

#: TrainConfig fields a spec may not set (they say where and how loudly, not what is trained).
_RUNTIME_FIELDS = ("out_dir", "progress", "device", "save_adapter", "num_workers")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    import timm

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "vpeft": __version__,
    }


def _sha(chunks: Any) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def tensor_hash(tensors: Any) -> str:
    """SHA-256 over the bytes of `tensors` (in order)."""
    return _sha(t.detach().cpu().contiguous().numpy().tobytes() for t in tensors)


def data_hash(inputs: dict[str, Any]) -> str:
    """Hash of what the run was fed: whole-split tensors (images after the transform, labels);
    a dataset too large for tensors is hashed by its sample list (paths and labels)."""
    chunks: list[bytes] = []
    for name in sorted(inputs):
        data = inputs[name]
        chunks.append(name.encode())
        if isinstance(data, tuple):
            chunks.append(bytes.fromhex(tensor_hash(data)))
        else:
            samples = getattr(getattr(data, "dataset", data), "samples", None)
            chunks.append(repr(samples if samples is not None else len(data)).encode())
    return _sha(chunks)


def _limited(data: Any, n: int | None) -> Any:
    if not n:
        return data
    if isinstance(data, tuple):
        return data[0][:n], data[1][:n]
    return Subset(data, range(min(n, len(data))))


def train_config_of(spec: dict[str, Any], work_dir: Path, device: str) -> TrainConfig:
    given = dict(spec["train"])
    bad = [k for k in given if k in _RUNTIME_FIELDS]
    if bad:
        raise ValueError(f"run spec sets runtime fields {bad}")
    config = TrainConfig.from_options({k: v for k, v in given.items()})
    return dataclasses.replace(
        config, out_dir=str(work_dir), progress=False, device=device, save_adapter=True
    )


def execute(
    spec: dict[str, Any],
    work_dir: Path,
    *,
    device: str = "auto",
    log: str | None = None,
    run_name: str = "run",
) -> dict[str, Any]:
    """Run `spec` in `work_dir`; the record's spec-derived fields (see `store` for the format).

    A checkpoint already in `work_dir` (a killed attempt) is resumed.
    """
    started, t0 = _now(), time.perf_counter()
    limit = spec.get("limit") or {}
    model = create_backbone(spec["backbone"], spec.get("weights"), spec.get("img_size"))
    backbone_sha = tensor_hash(v for _, v in sorted(model.state_dict().items()))
    dcfg = backbone_data_config(model)
    data = DataSpec.parse(spec["data"])
    transform = dcfg.transform()
    train_ds = load_split(data, spec["train_split"], transform)
    num_classes = num_classes_of(train_ds, data)
    classes = getattr(train_ds, "classes", None) if data.kind == "folder" else None
    inputs = {"train": _limited(training_input(train_ds, dcfg.input_size), limit.get("train"))}
    for role, split in spec["eval_splits"].items():
        ds = load_split(data, split, transform, classes)
        inputs[role] = _limited(training_input(ds, dcfg.input_size), limit.get("eval"))
    config = train_config_of(spec, work_dir, device)

    seed_everything(config.seed)  # the method's initial values
    pm = apply(model, spec["method"], num_classes=num_classes, **spec.get("options", {}))
    first = inputs["train"][0][:1] if isinstance(inputs["train"], tuple) else None
    if first is None:
        first = inputs["train"][0][0].unsqueeze(0)
    labels = torch.zeros(1, dtype=torch.long)
    pm.train()
    step = train_step_flops(pm, first, lambda logits: F.cross_entropy(logits, labels))
    pm.zero_grad(set_to_none=True)
    memory = training_memory(pm, first, lambda logits: F.cross_entropy(logits, labels))
    pm.zero_grad(set_to_none=True)
    counts = pm.summary().as_dict()

    tracker = make_tracker(log, work_dir, run_name)
    if tracker is not None:
        tracker.log_params({"spec": spec})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    resume = (work_dir / CHECKPOINT_NAME).is_file()
    try:
        result = train(
            pm,
            inputs["train"],
            inputs.get("val"),
            inputs.get("test"),
            config,
            resume=resume,
            on_epoch_end=tracker.on_epoch_end if tracker else None,
        )
    finally:
        if tracker is not None:
            tracker.close()
    adapter = work_dir / ADAPTER_NAME
    n_train = (
        len(inputs["train"][1]) if isinstance(inputs["train"], tuple) else len(inputs["train"])
    )
    return {
        "spec": spec,
        "hashes": {
            "data": data_hash(inputs),
            "backbone": backbone_sha,
            "adapter": _sha([adapter.read_bytes()]) if adapter.is_file() else None,
        },
        "metrics": {
            "val_top1": result.val_top1,
            "val_loss": result.val_loss,
            "test_top1": result.test_top1,
            "test_loss": result.test_loss,
            "train_loss": result.history[-1].get("train_loss") if result.history else None,
            "epochs": result.epochs,
            "resumed": resume,
            "history": result.history,
        },
        "params": counts,
        "flops": {
            "train_step_per_image": int(step.train_step),
            "forward_per_image": int(step.forward),
            "train_total": int(step.train_step) * n_train * config.epochs,
            "train_images": n_train,
            "note": "PyTorch FLOP counter, 2 FLOPs per multiply-accumulate, batch of one",
        },
        "memory": {
            **dataclasses.asdict(memory),
            "total": memory.total,
            "cuda_max_allocated": (
                torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
            ),
            "note": "one AdamW step on one image: weights + grads + optimizer + saved activations",
        },
        "time": {
            "wall_s": time.perf_counter() - t0,
            "train_s": result.wall_s,
            "started": started,
            "finished": _now(),
        },
        "versions": versions(),
        "host": socket.gethostname(),
        "argv": sys.argv,
    }
