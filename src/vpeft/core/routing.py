"""Mixed-adapter batches: each sample runs with its own task's (named adapter's) copies in ONE
pass through the shared frozen backbone.

While `TaskState.routing` holds a `Routing`, every `TaskSwitch` splits its call by sample:

- when an argument carries the batch on its leading axis (B rows, or B·k rows laid out
  sample-major, e.g. Swin windows), each task's copy runs on its own rows and the outputs are
  scattered back (LoRA / bottleneck adapters / SSF: the cost of the adapters is that of one
  batch, whatever the mix);
- otherwise (prompt tokens asked for by batch size, prefix keys/values shared by a batch) each
  present task's copy runs once and its output rows (or its single broadcast row) are gathered
  per sample.

A neutral copy (``neutral = "zero"`` for an added branch, ``"identity"`` for a module applied
to the output; see `vpeft.adapters`) is not run: its rows are zeros or the input rows.

Per-task copies of frozen backbone parameters (BitFit, norm tuning) are routed the same way:
each module owning such a parameter runs its forward once per present task, on that task's
rows, with that task's copies in its parameter slots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .task_params import TaskParameterCopies
from .task_switch import TaskState


class Routing:
    """Which rows of a batch of `len(names)` samples belong to which task."""

    def __init__(self, names: Sequence[str], device: torch.device) -> None:
        self.batch = len(names)
        order: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            order.setdefault(name, []).append(i)
        self.groups = {
            t: torch.tensor(rows, dtype=torch.long, device=device) for t, rows in order.items()
        }

    def rows(self, n: int) -> dict[str, torch.Tensor] | None:
        """Row indices per task for a leading axis of `n` = B·k (sample-major), else None."""
        if n <= 0 or n % self.batch:
            return None
        k = n // self.batch
        if k == 1:
            return self.groups
        step = torch.arange(k, device=next(iter(self.groups.values())).device)
        return {t: (idx.unsqueeze(1) * k + step).flatten() for t, idx in self.groups.items()}

    def run(
        self,
        state: TaskState,
        fns: Mapping[str, Callable[..., Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Call ``fns[task]`` for each task present in the batch and assemble the result."""
        lead = _leading(args, kwargs)
        rows = self.rows(lead) if lead is not None else None
        if rows is not None:
            return self._split(state, fns, args, kwargs, lead, rows)
        return self._gather(state, fns, args, kwargs)

    def _split(self, state, fns, args, kwargs, n, rows) -> Any:
        out: Any = None
        neutral: list[tuple[str, torch.Tensor]] = []
        for task, idx in rows.items():
            fn = fns[task]
            kind = getattr(fn, "neutral", None)
            if kind is not None:
                neutral.append((kind, idx))
                continue
            sub_args = tuple(_take(a, n, idx) for a in args)
            sub_kwargs = {k: _take(v, n, idx) for k, v in kwargs.items()}
            with state.active(task):
                y = fn(*sub_args, **sub_kwargs)
            out = _scatter(out, y, idx, n)
        if out is None:  # only neutral copies in this batch: one of them, on the whole batch
            task = next(iter(rows))
            with state.active(task):
                return fns[task](*args, **kwargs)
        for kind, idx in neutral:
            if kind == "identity":
                out = _scatter(out, _take(_first_tensor(args, kwargs), n, idx), idx, n)
            # "zero": rows stay zero (the output was allocated as zeros)
        return out

    def _gather(self, state, fns, args, kwargs) -> Any:
        out: Any = None
        for task, idx in self.groups.items():
            fn = fns[task]
            if getattr(fn, "neutral", None) is not None:
                raise ConfigError(
                    "a mixed batch reached a module without per-sample input whose copy for "
                    f"adapter {task!r} is neutral; such methods (prompts, prefix) must be used "
                    "by every adapter of the model"
                )
            with state.active(task):
                y = fn(*args, **kwargs)
            out = _scatter(out, _rows_of(y, idx, self.batch), idx, self.batch)
        return out


def _leading(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    t = _first_tensor(args, kwargs)
    return t.shape[0] if t is not None and t.dim() > 0 else None


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    return None


def _take(value: Any, n: int, idx: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value.index_select(0, idx)
    return value


def _rows_of(y: Any, idx: torch.Tensor, batch: int) -> Any:
    """The rows `idx` of an output with a leading axis of B (or 1: broadcast to every row)."""
    if isinstance(y, tuple):
        return tuple(_rows_of(v, idx, batch) for v in y)
    if y.shape[0] == 1:
        return y.expand(len(idx), *y.shape[1:])
    if y.shape[0] != batch:
        raise ConfigError(
            f"cannot route an output with leading axis {y.shape[0]} for a batch of {batch}; "
            "this method does not support mixed-adapter batches on this backbone"
        )
    return y.index_select(0, idx)


def _scatter(out: Any, y: Any, idx: torch.Tensor, n: int) -> Any:
    """`out` (allocated as zeros of n rows on first use) with rows `idx` set to `y`."""
    if isinstance(y, tuple):
        base = out if out is not None else (None,) * len(y)
        return tuple(_scatter(o, v, idx, n) for o, v in zip(base, y, strict=True))
    if out is None:
        out = y.new_zeros((n, *y.shape[1:]))
    return out.index_copy(0, idx, y.to(out.dtype))


@contextmanager
def routed(
    state: TaskState, routing: Routing, copies: TaskParameterCopies | None, model: nn.Module
) -> Iterator[None]:
    """Route `state`'s switches and the owners of per-task parameter copies by `routing`."""
    patched = (
        _patch_owners(state, routing, copies, model) if copies is not None and len(copies) else []
    )
    previous, state.routing = state.routing, routing
    try:
        yield
    finally:
        state.routing = previous
        for module in patched:
            del module.forward


def _patch_owners(
    state: TaskState, routing: Routing, copies: TaskParameterCopies, model: nn.Module
) -> list[nn.Module]:
    owners: dict[int, tuple[nn.Module, list[tuple[str, int]]]] = {}
    for i, slots in enumerate(copies.slots(model)):
        for module, leaf in slots:
            owners.setdefault(id(module), (module, []))[1].append((leaf, i))
    patched = []
    for module, leaves in owners.values():
        if any(True for _ in module.children()):
            raise ConfigError(
                f"mixed batches route per-adapter copies of parameters of leaf modules (biases, "
                f"norms); {type(module).__name__} owns one and has submodules"
            )
        plain = type(module).forward.__get__(module)
        fns = {t: _with_params(module, plain, leaves, copies.tasks[t]) for t in routing.groups}
        module.forward = _router(state, routing, fns)
        patched.append(module)
    return patched


def _with_params(
    module: nn.Module, plain: Callable[..., Any], leaves, task_copies
) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        saved = {leaf: module._parameters[leaf] for leaf, _ in leaves}
        try:
            for leaf, i in leaves:
                module._parameters[leaf] = task_copies[i]
            return plain(*args, **kwargs)
        finally:
            module._parameters.update(saved)

    return run


def _router(
    state: TaskState, routing: Routing, fns: Mapping[str, Callable[..., Any]]
) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return routing.run(state, fns, args, kwargs)

    return forward
