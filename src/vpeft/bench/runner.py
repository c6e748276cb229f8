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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from .. import __version__
from ..analysis import train_step_flops, training_memory
from ..analysis.flops import output_loss
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
from ..train.batches import run_model
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


@dataclass
class Built:
    """A run ready to train: the model, its inputs by role, and how to measure one step."""

    pm: Any
    inputs: dict[str, Any]  # "train", and "val" / "test" as the spec asks
    example: Any  # what the model is called with for one training sample
    loss: Callable[[Any], torch.Tensor]  # of the model's output on `example`
    model_call: Any  # the module whose call is measured (the model, or all its tasks)


class _AllTasks(torch.nn.Module):
    """Calls a multi-task `PeftModel` on every task at once (one output dict), for counting."""

    def __init__(self, pm: Any) -> None:
        super().__init__()
        self.pm = pm

    def forward(self, inputs: Any) -> Any:
        return run_model(self.pm, inputs, self.pm.tasks)


def _count(data: Any) -> int:
    return len(data[1]) if isinstance(data, tuple) else len(data)


def _build_classification(spec: dict[str, Any], model: Any, data: DataSpec) -> Built:
    limit = spec.get("limit") or {}
    dcfg = backbone_data_config(model)
    transform = dcfg.transform()
    train_ds = load_split(data, spec["train_split"], transform)
    num_classes = num_classes_of(train_ds, data)
    classes = getattr(train_ds, "classes", None) if data.kind == "folder" else None
    inputs = {"train": _limited(training_input(train_ds, dcfg.input_size), limit.get("train"))}
    for role, split in spec["eval_splits"].items():
        ds = load_split(data, split, transform, classes)
        inputs[role] = _limited(training_input(ds, dcfg.input_size), limit.get("eval"))
    pm = apply(model, spec["method"], num_classes=num_classes, **spec.get("options", {}))
    first = inputs["train"][0][:1] if isinstance(inputs["train"], tuple) else None
    if first is None:
        first = inputs["train"][0][0].unsqueeze(0)
    labels = torch.zeros(1, dtype=torch.long)
    return Built(pm, inputs, first, lambda logits: F.cross_entropy(logits, labels), pm)


def _example(pm: Any, dataset: Any) -> Any:
    from torch.utils.data import default_collate

    from ..train.batches import model_inputs

    return model_inputs(default_collate([dataset[0]]), pm.tasks)


def _build_dense(spec: dict[str, Any], model: Any, data: DataSpec) -> Built:
    from ..cli.dense import dense_split, tasks_for

    limit = spec.get("limit") or {}
    dcfg = backbone_data_config(model)
    tasks = tasks_for(spec["tasks"], data.kind)
    names = [t.name for t in tasks]

    def split(name: str, n: int | None) -> Any:
        ds = dense_split(data.kind, data.root, name, dcfg.input_size, dcfg.mean, dcfg.std, names)
        return _limited(ds, n)

    inputs = {"train": split(spec["train_split"], limit.get("train"))}
    for role, name in spec["eval_splits"].items():
        inputs[role] = split(name, limit.get("eval"))
    shared = True if spec.get("shared") else None
    # reseed before the method's (and decoders') initial values, as `vpeft train` does on its
    # dense path: building the backbone and the splits draws from the global RNGs, so without it
    # a run here would start from other initial values than the same run of `vpeft train`
    seed_everything(spec["train"].get("seed", 0))
    pm = apply(model, spec["method"], tasks=tasks, shared=shared, **spec.get("options", {}))
    return Built(pm, inputs, _example(pm, inputs["train"]), output_loss, _AllTasks(pm))


def _build_vl(spec: dict[str, Any], model: Any, data: DataSpec) -> Built:
    from ..cli.vl_data import load_vl

    limit = spec.get("limit") or {}
    roles = ("train", *spec["eval_splits"])
    vl = load_vl(data.kind, data.root, model, roles)
    inputs = {"train": _limited(vl.splits["train"], limit.get("train"))}
    inputs.update({role: vl.splits[role] for role in spec["eval_splits"]})  # galleries whole
    pm = apply(model, spec["method"], tasks=[vl.task], **spec.get("options", {}))
    return Built(pm, inputs, _example(pm, inputs["train"]), output_loss, _AllTasks(pm))


#: VL headline metric of each part, as in docs/results/vl.md.
VL_HEADLINE = {"vqa": "vqa/vqa_score", "nlvr2": "nlvr2/top1", "retrieval": "retrieval/rsum",
               "clip-base": "clip/top1"}  # fmt: skip


def _dense_metrics(pm: Any, last: dict[str, Any], scored: str) -> dict[str, Any]:
    from ..cli.dense import headlines, task_results
    from ..tasks.dense import HEADLINES

    headline = headlines(task_results(last, pm.tasks, scored), pm.tasks)
    lower = [n for n in headline if HEADLINES[pm.tasks[n].kind][1]]
    return {"headline": headline, "lower_is_better": lower, "columns": dict(headline)}


def _vl_metrics(
    pm: Any, model: Any, data: DataSpec, last: dict[str, Any], scored: str, config: TrainConfig
) -> dict[str, Any]:
    from ..cli.vl_data import evaluation_task, load_vl, new_half, part_of, results
    from ..tasks.vl import base_to_new
    from ..train.device import autocast_dtype, resolve_device
    from ..train.evaluate import evaluate_tasks

    part = part_of(data.kind, data.root)
    values = results(last, scored)
    score = values.get(VL_HEADLINE[part])
    out: dict[str, Any] = {"results": values, "score": score}
    if part == "clip-base" and scored == "test":  # base-to-new: the new classes after training
        task = next(iter(pm.tasks.values()))
        new = load_vl(*new_half(data.kind, data.root), model, ("test",))
        pm.tasks[task.name] = evaluation_task(new, task)
        device = resolve_device(config.device)
        new_data = new.splits["test"]
        scores = evaluate_tasks(pm, new_data, config.eval_batch_size, device,
                                autocast_dtype(config.amp, device))  # fmt: skip
        summary = base_to_new(score, scores[task.name].values["top1"])
        out.update(base_to_new=summary, score=summary["hm"])
        out["columns"] = {"base": summary["base"], "new": summary["new"], "HM": summary["hm"]}
    return out


def execute(
    spec: dict[str, Any],
    work_dir: Path,
    *,
    device: str = "auto",
    log: str | None = None,
    run_name: str = "run",
) -> dict[str, Any]:
    """Run `spec` in `work_dir`; the record's spec-derived fields (see `store` for the format).

    The data kind decides what is built: image classification (top-1), a dense multi-task
    model (``dense-synthetic:`` / ``pascal-mt:`` data, a ``tasks`` field; per-task headline
    metrics) or a VL task (``vl-synthetic:`` data or an on-disk VL kind such as ``vqa-v2:``;
    its headline metric, CLIP base/new/HM).
    A checkpoint already in `work_dir` (a killed attempt) is resumed.
    """
    from ..cli.dense import DENSE_KINDS
    from ..cli.vl_data import KINDS as VL_KINDS

    started, t0 = _now(), time.perf_counter()
    # one seed before anything random: the backbone's construction, then the method's initial
    # values (the order `vpeft demo` always had, so its numbers did not change when it moved here)
    seed_everything(spec["train"].get("seed", 0))
    model = create_backbone(spec["backbone"], spec.get("weights"), spec.get("img_size"))
    backbone_sha = tensor_hash(v for _, v in sorted(model.state_dict().items()))
    data = DataSpec.parse(spec["data"])
    config = train_config_of(spec, work_dir, device)
    if data.kind in DENSE_KINDS:
        built = _build_dense(spec, model, data)
    elif data.kind in VL_KINDS:
        built = _build_vl(spec, model, data)
    else:
        built = _build_classification(spec, model, data)
    pm, inputs = built.pm, built.inputs
    pm.train()
    # the measuring passes run in train mode and would move BatchNorm statistics (the dense
    # decoders'): put every buffer back so training starts from the state `vpeft train` starts from
    buffers = [(b, b.detach().clone()) for b in pm.buffers()]
    step = train_step_flops(built.model_call, built.example, built.loss)
    pm.zero_grad(set_to_none=True)
    memory = training_memory(built.model_call, built.example, built.loss)
    pm.zero_grad(set_to_none=True)
    with torch.no_grad():
        for buffer, saved in buffers:
            buffer.copy_(saved)
    del buffers
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
    last = result.history[-1] if result.history else {}
    scored = "test" if "test" in inputs else "val"
    extra: dict[str, Any] = {}
    if data.kind in DENSE_KINDS:
        extra = _dense_metrics(pm, last, scored)
    elif data.kind in VL_KINDS:
        extra = _vl_metrics(pm, model, data, last, scored, config)
    adapter = work_dir / ADAPTER_NAME
    n_train = _count(inputs["train"])
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
            "train_loss": last.get("train_loss"),
            "epochs": result.epochs,
            "resumed": resume,
            "scored_split": scored,
            **extra,
            "history": result.history,
        },
        "params": counts,
        "flops": {
            "train_step_per_image": int(step.train_step),
            "forward_per_image": int(step.forward),
            "train_total": int(step.train_step) * n_train * config.epochs,
            "train_images": n_train,
            "note": "PyTorch FLOP counter, 2 FLOPs per multiply-accumulate, batch of one "
            "(one sample: an image, an image + text, or an NLVR2 pair)",
        },
        "memory": {
            **dataclasses.asdict(memory),
            "total": memory.total,
            "cuda_max_allocated": (
                torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
            ),
            "note": "one AdamW step on one sample: weights + grads + optimizer + saved activations",
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
