"""Per-task copies of frozen backbone parameters (selective methods installed per task).

`bitfit`, `norm`, `partial-k`, `full`, ... train parameters the backbone already has. Installed
per task, each task gets its own copy of each such parameter (the paper's "single-task BitFit ×
tasks"); the frozen original is never changed, and the active task's copies replace it during
that task's forward (`torch.func.functional_call`). Copies start equal to the original, so every
task starts from the pretrained model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


class TaskParameterCopies(nn.Module):
    """``tasks.<task>.<i>``: task `task`'s copy of the i-th registered backbone parameter."""

    def __init__(self, tasks: tuple[str, ...]) -> None:
        super().__init__()
        self.tasks = nn.ModuleDict({t: nn.ParameterList() for t in tasks})
        self._originals: list[nn.Parameter] = []

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

    @contextmanager
    def swapped_in(self, model: nn.Module, task: str) -> Iterator[None]:
        """Run the body with `task`'s copies in place of the originals inside `model`.

        The copies are put into the owning modules' parameter slots and the originals put back
        afterwards (also on error), so gradients reach the copies and never the frozen originals.
        """
        slots = {}
        for module in model.modules():
            for leaf, param in module._parameters.items():
                if param is not None:
                    slots.setdefault(id(param), []).append((module, leaf))
        copies = self.tasks[task]
        swapped = []
        try:
            for i, original in enumerate(self._originals):
                for module, leaf in slots.get(id(original), []):
                    module._parameters[leaf] = copies[i]
                    swapped.append((module, leaf, original))
            yield
        finally:
            for module, leaf, original in swapped:
                module._parameters[leaf] = original
