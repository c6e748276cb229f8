"""Batches as named fields, and what the model and each task read from them.

A batch from a source is either an ``(images, labels)`` pair — the single-task classification
fast path — or a dict of fields (``pixel_values``, ``input_ids``, ``attention_mask``, one
target field per task, ...). Everything downstream sees the dict form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import DatasetError
from ..tasks import ClassificationTask, Task

#: the single task of a model that is not a `PeftModel` (a plain classifier)
PLAIN_TASK = "main"


def as_fields(batch: Any) -> dict[str, Any]:
    """The dict form of a batch (pairs become ``pixel_values`` / ``labels``)."""
    if isinstance(batch, Mapping):
        return dict(batch)
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return {"pixel_values": batch[0], "labels": batch[1]}
    raise DatasetError(
        f"a batch must be an (images, labels) pair or a dict of fields, got {type(batch).__name__}"
    )


def to_device(value: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to `device` without blocking the host."""
    if torch.is_tensor(value):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(to_device(v, device) for v in value)
    return value


def model_tasks(model: nn.Module, label_smoothing: float = 0.0) -> dict[str, Task]:
    """The tasks a model is trained on: a `PeftModel`'s own, or one classification task for a
    plain classifier. A positive `label_smoothing` (the trainer's option) applies to every
    classification task that sets none itself."""
    tasks: dict[str, Task] | None = getattr(model, "tasks", None)
    if tasks is None:
        classes = int(getattr(model, "num_classes", 0) or 1)
        tasks = {PLAIN_TASK: ClassificationTask(PLAIN_TASK, num_classes=classes)}
    if label_smoothing <= 0:
        return dict(tasks)
    return {
        name: (
            _with_smoothing(task, label_smoothing)
            if isinstance(task, ClassificationTask) and task.label_smoothing == 0
            else task
        )
        for name, task in tasks.items()
    }


def _with_smoothing(task: ClassificationTask, value: float) -> ClassificationTask:
    import dataclasses

    return dataclasses.replace(task, label_smoothing=value)


def model_inputs(fields: dict[str, Any], tasks: Mapping[str, Task]) -> Any:
    """What the model is called with: the image tensor when every task reads only
    ``pixel_values`` (timm backbones), else the dict of every field some task reads."""
    names = sorted({f for task in tasks.values() for f in task.input_fields})
    missing = [n for n in names if n not in fields]
    if missing:
        raise DatasetError(
            f"the batch lacks field(s) {missing} that the tasks read; it has {sorted(fields)}"
        )
    if names == ["pixel_values"]:
        return fields["pixel_values"]
    return {n: fields[n] for n in names}


def targets(fields: dict[str, Any], tasks: Mapping[str, Task]) -> dict[str, Any]:
    """Each task's target, from its ``target_field``."""
    out = {}
    for name, task in tasks.items():
        if task.target_field not in fields:
            raise DatasetError(
                f"task {name!r} reads the target field {task.target_field!r}; the batch has "
                f"{sorted(fields)}"
            )
        out[name] = fields[task.target_field]
    return out


def run_model(model: nn.Module, inputs: Any, tasks: Mapping[str, Task]) -> dict[str, Any]:
    """Every task's output (one call of a `PeftModel`, or the plain model's logits)."""
    forward_tasks = getattr(model, "forward_tasks", None)
    if callable(forward_tasks):
        return forward_tasks(inputs, list(tasks))
    return {PLAIN_TASK: model(inputs)}
