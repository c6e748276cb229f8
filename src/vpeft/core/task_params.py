"""Per-task copies of frozen backbone parameters (selective methods installed per task).

`bitfit`, `norm`, `partial-k`, `full`, ... train parameters the backbone already has. Installed
per task, each task gets its own copy of each such parameter (the paper's "single-task BitFit ×
tasks"); the frozen original is never changed, and the active task's copies replace it during
that task's forward (`torch.func.functional_call`). Copies start equal to the original, so every
task starts from the pretrained model.

Where the originals sit in the model (their owners' parameter slots) is found by a scan of the
model's modules, cached until the model's structure may have changed (`structure_generation`)
or a cached slot no longer holds its original.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from .structure import Slot, structure_generation


class TaskParameterCopies(nn.Module):
    """``tasks.<task>.<i>``: task `task`'s copy of the i-th registered backbone parameter."""

    def __init__(self, tasks: tuple[str, ...]) -> None:
        super().__init__()
        self.tasks = nn.ModuleDict({t: nn.ParameterList() for t in tasks})
        self._originals: list[nn.Parameter] = []
        #: (model, structure generation, originals count, slots of each original) or None
        self._slot_cache: tuple[nn.Module, int, int, list[list[Slot]]] | None = None

    def __len__(self) -> int:
        return len(self._originals)

    def add(self, original: nn.Parameter) -> list[nn.Parameter]:
        """Register `original`; returns the new per-task copies (one per task, same values)."""
        if any(o is original for o in self._originals):
            return [copies[self._index(original)] for copies in self.tasks.values()]
        self._originals.append(original)
        made = []
        for copies in self.tasks.values():
            copy = nn.Parameter(original.detach().clone(), requires_grad=True)
            copies.append(copy)
            made.append(copy)
        return made

    def _index(self, original: nn.Parameter) -> int:
        return next(i for i, o in enumerate(self._originals) if o is original)

    def originals(self) -> list[nn.Parameter]:
        return list(self._originals)

    def original_of(self) -> dict[int, nn.Parameter]:
        """id(copy) -> the backbone parameter it copies, for every task's copies."""
        return {
            id(copy): original
            for copies in self.tasks.values()
            for copy, original in zip(copies, self._originals, strict=True)
        }

    def slots(self, model: nn.Module) -> list[list[Slot]]:
        """For each original (in order), the (module, parameter name) slots inside `model` that
        hold it; cached while `model`'s structure is unchanged and every cached slot still holds
        its original."""
        cache = self._slot_cache
        if (
            cache is not None
            and cache[0] is model
            and cache[1] == structure_generation()
            and cache[2] == len(self._originals)
            and all(
                module._parameters.get(leaf) is original
                for original, slots in zip(self._originals, cache[3], strict=True)
                for module, leaf in slots
            )
        ):
            return cache[3]
        generation = structure_generation()
        found: dict[int, list[Slot]] = {}
        for module in model.modules():
            for leaf, param in module._parameters.items():
                if param is not None:
                    found.setdefault(id(param), []).append((module, leaf))
        slots = [found.get(id(original), []) for original in self._originals]
        self._slot_cache = (model, generation, len(self._originals), slots)
        return slots

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {**state, "_slot_cache": None}  # holds modules of the model; not a copy's

    @contextmanager
    def swapped_in(self, model: nn.Module, task: str) -> Iterator[None]:
        """Run the body with `task`'s copies in place of the originals inside `model`.

        The copies are put into the owning modules' parameter slots and the originals put back
        afterwards (also on error), so gradients reach the copies and never the frozen originals.
        """
        copies = self.tasks[task]
        swapped = []
        try:
            for i, (original, slots) in enumerate(
                zip(self._originals, self.slots(model), strict=True)
            ):
                for module, leaf in slots:
                    module._parameters[leaf] = copies[i]
                    swapped.append((module, leaf, original))
            yield
        finally:
            for module, leaf, original in swapped:
                module._parameters[leaf] = original
