"""Per-task copies of a method's modules (design.md, layer 4: "installed per task").

Dense multi-task papers train every single-task method as one copy per task on one frozen
backbone. `TaskSwitch` holds those copies and runs the active task's one; `TaskState` is the one
object (owned by the `PeftModel`) that says which task is active. Hypernetwork methods read the
same `TaskState` to generate the active task's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


class TaskState:
    """The task whose modules run now (``None`` outside a task's forward)."""

    def __init__(self, tasks: tuple[str, ...]) -> None:
        self.tasks = tasks
        self.current: str | None = None
        #: per-sample routing of a mixed-adapter batch (`vpeft.core.routing.Routing`), or None
        self.routing: Any = None

    @contextmanager
    def active(self, task: str) -> Iterator[None]:
        """Run the body with `task` active (restores the previous one afterwards)."""
        if task not in self.tasks:
            raise ConfigError(f"unknown task {task!r}; the model's tasks are {list(self.tasks)}")
        previous, self.current = self.current, task
        routing, self.routing = self.routing, None  # inside one task's rows: no routing
        try:
            yield
        finally:
            self.current = previous
            self.routing = routing

    def require(self) -> str:
        """The active task; a clear error when a task-specific module runs outside a task."""
        if self.current is None:
            raise ConfigError(
                "a per-task module ran with no active task; call the PeftModel (or use "
                "`pm.task_state.active(name)`) instead of the bare backbone"
            )
        return self.current


class TaskSwitch(nn.Module):
    """One copy of a module per task; calls (and attribute reads) go to the active task's copy.

    Parameter names are ``copies.<task>.<name>``, so files hold each task's tensors apart.
    `factory` is kept so named adapters added later get a fresh copy (`add_copy`). While the
    state routes a mixed batch (`TaskState.routing`), each task's copy runs on its own rows.
    """

    def __init__(self, state: TaskState, factory: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.copies = nn.ModuleDict({task: factory() for task in state.tasks})
        object.__setattr__(self, "_state", state)  # a plain reference, not a submodule
        object.__setattr__(self, "factory", factory)

    def add_copy(self, task: str, module: nn.Module | None = None) -> nn.Module:
        """Register `module` (default: a fresh one from the factory) as `task`'s copy."""
        self.copies[task] = self.factory() if module is None else module
        return self.copies[task]

    @property
    def active_copy(self) -> nn.Module:
        return self.copies[self._state.require()]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        routing = self._state.routing
        if routing is not None:
            return routing.run(self._state, dict(self.copies.items()), args, kwargs)
        return self.active_copy(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            copies = self._modules.get("copies")
            if copies is None or name.startswith("_"):
                raise
            # sizes, dtypes and other constants are the same in every copy; a method belongs to
            # one task's copy, so with no active task (or while routing a mixed batch) methods
            # are absent: callers then take the generic path through `forward`, which routes
            # or raises the no-active-task error, never silently runs another task's copy
            state = self.__dict__["_state"]
            if state.current is not None and getattr(state, "routing", None) is None:
                return getattr(copies[state.current], name)
            value = getattr(next(iter(copies.values())), name)
            if callable(value) and not isinstance(value, torch.Tensor):
                raise AttributeError(
                    f"{name!r} belongs to one task's copy; no task is active"
                ) from None
            return value
