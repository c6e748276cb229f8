"""Read intermediate tensors of a backbone's own forward pass through temporary hooks.

Feature-extracting methods (VQT, Head2Toe) run the user's model exactly as it is — with every
wrapper other methods installed — and only *listen*: a forward hook stores what a module
produced (optionally transformed, e.g. pooled, so the full tensor can be freed at once). The
hooks exist only inside the `with` block, so the model is untouched outside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

#: (index of the hooked module, tensor) -> what to keep.
Transform = Callable[[int, torch.Tensor], Any]


def _identity(index: int, t: torch.Tensor) -> torch.Tensor:
    return t


@contextmanager
def capture_outputs(
    modules: Sequence[nn.Module], transform: Transform = _identity
) -> Iterator[list[Any]]:
    """Yield a list whose slot i receives `transform(i, output of modules[i])` in the block.

    A module called more than once keeps its last output.
    """
    store: list[Any] = [None] * len(modules)

    def hook(index: int) -> Callable[..., None]:
        def record(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            store[index] = transform(index, output)

        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture_inputs(
    modules: Sequence[nn.Module], transform: Transform = _identity
) -> Iterator[list[Any]]:
    """Like `capture_outputs`, for the first positional input of each module."""
    store: list[Any] = [None] * len(modules)

    def hook(index: int) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple[Any, ...]) -> None:
            store[index] = transform(index, args[0])

        return record

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
