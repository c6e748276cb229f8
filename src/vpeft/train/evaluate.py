"""Evaluation: every task's streaming metrics on a dataset (all processes), and the top-1 /
cross-entropy summary of a single-task classifier."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..tasks import Metric, Task
from .batches import as_fields, model_inputs, model_tasks, run_model, targets, to_device
from .device import autocast
from .distributed import DistInfo, all_reduce_sum
from .inputs import Data, DatasetSource, Source, TensorSource, as_source
from .sampling import eval_shard


@dataclass(frozen=True)
class EvalResult:
    """Top-1 accuracy in percent, mean cross-entropy, and the counts behind them."""

    top1: float
    loss: float
    correct: int
    count: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class TaskScores:
    """One task's metric values, and the summed metric states they come from."""

    values: dict[str, float]
    states: list[torch.Tensor]


@torch.no_grad()
def evaluate_tasks(
    model: nn.Module,
    data: Data | Source,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    dist: DistInfo | None = None,
    num_workers: int = 0,
    tasks: dict[str, Task] | None = None,
) -> dict[str, TaskScores]:
    """Every task's metrics on `data` (model in eval mode, restored afterwards).

    With several processes each evaluates a strided shard and the metric states are summed over
    processes, so the result equals one process's (up to float summation order).
    """
    info = dist or DistInfo()
    source = data if isinstance(data, TensorSource | DatasetSource) else as_source(data)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    tasks = tasks if tasks is not None else model_tasks(model)
    metrics: dict[str, list[Metric]] = {name: task.metrics() for name, task in tasks.items()}
    was_training = model.training
    model.eval()
    try:
        shards = eval_shard(len(source), batch_size, info.rank, info.world)
        for batch in source.batches(shards, num_workers=num_workers):
            if batch is None:
                continue
            fields = to_device(as_fields(batch), device)
            with autocast(device, amp_dtype):
                outputs = run_model(model, model_inputs(fields, tasks), tasks)
            wanted = targets(fields, tasks)
            for name, task_metrics in metrics.items():
                output = _float(outputs[name])
                for metric in task_metrics:
                    metric.update(output, wanted[name])
    finally:
        model.train(was_training)
    return {name: _reduce(task_metrics, device, info) for name, task_metrics in metrics.items()}


def _float(output: Any) -> Any:
    return output.float() if torch.is_tensor(output) else output


def _reduce(metrics: list[Metric], device: torch.device, info: DistInfo) -> TaskScores:
    states = [m.state().to(device, torch.float64) for m in metrics]
    sizes = [len(s) for s in states]
    flat = torch.cat(states) if states else torch.zeros(0, dtype=torch.float64, device=device)
    all_reduce_sum(flat, info)
    summed = list(flat.cpu().split(sizes))
    values: dict[str, float] = {}
    for metric, state in zip(metrics, summed, strict=True):
        values.update(metric.compute(state))
    return TaskScores(values, summed)


def evaluate(
    model: nn.Module,
    data: Data | Source,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    dist: DistInfo | None = None,
    num_workers: int = 0,
) -> EvalResult:
    """Top-1 and mean cross-entropy of a single-task classifier on `data`."""
    tasks = model_tasks(model)
    if len(tasks) != 1:
        raise ValueError("evaluate() scores single-task classifiers; use evaluate_tasks()")
    scores = next(
        iter(
            evaluate_tasks(
                model, data, batch_size, device, amp_dtype, dist, num_workers, tasks
            ).values()
        )
    )
    loss, correct, count = scores.states[0].tolist()
    count = int(count)
    return EvalResult(
        top1=100.0 * correct / max(count, 1),
        loss=loss / max(count, 1),
        correct=int(correct),
        count=count,
    )


__all__ = ["EvalResult", "TaskScores", "evaluate", "evaluate_tasks"]
