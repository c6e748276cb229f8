"""Top-1 accuracy and mean cross-entropy of a classifier on a dataset (all processes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Data | Source,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    dist: DistInfo | None = None,
    num_workers: int = 0,
) -> EvalResult:
    """Evaluate `model` (in eval mode, restored afterwards) on `data`.

    With several processes each evaluates a strided shard; correct counts and loss sums are
    summed over processes, so the result is the same as one process's (loss up to float
    summation order).
    """
    info = dist or DistInfo()
    source = data if isinstance(data, TensorSource | DatasetSource) else as_source(data)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count
    try:
        shards = eval_shard(len(source), batch_size, info.rank, info.world)
        for batch in source.batches(shards, num_workers=num_workers):
            if batch is None:
                continue
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            with autocast(device, amp_dtype):
                logits = model(x)
            logits = logits.float()
            sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
            sums[1] += (logits.argmax(dim=-1) == y).sum()
            sums[2] += len(y)
    finally:
        model.train(was_training)
    all_reduce_sum(sums, info)
    loss, correct, count = sums.tolist()
    count = int(count)
    return EvalResult(
        top1=100.0 * correct / max(count, 1),
        loss=loss / max(count, 1),
        correct=int(correct),
        count=count,
    )
