"""Registry mapping method names to their config class and installer."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UnknownMethodError
from .config import MethodConfig

if TYPE_CHECKING:
    from .context import InstallContext


@dataclass(frozen=True)
class MethodInfo:
    """Everything the library needs to know about one method."""

    name: str
    family: str  # "head" | "selective" | "prompt" | "reparam" | "adapter" | "query" | ...
    paper: str
    mergeable: bool
    config: type[MethodConfig]
    install: Callable[[InstallContext, MethodConfig], None]
    summary: str
    backbones: tuple[str, ...] | None = None  # supported families; None = every family
    #: multi-task method (hypernetworks): installed once for all tasks, never copied per task;
    #: its modules read the active task (``reads_task = True``)
    multi_task: bool = False


_REGISTRY: dict[str, MethodInfo] = {}


def register(info: MethodInfo) -> MethodInfo:
    """Register a method. A new method is one module plus one call of this function."""
    if info.name in _REGISTRY:
        raise ValueError(f"method {info.name!r} registered twice")
    _REGISTRY[info.name] = info
    return info


def get_method(name: str) -> MethodInfo:
    """Look a method up by name, with a suggestion when the name is misspelt."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownMethodError(
            f"unknown method {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def available_methods() -> list[str]:
    """Names of every registered method, sorted."""
    return sorted(_REGISTRY)


def method_infos() -> list[MethodInfo]:
    """Every registered `MethodInfo`, sorted by name."""
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]
