"""SPT stage 1: task-specific parameter sensitivity (He et al., ICCV 2023, §3.1).

Tuning a single parameter w_n by one gradient step changes the loss, to first order, by
ε·(∂L/∂w_n)²; the learning rate ε does not change the ranking, so the sensitivity is

    s_n = Σ_batches (∂ mean_CE(batch) / ∂w_n)²                       (spec/spt.md, stage 1)

accumulated over a fixed, ordered subset of C training samples (default 512 = 16 batches of 32)
with a freshly initialised head, plain cross-entropy and fp32. `per_sample=True` sums per-sample
squared gradients instead (one forward/backward per image; slower).

Any task's loss (``task=``, a `vpeft.tasks.Task`): the batch is then a dict (or an (inputs,
target) pair), a fresh head of that task (seeded, e.g. the SETR-PUP decoder of ADE20K
segmentation) reads the backbone features it names (feature maps for dense tasks), and the
loss is the task's own mean per-sample loss ``task.loss(...)[0] / n`` — so SPT allocates from a
segmentation model's sensitivity (spec/spt.md: "dense tasks (ADE20K segmentation)").

Cost: one forward + backward per batch. Memory: one fp32 accumulator per candidate parameter —
each gradient is squared into its accumulator by a post-accumulate hook and freed at once, and
only candidate parameters (see `candidates.py`) require a gradient at all.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ...backbones import describe
from ...errors import AdapterFileError, ConfigError
from ...io import read_safetensors, write_safetensors
from .candidates import Candidates, Unit, find_candidates

Batch = tuple[torch.Tensor, torch.Tensor]
FILE_KIND = "spt-sensitivity"

#: The random-data fallback (used when no task data is given, e.g. by `vpeft params`).
RANDOM_BATCHES = 4
RANDOM_BATCH_SIZE = 2
RANDOM_IMG_SIZE = 64


@dataclass
class Sensitivity:
    """Per-parameter sensitivity scores (canonical parameter name -> tensor of its shape)."""

    scores: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def unit_scores(self, unit: Unit) -> torch.Tensor:
        """The flat scores of one logical unit (its rows of the parameter)."""
        scores = self.scores[unit.param]
        if unit.rows is not None:
            scores = scores[unit.rows[0] : unit.rows[1]]
        return scores.reshape(-1)

    def check_matches(self, candidates: Candidates) -> None:
        """Raise `ConfigError` unless these scores cover exactly the candidates' parameters."""
        missing = [n for n in candidates.params if n not in self.scores]
        wrong = [
            n
            for n, p in candidates.params.items()
            if n in self.scores and tuple(self.scores[n].shape) != tuple(p.shape)
        ]
        if missing or wrong:
            raise ConfigError(
                f"the sensitivity scores do not fit this backbone (missing {missing[:3]}, "
                f"shape mismatch {wrong[:3]}); compute them with `vpeft sensitivity` on the same "
                f"backbone architecture (scores were computed on {self.meta.get('backbone')})"
            )

    def save(self, path: str | Path) -> None:
        write_safetensors(path, self.scores, {"kind": FILE_KIND, "sensitivity": self.meta})

    @classmethod
    def load(cls, path: str | Path) -> Sensitivity:
        tensors, meta = read_safetensors(path)
        if meta.get("kind") != FILE_KIND:
            raise AdapterFileError(
                f"{path} is not an SPT sensitivity file (kind {meta.get('kind')!r}); create one "
                "with `vpeft sensitivity --backbone … --data … --out FILE`"
            )
        return cls({k: v.float() for k, v in tensors.items()}, dict(meta.get("sensitivity", {})))


def sensitivity_batches(
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    samples: int = 512,
    batch_size: int = 32,
    seed: int | None = None,
) -> list[Batch] | Iterator[Batch]:
    """Batches of the first `samples` items of `data` in its order (the reference protocol), or
    of a fixed seeded random subset when `seed` is given. `data` is a map-style dataset of
    (image, label) items or an (images, labels) pair of tensors."""
    if samples < 1 or batch_size < 1:
        raise ConfigError(f"samples and batch size must be >= 1, got {samples} and {batch_size}")
    size = len(data[1]) if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]
    if size == 0:
        raise ConfigError("the sensitivity data set is empty")
    count = min(samples, size)
    if seed is None:
        index = torch.arange(count)
    else:
        index = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:count]
    if isinstance(data, tuple):
        images, labels = data
        return [
            (images[index[i : i + batch_size]], labels[index[i : i + batch_size]])
            for i in range(0, count, batch_size)
        ]
    subset = Subset(data, index.tolist())
    return iter(DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0))


def _prepare(
    model: nn.Module, num_classes: int | None, head_seed: int, copy_model: bool
) -> tuple[nn.Module, Candidates]:
    work = copy.deepcopy(model) if copy_model else model
    spec = describe(work)
    device = _device(work)
    if num_classes is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(head_seed)
            work.reset_classifier(num_classes)
    work.to(device=device, dtype=torch.float32)
    candidates = find_candidates(work, spec)
    work.requires_grad_(False)
    for p in candidates.params.values():
        p.requires_grad_(True)
    return work, candidates


def _task_loss(work: nn.Module, task: Any, head_seed: int) -> Any:
    """``fn(batch) -> mean loss`` of `task` on the backbone `work` with a fresh seeded head."""
    from ...model import _FEATURES, feature_info

    spec = describe(work)
    if task.features not in _FEATURES:
        raise ConfigError(f"task {task.name}: its features {task.features!r} need a PEFT model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(head_seed)
        head = task.build_head(feature_info(spec))
    head.to(device=_device(work), dtype=torch.float32)
    head.requires_grad_(False)
    features = _FEATURES[task.features]

    def loss(batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        if isinstance(batch, dict):
            inputs = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
            target = inputs.pop(task.target_field)
        else:
            inputs, target = batch[0].to(device), batch[1].to(device)
        if isinstance(inputs, dict) and "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].float()
        head.train(work.training)
        out = task.run_head(head, features(spec, inputs), inputs)
        total, n = task.loss(out, target)
        return total / max(n, 1), n

    return loss


def compute_sensitivity(
    model: nn.Module,
    batches: Iterable[Batch],
    num_classes: int | None = None,
    *,
    task: Any = None,
    train_mode: bool = False,
    per_sample: bool = False,
    head_seed: int = 0,
    copy_model: bool = True,
    source: str = "data",
    progress: bool = False,
) -> Sensitivity:
    """Σ_batches (∇ mean CE)² for every candidate parameter of a timm backbone `model`.

    `num_classes`: attach a fresh head (seeded by `head_seed`), as SPT does before tuning; None
    keeps the model's own head. `train_mode`: run in train mode (dropout / drop-path active, as
    the reference does with drop-path 0.1); default eval mode, for deterministic scores.
    `copy_model=False` works on `model` itself (saves memory; leaves it with a new head and
    gradients enabled on the candidates). `task`: score with that task's loss and a fresh head
    of it instead (`num_classes` must then be None; batches are dicts with the task's fields,
    or (inputs, target) pairs); `per_sample` is not supported with it.
    """
    if task is not None and (num_classes is not None or per_sample):
        raise ConfigError("task= sensitivity takes neither num_classes nor per_sample")
    work, candidates = _prepare(model, num_classes, head_seed, copy_model)
    task_loss = _task_loss(work, task, head_seed) if task is not None else None
    work.train(train_mode)
    device = next(iter(candidates.params.values())).device
    accumulators = {
        n: torch.zeros_like(p, dtype=torch.float32) for n, p in candidates.params.items()
    }

    def hook_for(acc: torch.Tensor):
        def square_into(p: torch.Tensor) -> None:
            acc.addcmul_(p.grad, p.grad)
            p.grad = None

        return square_into

    handles = [
        p.register_post_accumulate_grad_hook(hook_for(accumulators[n]))
        for n, p in candidates.params.items()
    ]
    samples = n_batches = 0
    try:
        iterator: Iterable[Batch] = batches
        if progress:
            from tqdm import tqdm

            iterator = tqdm(batches, desc="sensitivity", unit="batch")
        for batch in iterator:
            if task_loss is not None:
                value, n = task_loss(batch, device)
                value.backward()
                samples += n
                n_batches += 1
                continue
            images, labels = batch
            images, labels = images.to(device, torch.float32), labels.to(device)
            groups = images.split(1) if per_sample else (images,)
            targets = labels.split(1) if per_sample else (labels,)
            for x, y in zip(groups, targets, strict=True):
                F.cross_entropy(work(x).float(), y).backward()
            samples += len(labels)
            n_batches += 1
    finally:
        for handle in handles:
            handle.remove()
    if n_batches == 0:
        raise ConfigError("no batches were given to the sensitivity pass")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    meta = {
        "source": source,
        "samples": samples,
        "batches": n_batches,
        "per_sample": per_sample,
        "train_mode": train_mode,
        "num_classes": num_classes,
        "loss": "cross-entropy" if task is None else f"task {task.kind}:{task.name}",
        "backbone": cfg.get("architecture", type(model).__name__),
        "candidates": candidates.numel,
    }
    return Sensitivity({n: a.cpu() for n, a in accumulators.items()}, meta)


def _small_input_copy(model: nn.Module, img_size: int) -> tuple[nn.Module, tuple[int, int]]:
    """A copy of `model` taking `img_size` inputs when that leaves every candidate unchanged
    (ViT: position embedding resampled — not a candidate; ConvNeXt: any size), else the native
    input size."""
    work = copy.deepcopy(model)
    native = _native_size(model)
    if img_size <= 0 or (img_size, img_size) == native:
        return work, native
    shapes = {n: p.shape for n, p in find_candidates(work, describe(work)).params.items()}
    setter = getattr(work, "set_input_size", None)
    try:
        if callable(setter):
            setter(img_size=(img_size, img_size))
        with torch.no_grad():
            work.eval()(torch.zeros(1, 3, img_size, img_size, device=_device(work)))
    except (AssertionError, RuntimeError, ValueError, TypeError):
        return copy.deepcopy(model), native
    after = {n: p.shape for n, p in find_candidates(work, describe(work)).params.items()}
    if after != shapes:
        return copy.deepcopy(model), native
    return work, (img_size, img_size)


def _native_size(model: nn.Module) -> tuple[int, int]:
    patch_embed = getattr(model, "patch_embed", None)
    size = getattr(patch_embed, "img_size", None)
    if size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = tuple(cfg.get("input_size", (3, 224, 224)))[-2:]
    if isinstance(size, int):
        size = (size, size)
    return int(size[0]), int(size[1])


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters())).device


def random_sensitivity(
    model: nn.Module,
    num_classes: int,
    batches: int = RANDOM_BATCHES,
    batch_size: int = RANDOM_BATCH_SIZE,
    img_size: int = RANDOM_IMG_SIZE,
    seed: int = 0,
) -> Sensitivity:
    """Sensitivity on seeded random images and labels — a stand-in when no task data exists
    (e.g. for `vpeft params`); the parameter count of the resulting plan is meaningful, its
    positions are not task-specific. Runs at `img_size` when the backbone allows it without
    changing any candidate tensor (0 = the native size)."""
    work, (h, w) = _small_input_copy(model, img_size)
    g = torch.Generator().manual_seed(seed)
    device = _device(work)
    data = [
        (
            torch.randn(batch_size, 3, h, w, generator=g).to(device),
            torch.randint(0, num_classes, (batch_size,), generator=g).to(device),
        )
        for _ in range(batches)
    ]
    result = compute_sensitivity(
        work, data, num_classes, head_seed=seed, copy_model=False, source="random-data"
    )
    result.meta.update(img_size=[h, w], seed=seed)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    result.meta["backbone"] = cfg.get("architecture", type(model).__name__)
    return result
