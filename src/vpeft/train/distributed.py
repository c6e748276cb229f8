"""Multi-process data-parallel training with torch.distributed, launched by ``torchrun``.

``torchrun --nproc_per_node N -m vpeft.cli.main train …`` (or ``torchrun … script.py``) sets
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; `setup` then joins the process group (NCCL on GPUs,
gloo on CPU). Every process holds the full model; each step, process ``r`` runs its share of the
global batch (see `sampling`), and after the last micro-batch the trainable gradients are summed
across processes with one bucketed all-reduce. The per-process loss is divided by the *global*
batch size, so the summed gradient equals the single-process gradient of the mean loss — the same
mathematics as `DistributedDataParallel`, done explicitly because PETL's trainable set is tiny
(one small all-reduce per step) and because it stays correct when a process has an empty share
or a method leaves a trainable tensor unused in a step. Only rank 0 writes files; metrics are
summed over processes before they are reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when `setup` created the process group

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment, if any."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _local_rank(), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(_local_rank())
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), _local_rank(), True)


def teardown(info: DistInfo) -> None:
    """Leave the process group if `setup` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `values` over processes (in place; a no-op for one process)."""
    if info.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def sync_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Sum the gradients of `params` over processes with one bucketed all-reduce.

    A parameter no process produced a gradient for keeps ``grad=None`` (as in one process), so
    optimisers skip it identically everywhere.
    """
    if not info.enabled or not params:
        return
    ref = params[0]
    present = torch.tensor([float(p.grad is not None) for p in params], device=ref.device)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    dtypes = {g.dtype for g in grads}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    flat = torch.cat([g.reshape(-1).to(dtype) for g in grads] + [present.to(dtype)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    sizes = [p.numel() for p in params]
    chunks = torch.split(flat[: sum(sizes)], sizes)
    for p, chunk, used in zip(params, chunks, flat[sum(sizes) :].tolist(), strict=True):
        p.grad = chunk.view_as(p).to(p.dtype).clone() if used > 0 else None


def broadcast_parameters(params: list[torch.Tensor], info: DistInfo) -> None:
    """Copy rank 0's values of `params` to every process (identical start)."""
    if info.enabled:
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
