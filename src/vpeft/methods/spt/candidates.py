"""Which backbone tensors SPT scores and allocates, split into logical units.

A *unit* is one logical tensor that the allocation rules (spec/spt.md, stage 2) treat as a whole:

- ``matrix``: the weight of a logical linear map of a block (q, k, v, proj, fc1, fc2), taken
  from the backbone description's `LinearSlot` — q, k and v are three units even when the
  backbone fuses them into one ``qkv`` layer (their row ranges of the fused weight);
- ``vector``: every 1-D tensor (biases — again split by slot rows —, norm weights and biases,
  layer-scale gammas);
- ``tensor``: every other multi-dimensional tensor (depthwise / down-sampling convolutions, Swin's
  patch-merging linear map); these can only be sparse-tuned.

Candidates are every backbone parameter except (decided structurally, never by name): the head,
the patch embedding, the class token and position embedding of the `BackboneSpec`, tensors owned
by the model object itself (class / register tokens, position embeddings), and tensors owned
directly by an attention module (relative-position bias tables: position encodings too).

Parameter names are *canonical*: vpeft wrappers (`AdaptedLayer`) are looked through, so a name
is the same before and after methods are installed (``blocks.0.attn.qkv.weight``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

from ...backbones import BackboneSpec, LinearSlot
from ...core.wrapper import AdaptedLayer

#: Unit kinds, see the module docstring.
KINDS: tuple[str, ...] = ("matrix", "vector", "tensor")


@dataclass(frozen=True)
class Unit:
    """One logical tensor: rows ``rows`` (all when None) of canonical parameter ``param``."""

    key: str
    param: str
    rows: tuple[int, int] | None
    shape: tuple[int, ...]
    kind: str
    role: str | None = None  # q, k, v, proj, fc1, fc2 for slot weights and their biases
    block: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def inner(self) -> int:
        """Elements per row (the stride of one row in the flat parameter)."""
        return math.prod(self.shape[1:])

    @property
    def offset(self) -> int:
        """Flat offset of this unit's first element inside its parameter."""
        return 0 if self.rows is None else self.rows[0] * self.inner


@dataclass(frozen=True)
class Owner:
    """Where a parameter lives: ``module.<local>``, with ``module`` at ``parent.<attr>``.

    ``module`` is the frozen module itself (looking through vpeft wrappers); wrap it with
    ``AdaptedLayer.wrap(parent, attr)``.
    """

    parent: nn.Module | None
    attr: str
    module: nn.Module
    local: str


@dataclass
class Candidates:
    """The candidate units of one backbone and handles to their parameters."""

    units: list[Unit]
    params: dict[str, nn.Parameter]
    owners: dict[str, Owner]
    slots: dict[str, LinearSlot] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return sum(u.numel for u in self.units)

    def by_key(self) -> dict[str, Unit]:
        return {u.key: u for u in self.units}


def canonical_parameters(
    model: nn.Module,
) -> Iterator[tuple[str, nn.Parameter, Owner]]:
    """(canonical name, parameter, owner) of every frozen parameter, wrappers looked through.

    Parameters of the pieces vpeft attaches (LoRA branches, adapters, deltas) are not listed.
    """
    seen: set[int] = set()

    def walk(module: nn.Module, prefix: str, parent: nn.Module | None, attr: str):
        for local, p in module._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                yield prefix + local, p, Owner(parent, attr, module, local)
        for name, child in module._modules.items():
            if child is None:
                continue
            inner = child
            while isinstance(inner, AdaptedLayer):
                inner = inner.base
            yield from walk(inner, f"{prefix}{name}.", module, name)

    yield from walk(model, "", None, "")


def _excluded(model: nn.Module, spec: BackboneSpec) -> set[int]:
    """ids of parameters that are never candidates (see the module docstring)."""
    ids = {id(p) for p in spec.classifier().parameters()}
    ids |= {id(p) for p in spec.patch_embed.parameters()}
    ids |= {id(t) for t in (spec.cls_token, spec.pos_embed) if t is not None}
    ids |= {id(p) for p in model._parameters.values() if p is not None}
    for block in spec.blocks:
        if block.attention is not None:
            owned = block.attention.module._parameters.values()
            ids |= {id(p) for p in owned if p is not None}
    return ids


def _block_of_modules(spec: BackboneSpec) -> dict[int, int]:
    return {id(m): b.index for b in spec.blocks for m in b.module.modules()}


def _slot_rows(spec: BackboneSpec) -> dict[int, list[tuple[str, LinearSlot, int]]]:
    """id(weight or bias parameter) -> [(role, slot, block index)] in row order."""
    table: dict[int, list[tuple[str, LinearSlot, int]]] = {}
    for block in spec.blocks:
        for role, slot in block.matrices().items():
            linear = slot.linear
            for p in (linear.weight, linear.bias):
                if p is not None:
                    table.setdefault(id(p), []).append((role, slot, block.index))
    for entries in table.values():
        entries.sort(key=lambda e: 0 if e[1].rows is None else e[1].rows.start)
    return table


def find_candidates(model: nn.Module, spec: BackboneSpec) -> Candidates:
    """Every candidate unit of `model` (described by `spec`), in module order."""
    excluded = _excluded(model, spec)
    blocks = _block_of_modules(spec)
    slots = _slot_rows(spec)
    units: list[Unit] = []
    params: dict[str, nn.Parameter] = {}
    owners: dict[str, Owner] = {}
    slot_of_key: dict[str, LinearSlot] = {}
    for name, p, owner in canonical_parameters(model):
        if id(p) in excluded:
            continue
        params[name], owners[name] = p, owner
        shape = tuple(p.shape)
        block = blocks.get(id(owner.module))
        if id(p) not in slots:
            kind = "vector" if p.dim() == 1 else "tensor"
            units.append(Unit(name, name, None, shape, kind, None, block))
            continue
        for role, slot, block_index in slots[id(p)]:
            rows = None if slot.rows is None else (slot.rows.start, slot.rows.stop)
            n_rows = shape[0] if rows is None else rows[1] - rows[0]
            key = name if rows is None else f"{name}[{role}]"
            kind = "vector" if p.dim() == 1 else "matrix"
            units.append(Unit(key, name, rows, (n_rows, *shape[1:]), kind, role, block_index))
            if kind == "matrix":
                slot_of_key[key] = slot
    return Candidates(units, params, owners, slot_of_key)
