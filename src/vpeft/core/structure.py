"""Temporary changes to a model's module tree that are undone exactly.

`plain_structure` puts every wrapped backbone module (`ForwardsToWrapped`: `AdaptedLayer`,
prompt insertion/removal, extended attention, taps) back into its slot, so the backbone runs as
it was given (the disable-adapters context); `slot_swaps` puts given modules into given slots
(merged layers of one named adapter) and restores the originals. Neither touches a parameter
(pieces folded into the frozen weights for eval, `EvalFold`, are unfolded first: they restore
their saved originals), so restoring is bit-exact by construction.

`structure_generation` changes whenever a module tree may have changed, for caches of where
things sit in one (`TaskParameterCopies`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.module import (
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

from .eval_fold import EvalFold
from .forwarding import ForwardsToWrapped

Slot = tuple[nn.Module, str]

_generation = 0


def structure_generation() -> int:
    """A counter that changes whenever any module or parameter is registered on any module
    (torch's global registration hooks: assignment, `add_module`, `register_parameter`) and
    whenever `apply_swaps` rewrites slots: facts cached about where modules and parameters sit
    in a tree hold while it is unchanged. Direct writes to ``_modules`` / ``_parameters``
    elsewhere are not seen; callers check what they cached (see `TaskParameterCopies`)."""
    return _generation


def _changed(*_args: object) -> None:
    global _generation
    _generation += 1


register_module_module_registration_hook(_changed)
register_module_parameter_registration_hook(_changed)


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
    _changed()
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
