"""Training memory: activations saved for backward, plus parameter, gradient and optimiser bytes.

Activations are measured exactly and deterministically (also on CPU) with
`torch.autograd.graph.saved_tensors_hooks`: every tensor autograd keeps for the backward passes
through the pack hook. What stays in memory is the tensor's *storage*, so each distinct storage
is counted once, at its full size — a tensor saved by two ops, or q, k and v saved as views of
one fused qkv output, cost one storage. Storages of the model's parameters and buffers are not
activations (they are counted in `param_bytes`) and are excluded.

    training memory ≈ params + grads + optimiser states + saved activations

with grads = trainable bytes and AdamW holding two states (exp_avg, exp_avg_sq) per trainable
element. Allocator overhead, temporaries freed during the forward, and the backward's transient
buffers are not included; on a GPU, `torch.cuda.max_memory_allocated` gives the measured peak.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .flops import output_loss

#: AdamW keeps exp_avg and exp_avg_sq for every trainable element.
ADAMW_STATES = 2


def _storage_key(t: torch.Tensor) -> tuple[str, int] | None:
    """(device, address) of the storage behind `t`; None when it has no addressable storage."""
    try:
        storage = t.untyped_storage()
        return (str(t.device), storage.data_ptr())
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _storage_bytes(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError, TypeError):
        return t.numel() * t.element_size()


class SavedTensorCounter:
    """Context manager counting the bytes autograd saves for backward, one count per storage.

    Usage::

        with SavedTensorCounter(exclude=model.parameters()) as saved:
            loss = model(x).sum()
        saved.bytes   # activation bytes the backward of `loss` will need

    The counted tensors are kept referenced until the context exits so that a storage freed
    mid-forward cannot hand its address to a new one and be mistaken for it.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {k for t in exclude if (k := _storage_key(t)) is not None}
        self._sizes: dict[Any, int] = {}
        self._alive: list[torch.Tensor] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    @property
    def bytes(self) -> int:
        """Total bytes of the distinct storages saved so far."""
        return sum(self._sizes.values())

    @property
    def storages(self) -> int:
        """Number of distinct storages saved so far."""
        return len(self._sizes)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key is None:  # no addressable storage (e.g. a tensor subclass): count the tensor
            key = ("tensor", id(t))
        if key not in self._excluded and key not in self._sizes:
            self._sizes[key] = _storage_bytes(t)
            self._alive.append(t)
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def __enter__(self) -> SavedTensorCounter:
        self._sizes.clear()
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self._alive.clear()


def model_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers of `model` (the storages that are not activations)."""
    return [*model.parameters(), *model.buffers()]


def saved_activation_bytes(
    model: nn.Module,
    inputs: torch.Tensor,
    loss_fn: Callable[[Any], torch.Tensor] = output_loss,
) -> int:
    """Bytes autograd saves during `loss_fn(model(inputs))` for one backward (whole batch).

    Runs the forward only; the graph is freed on return. The input batch counts when a layer
    saves it (e.g. a trainable patch embedding), parameters and buffers never do.
    """
    with SavedTensorCounter(exclude=model_tensors(model)) as saved:
        loss_fn(model(inputs))
    return saved.bytes


@dataclass(frozen=True)
class StateBytes:
    """Bytes of the weights, of the gradients and of AdamW's states."""

    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int


def state_bytes(model: nn.Module, optimizer_states: int = ADAMW_STATES) -> StateBytes:
    """Parameter bytes (all, shared ones once), gradient and optimiser bytes (trainable only)."""
    params = list({id(p): p for p in model.parameters()}.values())
    total = sum(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    return StateBytes(total, trainable, optimizer_states * trainable)


@dataclass(frozen=True)
class TrainingMemory:
    """Estimated training memory of one step: weights + grads + optimiser + activations."""

    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    saved_activation_bytes: int

    @property
    def total(self) -> int:
        return (
            self.param_bytes + self.grad_bytes + self.optimizer_bytes + self.saved_activation_bytes
        )


def training_memory(
    model: nn.Module,
    inputs: torch.Tensor,
    loss_fn: Callable[[Any], torch.Tensor] = output_loss,
) -> TrainingMemory:
    """`TrainingMemory` of one AdamW step of `model` on `inputs` (run in the model's mode)."""
    states = state_bytes(model)
    activations = saved_activation_bytes(model, inputs, loss_fn)
    return TrainingMemory(
        states.param_bytes, states.grad_bytes, states.optimizer_bytes, activations
    )
