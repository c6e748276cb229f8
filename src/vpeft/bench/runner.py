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
from ..errors import ConfigError, UnsupportedBackboneError, VpeftError
from ..factory import create_backbone
from ..model import apply
from ..train import TrainConfig, train
from ..train.batches import run_model
from ..train.checkpoint import CHECKPOINT_NAME
from ..train.loop import ADAPTER_NAME, TrainResult
from ..train.rng import seed_everything
from .tracking import epoch_callback

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
    batch: int = 1  # samples in `example`


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


def _example(pm: Any, dataset: Any, batch: int = 1) -> Any:
    """The model inputs of the first `batch` samples of `dataset` (a real batch)."""
    from torch.utils.data import default_collate

    from ..train.batches import model_inputs

    samples = [dataset[i] for i in range(min(batch, len(dataset)))]
    return model_inputs(default_collate(samples), pm.tasks)


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


def sampled(data: Any, n: int | None, seed: int) -> Any:
    """`n` samples of `data` drawn without replacement by a generator seeded with `seed` (in the
    drawn order); all of it when `n` is unset or not smaller than the split."""
    if not n or n >= len(data):
        return data
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return Subset(data, order[:n].tolist())


def _vl_eval_inputs(
    spec: dict[str, Any], splits: dict[str, Any], task: Any
) -> tuple[dict[str, Any], Any]:
    """The evaluation splits of a VL run after ``sample``: a retrieval gallery cut to its first
    ``gallery`` images (the task re-sized to it), any other split to ``eval`` samples drawn
    with seed 0 (the same for every run)."""
    from ..data.vl.datasets import RetrievalDataset
    from ..tasks.vl import RetrievalTask

    sample = spec.get("sample") or {}
    out = {}
    for role in spec["eval_splits"]:
        data = splits[role]
        if isinstance(data, RetrievalDataset):
            if sample.get("gallery") and not isinstance(task, RetrievalTask):
                raise ConfigError("sample.gallery cuts ITM retrieval galleries (ViLT) only")
            if sample.get("gallery"):
                data = first_images(data, sample["gallery"])
        else:
            data = sampled(data, sample.get("eval"), 0)
        out[role] = data
    galleries = {(d.num_images, d.num_texts) for d in out.values() if hasattr(d, "num_texts")}
    if sample.get("gallery") and galleries and isinstance(task, RetrievalTask):
        if len(galleries) > 1:
            raise ConfigError("ITM recall is sized by one gallery: cut val and test alike")
        num_images, num_texts = next(iter(galleries))
        task = RetrievalTask(task.name, num_images=num_images, num_texts=num_texts)
    return out, task


def first_images(full: Any, images: int) -> Any:
    """The first `images` images of an all-pairs retrieval gallery and their captions."""
    from ..data.vl.datasets import RetrievalDataset

    if images >= full.num_images:
        return full
    keep = [t for t in range(full.num_texts) if full.caption_image[t] < images]
    source = full.images

    class _First:
        def __len__(self) -> int:
            return images

        def __call__(self, i: int) -> torch.Tensor:
            return source(i)

    ds = RetrievalDataset.__new__(RetrievalDataset)
    ds.__dict__.update(full.__dict__)
    ds.images, ds.num_images, ds.num_texts = _First(), images, len(keep)
    ds.caption_image = full.caption_image[keep]
    ds.encoded = {k: v[keep] for k, v in full.encoded.items()}
    ds.texts = [full.texts[t] for t in keep]
    return ds


#: methods that replace CLIP's classifier by prompts over the class names' token ids
CLIP_PROMPT_METHODS = ("coop", "cocoop")


def class_prompt_options(model: Any, method: str, class_names: tuple[str, ...]) -> dict[str, Any]:
    """CoOp / CoCoOp prompts "[ctx] name ." (the task's "a photo of a {}." without its
    hand-written words): class-name and suffix token ids from the backbone's tokenizer; nothing
    for other methods."""
    if method not in CLIP_PROMPT_METHODS:
        return {}
    from ..backbones.text import tokenizer_for

    tokenizer = tokenizer_for(model)

    def ids(text: str) -> tuple[int, ...]:
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])

    return {"class_token_ids": tuple(ids(n) for n in class_names), "suffix_ids": ids(".")}


def _build_vl(spec: dict[str, Any], model: Any, data: DataSpec) -> Built:
    from ..cli.vl_data import load_vl

    limit = spec.get("limit") or {}
    seed = spec["train"].get("seed", 0)
    roles = ("train", *spec["eval_splits"])
    vl = load_vl(data.kind, data.root, model, roles)
    train = _limited(vl.splits["train"], limit.get("train"))
    inputs = {"train": sampled(train, (spec.get("sample") or {}).get("train"), seed)}
    evaluated, task = _vl_eval_inputs(spec, vl.splits, vl.task)  # galleries whole unless cut
    inputs.update(evaluated)
    options = {**spec.get("options", {})}
    options.update(class_prompt_options(model, spec["method"], getattr(task, "class_names", ())))
    # reseed before the method's initial values, as on the dense path: building the backbone
    # and the splits drew from the global RNGs
    seed_everything(seed)
    pm = _apply_or_skip(model, spec["method"], tasks=[task], **options)
    # CLIP encodes every class prompt once per batch: its per-sample costs depend on the batch
    batch = min(spec.get("measure_batch", 1), len(inputs["train"]))
    example = _example(pm, inputs["train"], batch)
    return Built(pm, inputs, example, output_loss, _AllTasks(pm), batch)


class NotApplicable(VpeftError):
    """The method does not apply to the run's backbone: the run is recorded as skipped."""


def _apply_or_skip(model: Any, method: str, **kwargs: Any) -> Any:
    """`apply`, with a backbone the method does not support (`UnsupportedBackboneError`,
    `NotImplementedError`) raised as `NotApplicable`; bad options stay errors."""
    try:
        return apply(model, method, **kwargs)
    except (UnsupportedBackboneError, NotImplementedError) as err:
        raise NotApplicable(f"{method}: {err}") from err


def skipped_record(spec: dict[str, Any], err: NotApplicable) -> dict[str, Any]:
    """The record of a run whose method does not apply: its spec and why, no metrics."""
    return {"spec": spec, "status": "skipped", "skipped": str(err), "time": {"finished": _now()},
            "versions": versions(), "host": socket.gethostname(), "argv": sys.argv}  # fmt: skip


#: VL headline metric of each part, as in docs/results/vl.md.
VL_HEADLINE = {"vqa": "vqa/vqa_score", "nlvr2": "nlvr2/top1", "retrieval": "retrieval/rsum",
               "clip-base": "clip/top1"}  # fmt: skip


def _dense_metrics(pm: Any, last: dict[str, Any], scored: str) -> dict[str, Any]:
    from ..cli.dense import headlines, task_results
    from ..tasks.dense import HEADLINES

    headline = headlines(task_results(last, pm.tasks, scored), pm.tasks)
    lower = [n for n in headline if HEADLINES[pm.tasks[n].kind][1]]
    return {"headline": headline, "lower_is_better": lower, "columns": dict(headline)}


def _with_new_classes(pm: Any, spec: dict[str, Any], new_task: Any) -> Any:
    """`pm` scoring CLIP's new classes with `new_task`: the task replaced (the prompts are the
    task's), or — CoOp / CoCoOp, whose prompts are built at install — the method installed on a
    fresh backbone for the new names with the trained prompt modules copied over."""
    task = next(iter(pm.tasks.values()))
    if spec["method"] not in CLIP_PROMPT_METHODS:
        pm.tasks[task.name] = new_task
        return pm
    fresh = create_backbone(spec["backbone"], spec.get("weights"), spec.get("img_size"))
    options = {**spec.get("options", {})}
    options.update(class_prompt_options(fresh, spec["method"], new_task.class_names))
    new = apply(fresh, spec["method"], tasks=[new_task], **options)
    new.forward_override.load_state_dict(pm.forward_override.state_dict())
    return new


def _vl_metrics(
    pm: Any, spec: dict[str, Any], model: Any, data: DataSpec, last: dict[str, Any],
    scored: str, config: TrainConfig,
) -> dict[str, Any]:  # fmt: skip
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
        new_pm = _with_new_classes(pm, spec, evaluation_task(new, task))
        device = resolve_device(config.device)
        new_data = new.splits["test"]
        scores = evaluate_tasks(new_pm, new_data, config.eval_batch_size, device,
                                autocast_dtype(config.amp, device))  # fmt: skip
        (name,) = new_pm.tasks
        summary = base_to_new(score, scores[name].values["top1"])
        out.update(base_to_new=summary, score=summary["hm"])
        out["columns"] = {"base": summary["base"], "new": summary["new"], "HM": summary["hm"]}
    return out


def evaluate_only(pm: Any, inputs: dict[str, Any], config: TrainConfig) -> TrainResult:
    """The evaluation splits of `inputs` scored on `pm` untrained, as a 0-epoch `TrainResult`
    (one history entry with the ``val/...`` / ``test/...`` metrics training would log)."""
    from ..train.device import autocast_dtype, resolve_device
    from ..train.evaluate import evaluate_tasks

    t0 = time.perf_counter()
    device = resolve_device(config.device)
    pm.to(device)
    entry: dict[str, Any] = {"epoch": 0}
    for role in ("val", "test"):
        if role in inputs:
            scores = evaluate_tasks(pm, inputs[role], config.eval_batch_size, device,
                                    autocast_dtype(config.amp, device))  # fmt: skip
            for task, score in scores.items():
                entry.update({f"{role}/{task}/{k}": v for k, v in score.values.items()})
    top1 = {role: entry.get(f"{role}/top1") for role in ("val", "test")}
    return TrainResult(
        test_top1=top1["test"], test_loss=None, val_top1=top1["val"], val_loss=None,
        best_val_top1=None, best_val_epoch=None, best_test_top1=None, best_test_epoch=None,
        trainable=pm.summary().as_dict(), wall_s=time.perf_counter() - t0, epochs=0,
        history=[entry],
    )  # fmt: skip


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
    if not spec.get("evaluate_only") and not any(p.requires_grad for p in pm.parameters()):
        raise NotApplicable(
            f"{spec['method']} leaves nothing to train on {spec['backbone']} (e.g. linear on "
            "CLIP, whose classifier is its text tower); evaluate_only scores it as installed"
        )
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

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    resume = (work_dir / CHECKPOINT_NAME).is_file()
    with epoch_callback(log, work_dir, run_name, {"spec": spec}) as on_epoch_end:
        if spec.get("evaluate_only"):  # nothing trains (zero-shot CLIP): score the model as built
            result = evaluate_only(pm, inputs, config)
        else:
            result = train(
                pm,
                inputs["train"],
                inputs.get("val"),
                inputs.get("test"),
                config,
                resume=resume,
                on_epoch_end=on_epoch_end,
            )
    last = result.history[-1] if result.history else {}
    scored = "test" if "test" in inputs else "val"
    extra: dict[str, Any] = {}
    if data.kind in DENSE_KINDS:
        extra = _dense_metrics(pm, last, scored)
    elif data.kind in VL_KINDS:
        extra = _vl_metrics(pm, spec, model, data, last, scored, config)
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
            "train_step_per_image": round(int(step.train_step) / built.batch),
            "forward_per_image": round(int(step.forward) / built.batch),
            "train_total": round(int(step.train_step) / built.batch) * n_train * config.epochs,
            "train_images": n_train,
            "batch": built.batch,
            "forward_batch": int(step.forward),
            "note": "PyTorch FLOP counter, 2 FLOPs per multiply-accumulate, on a batch of the "
            "first `batch` training samples (default one), per sample: divided by `batch` "
            "(one sample: an image, an image + text, or an NLVR2 pair)",
        },
        "memory": {
            **dataclasses.asdict(memory),
            "total": memory.total,
            "cuda_max_allocated": (
                torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
            ),
            "batch": built.batch,
            "note": "one AdamW step on `batch` samples (default one): weights + grads + optimizer "
            "+ saved activations",
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
