"""The task layer (design.md, layer 3): what a model predicts and how it is scored.

A `Task` owns

- its **head or decoder** (`build_head`, given what the backbone offers as `FeatureInfo`);
- its **loss** (`loss` returns a *sum over samples* and the sample count, so the trainer can
  normalise by the global batch — exact under gradient accumulation and DDP);
- its **streaming metrics** (`metrics` returns fresh `Metric` objects whose state is a float64
  tensor summed over processes, so results are the same on one or many processes);
- the **batch fields** it reads (`input_fields` for the model, `target_field` for the loss).

Tasks are plain data plus small functions; they hold no trained state themselves (the head they
build is a module of the model). `to_json` / `task_from_json` round-trip them through the
metadata of adapter files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class FeatureInfo:
    """What a backbone hands to task heads.

    - ``pooled_dim``: width of the pooled image (or sequence) representation, the input of a
      classification head (timm ``forward_head(..., pre_logits=True)``);
    - ``map_dims`` / ``map_strides``: channels and strides (w.r.t. the input image) of the
      multi-scale feature maps a dense decoder reads (`BackboneSpec` feature taps), in order;
    - ``embed_dim``: the width of a two-tower model's image / text embeddings (CLIP).
    """

    pooled_dim: int
    map_dims: tuple[int, ...] = ()
    map_strides: tuple[int, ...] = ()
    #: the backbone's own classifier factory (``num_classes -> module``; timm's
    #: ``reset_classifier``), used by classification heads when present
    new_classifier: Callable[[int], nn.Module] | None = field(default=None, compare=False)
    #: width of a two-tower model's projected embeddings (CLIP ``projection_dim``); 0: none
    embed_dim: int = 0


class Metric(ABC):
    """A streaming metric: `update` per batch, `state` (float64 tensor) summed over processes,
    `compute(state)` -> named values. ``state()`` must be a 1-D float64 tensor whose
    element-wise sum over shards equals the state of the whole dataset."""

    #: names `compute` returns, the first being the headline number
    names: ClassVar[tuple[str, ...]] = ()
    #: whether larger is better for each name (used for Δm and model selection)
    higher_is_better: ClassVar[tuple[bool, ...]] = ()

    @abstractmethod
    def update(self, output: torch.Tensor, target: Any) -> None:
        """Accumulate one batch (outputs detached, float)."""

    @abstractmethod
    def state(self) -> torch.Tensor:
        """The accumulated state as a 1-D float64 tensor (summable across processes)."""

    @abstractmethod
    def compute(self, state: torch.Tensor | None = None) -> dict[str, float]:
        """The metric values from `state` (default: this object's own state)."""


@dataclass
class Task(ABC):
    """One prediction problem on a shared backbone. Subclasses are dataclasses."""

    name: str

    #: registry key written to files (`task_from_json`)
    kind: ClassVar[str] = ""
    #: what the head consumes: "pooled" (a vector per sample) or "maps" (multi-scale maps)
    features: ClassVar[str] = "pooled"

    input_fields: tuple[str, ...] = field(default=("pixel_values",), kw_only=True)
    target_field: str = field(default="labels", kw_only=True)
    loss_weight: float = field(default=1.0, kw_only=True)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "_").isidentifier():
            raise ConfigError(
                f"task name {self.name!r} must be a non-empty identifier (letters, digits, _, -)"
            )
        if not self.loss_weight >= 0:
            raise ConfigError(f"task {self.name}: loss_weight must be >= 0, got {self.loss_weight}")

    @abstractmethod
    def build_head(self, info: FeatureInfo) -> nn.Module:
        """A new, trainable head/decoder for this task."""

    def run_head(self, head: nn.Module, features: Any, inputs: Any) -> Any:
        """The task's output from the backbone `features` of its kind (dense tasks also read
        the input size from `inputs`)."""
        return head(features)

    @abstractmethod
    def loss(self, output: torch.Tensor, target: Any) -> tuple[torch.Tensor, int]:
        """(sum over samples of the per-sample loss, number of samples)."""

    @abstractmethod
    def metrics(self) -> list[Metric]:
        """Fresh streaming metrics; the first metric's first name is the headline result."""

    def options(self) -> dict[str, Any]:
        """JSON-serialisable constructor options beyond ``name`` (subclasses extend)."""
        return {
            "input_fields": list(self.input_fields),
            "target_field": self.target_field,
            "loss_weight": self.loss_weight,
        }

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "options": self.options()}


_TASK_KINDS: dict[str, Callable[..., Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task kind loadable from files by its ``kind``."""
    if not cls.kind or cls.kind in _TASK_KINDS:
        raise ValueError(f"task kind {cls.kind!r} is empty or registered twice")
    _TASK_KINDS[cls.kind] = cls
    return cls


def task_from_json(entry: dict[str, Any]) -> Task:
    """Rebuild a task from `Task.to_json` output."""
    from . import builtin  # noqa: F401  (registers the shipped task kinds)

    kind = entry.get("kind")
    if kind not in _TASK_KINDS:
        raise ConfigError(f"unknown task kind {kind!r}; known: {sorted(_TASK_KINDS)}")
    options = dict(entry.get("options", {}))
    if "input_fields" in options:
        options["input_fields"] = tuple(options["input_fields"])
    return _TASK_KINDS[kind](entry["name"], **options)
