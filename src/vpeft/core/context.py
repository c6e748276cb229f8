"""What an installer receives: the model, its backbone description and trainable bookkeeping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..backbones import BackboneSpec
from ..errors import UnsupportedBackboneError
from .task_switch import TaskState, TaskSwitch

#: Parameter attribute read by the optimiser's weight-decay rule (`vpeft.train.optim`).
NO_DECAY_ATTR = "_vpeft_no_decay"


@dataclass
class InstallContext:
    """Handed to a method's installer. Installers mark what trains only through `train()`.

    Multi-task models: with ``per_task`` (one copy of the method per task), installers create
    their modules through `module(factory)`, which returns a `TaskSwitch` of copies, and
    `train()` on a frozen backbone parameter trains per-task copies of it (`copy_per_task`).
    With one task, or a method shared by all tasks, `module` returns the single module and
    nothing is copied — the same modules and names as a single-task model.
    """

    model: nn.Module
    spec: BackboneSpec
    method: str
    num_classes: int
    forward_override: nn.Module | None = None
    head: nn.Module | None = None
    trained: list[nn.Parameter] = field(default_factory=list)
    task_state: TaskState | None = None
    per_task: bool = False
    backbone_params: set[int] = field(default_factory=set)
    copy_per_task: Callable[[nn.Parameter], list[nn.Parameter]] | None = None
    #: the model's task heads (task name -> head); methods that replace heads write here
    heads: nn.ModuleDict = field(default_factory=nn.ModuleDict)
    #: ids of backbone parameters the model's forward never reads (the final norm of a model
    #: whose tasks all read feature maps); `train()` leaves them frozen and uncounted
    unused: set[int] = field(default_factory=set)
    #: set by `share_stage_norms()`: the tasks' stage-output norms become one shared set
    stage_norms_shared: bool = False

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.task_state.tasks if self.task_state is not None else ()

    @property
    def copies_per_task(self) -> bool:
        """True when this install makes one copy per task (per_task with several tasks)."""
        return self.per_task and len(self.tasks) > 1

    def module(
        self,
        build: Callable[..., nn.Module],
        *args: Any,
        like: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> nn.Module:
        """``build(*args, **kwargs)`` once (shared / single task) or once per task inside a
        `TaskSwitch`; moved to `like`'s device and dtype when given."""

        def make() -> nn.Module:
            module = build(*args, **kwargs)
            return module if like is None else module.to(like.device, like.dtype)

        if not self.copies_per_task:
            return make()
        assert self.task_state is not None
        return TaskSwitch(self.task_state, make)

    def require_single_task(self) -> None:
        """Methods that replace the whole forward (VQT, Head2Toe) serve one task."""
        if len(self.tasks) > 1:
            from ..errors import ConfigError

            raise ConfigError(
                f"method {self.method!r} replaces the model's forward with its own head and "
                f"serves one task; this model has {len(self.tasks)}"
            )

    def require_shared(self, why: str = "") -> None:
        """Methods that cannot be copied per task say so clearly."""
        if self.copies_per_task:
            from ..errors import ConfigError

            raise ConfigError(
                f"method {self.method!r} cannot be installed once per task{why}; install it "
                "shared by all tasks (shared=True / --shared) or on a single-task model"
            )

    def share_stage_norms(self) -> None:
        """Ask for one set of stage-output norms shared by every dense task (multi-task
        methods whose encoder adaptation is one for all tasks: Shared Adapter)."""
        self.stage_norms_shared = True

    def train(self, *items: nn.Parameter | nn.Module, weight_decay: bool | None = None) -> None:
        """Make these parameters (or every parameter of these modules) trainable.

        ``weight_decay=False`` tags them so the optimiser never decays them (prompts, query
        tokens, sparse deltas), ``True`` forces decay; ``None`` leaves the structural rule of
        `vpeft.train.optim` (no decay on 1-D, norm and token-embedding tensors).
        """
        for item in items:
            params = [item] if isinstance(item, nn.Parameter) else list(item.parameters())
            params = [p for p in params if id(p) not in self.unused]
            if self.copies_per_task and self.copy_per_task is not None:
                params = [
                    c
                    for p in params
                    for c in (self.copy_per_task(p) if id(p) in self.backbone_params else [p])
                ]
            for p in params:
                p.requires_grad_(True)
                if weight_decay is not None:
                    setattr(p, NO_DECAY_ATTR, not weight_decay)
                self.trained.append(p)

    def require_attention(self) -> None:
        """Raise a clear error when the backbone has no attention layers (e.g. ConvNeXt)."""
        if not self.spec.has_attention:
            raise UnsupportedBackboneError(
                f"method {self.method!r} needs attention layers; the {self.spec.family} "
                "backbone has none"
            )

    def require_family(self, *families: str) -> None:
        """Raise a clear error unless the backbone belongs to one of `families`."""
        if self.spec.family not in families:
            raise UnsupportedBackboneError(
                f"method {self.method!r} supports backbones {list(families)}; "
                f"got {self.spec.family}"
            )

    def set_forward(self, module: nn.Module, head: nn.Module) -> None:
        """Replace the model's forward by `module` (feature-extracting methods like VQT).

        `head` must be a submodule of `module`: its parameters are named once, under the
        module; `PeftModel.head` keeps a plain reference to it.
        """
        if not any(m is head for m in module.modules()):
            raise ValueError("set_forward: the head must be a submodule of the forward module")
        self.forward_override = module
        self.head = head
