"""Registry mapping method names to their config class and installer."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
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
#: whether the shipped methods (`vpeft.methods.builtin`) have been imported and so registered
_builtin_state = {"loaded": False}


def _ensure_builtin() -> None:
    """Import `vpeft.methods.builtin` (which registers every shipped method) on the first
    look-up, so that every reader of the registry sees them however it was reached; the
    command line imports none of them until a command needs one."""
    if _builtin_state["loaded"]:
        return
    _builtin_state["loaded"] = True  # set first: a look-up during that import must not recurse
    try:
        import_module("vpeft.methods.builtin")
    except BaseException:
        _builtin_state["loaded"] = False
        raise


def register(info: MethodInfo) -> MethodInfo:
    """Register a method. A new method is one module plus one call of this function."""
    _ensure_builtin()  # a shipped name stays taken, as when the package registered them eagerly
    if info.name in _REGISTRY:
        raise ValueError(f"method {info.name!r} registered twice")
    _REGISTRY[info.name] = info
    return info


def get_method(name: str) -> MethodInfo:
    """Look a method up by name, with a suggestion when the name is misspelt."""
    _ensure_builtin()
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
    _ensure_builtin()
    return sorted(_REGISTRY)


def method_infos() -> list[MethodInfo]:
    """Every registered `MethodInfo`, sorted by name."""
    _ensure_builtin()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]
