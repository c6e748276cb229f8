"""Which samples go into which step, micro-batch and process — fixed by one seeded generator.

Every process draws the same permutation of the training set each epoch from a generator seeded
with the run's seed. Step ``s`` takes the global batch ``order[s·B : (s+1)·B]`` (the last one may
be smaller); process ``r`` of ``W`` takes every W-th sample of it (``batch[r::W]``, the stride
`DistributedSampler` uses, applied per batch so that the global batch is exactly the one a
single process would see); its share is split into ``grad_accum_steps`` consecutive micro-batches.
Micro-batches may be empty when a final batch has fewer samples than ``W × grad_accum_steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepPlan:
    """The micro-batches (dataset indices) one process runs for one optimiser step."""

    micro_batches: tuple[torch.Tensor, ...]
    global_count: int  # samples in the global batch (all processes): the loss divisor


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Optimiser steps per epoch (the final partial batch is kept)."""
    return math.ceil(num_samples / batch_size)


def epoch_order(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """A permutation of ``range(num_samples)``; advances `generator`."""
    return torch.randperm(num_samples, generator=generator)


def plan_epoch(
    order: torch.Tensor, batch_size: int, rank: int = 0, world: int = 1, accum_steps: int = 1
) -> list[StepPlan]:
    """Split one epoch's `order` into per-step plans for process `rank` of `world`."""
    plans = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        local = batch[rank::world]
        plans.append(StepPlan(tuple(torch.tensor_split(local, accum_steps)), len(batch)))
    return plans


def eval_shard(
    num_samples: int, batch_size: int, rank: int = 0, world: int = 1
) -> list[torch.Tensor]:
    """Evaluation batches (in dataset order) of process `rank`: samples ``rank, rank+W, …``."""
    mine = torch.arange(rank, num_samples, world)
    return list(torch.split(mine, batch_size)) if len(mine) else []
