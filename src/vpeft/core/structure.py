"""Temporary changes to a model's module tree that are undone exactly.

`plain_structure` puts every wrapped backbone module (`ForwardsToWrapped`: `AdaptedLayer`,
prompt insertion/removal, extended attention, taps) back into its slot, so the backbone runs as
it was given (the disable-adapters context); `slot_swaps` puts given modules into given slots
(merged layers of one named adapter) and restores the originals. Neither touches a parameter
(pieces folded into the frozen weights for eval, `EvalFold`, are unfolded first: they restore
their saved originals), so restoring is bit-exact by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from .eval_fold import EvalFold
from .forwarding import ForwardsToWrapped

Slot = tuple[nn.Module, str]


def unwrapped(module: nn.Module) -> nn.Module:
    """The module inside every `ForwardsToWrapped` wrapper around `module`."""
    while isinstance(module, ForwardsToWrapped):
        module = module._modules[module.WRAPPED]
    return module


def plain_swaps(root: nn.Module) -> list[tuple[Slot, nn.Module]]:
    """(slot, plain module) for every wrapped slot under `root`."""
    out: list[tuple[Slot, nn.Module]] = []

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            inner = unwrapped(child)
            if inner is not child:
                out.append(((parent, name), inner))
            visit(inner)

    visit(root)
    return out


def apply_swaps(swaps: list[tuple[Slot, nn.Module]]) -> list[tuple[Slot, nn.Module]]:
    """Put each module into its slot; returns the swaps that undo it (apply in that order)."""
    undo = []
    for (parent, name), module in swaps:
        undo.append(((parent, name), parent._modules[name]))
        parent._modules[name] = module
    return list(reversed(undo))


@contextmanager
def plain_structure(root: nn.Module) -> Iterator[None]:
    """Run the body with every wrapper under `root` replaced by the module it wraps."""
    for module in root.modules():
        if isinstance(module, EvalFold):
            module.unfold()  # the plain modules must not run with folded weights
    undo = apply_swaps(plain_swaps(root))
    try:
        yield
    finally:
        apply_swaps(undo)


def find_slot(root: nn.Module, target: nn.Module) -> Slot | None:
    """The (parent, name) holding `target` under `root`, or None."""
    for parent in root.modules():
        for name, child in parent._modules.items():
            if child is target:
                return parent, name
    return None
