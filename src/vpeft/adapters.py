"""Named adapters: many independently trained adapters on one frozen backbone (HF-PEFT style).

    pm = vpeft.load_adapters(base, {"pets": "pets.safetensors", "cars": "cars.safetensors"})
    pm.set_adapter("pets"); logits = pm(x)
    outs = pm(x, adapter_names=["pets", "cars", "pets"])   # one pass, per-sample adapters
    with pm.disable_adapters(): feats_logits = pm(x)        # plain backbone, active head
    pm.merge_adapter("cars"); ...; pm.unmerge_adapter()     # bit-exact restore
    pm.add_adapter("new", "lora", num_classes=5, rank=4)    # a fresh adapter to train
    pm.save_adapter("new", "new.safetensors")               # a plain single-task file

**Design.** A named adapter is one task of a multi-task `PeftModel` whose methods are installed
one copy per task (`TaskSwitch`, `TaskParameterCopies`). Adapters are grouped by their *method
signature* (the methods and options of their file): the first adapter of a signature installs
the methods once, with per-task copies; later adapters of the same signature only add a copy to
each switch of the group (the switch's factory) and load their tensors into it.

Adapters of different signatures share the backbone when their methods are *composable*: every
trained piece sits in an `AdaptedLayer` branch (added: LoRA, parallel adapters) or sequential
module (applied to the output: SSF, bottleneck adapters), or is a per-adapter copy of a frozen
backbone parameter (BitFit, norm tuning). A switch of one signature then holds a *neutral* copy
for the adapters of other signatures: zeros for an added branch, the identity for a sequential
module, and the frozen value for a parameter copy — so each adapter computes exactly what its
own single-task model does. Methods that change the token layout or the whole forward (prompts,
prefix, VQT, hypernetworks) have no neutral copy: a model holding such an adapter holds only
adapters of that same signature (a clear error says so).

File names: an adapter's tensors are named as in the single-task file it came from. The names
are found by installing the signature on a structure-only copy of the backbone (parameters
shared, nothing written), and matched to the shared model's names with `.copies.<adapter>`,
wrapper `.base` levels and `_2`-style de-duplication suffixes removed.

Merging installs merged copies of the adapted layers into their slots and keeps the frozen
modules aside: unmerging puts them back, so the frozen weights are restored bit-exactly (they are
never written), at the cost of holding the merged layers while merged.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import adapter_info as _info
from .backbones import describe, with_head
from .backbones.calls import pixel_values, reattach_classifier
from .core.context import InstallContext
from .core.registry import get_method
from .core.routing import Routing, routed
from .core.structure import Slot, apply_swaps, plain_structure, unwrapped
from .core.task_params import TaskParameterCopies
from .core.task_switch import TaskSwitch
from .core.wrapper import AdaptedLayer, NotMergeableError
from .errors import AdapterFileError, ConfigError
from .io import fingerprint, frozen_state, load_matching, read_safetensors, write_safetensors
from .tasks import ClassificationTask, Task, task_from_json

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_PIECE_TABLES = ("parallel", "sequential", "reparam", "sources")


# -- neutral copies -------------------------------------------------------------------------
class _NeutralCopy(nn.Module):
    """A copy for an adapter that does not use a switch's module. `ref` is another adapter's
    copy, read but not registered; the merge queries named in `queries` that `ref` answers are
    answered with the neutral values `_neutral_query` gives."""

    queries: tuple[str, ...] = ()

    def __init__(self, ref: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_ref", ref)

    def _neutral_query(self, ref: nn.Module, name: str) -> Any:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            ref = self.__dict__.get("_ref")
            if name in self.queries and ref is not None and hasattr(ref, name):
                return self._neutral_query(ref, name)
            raise


class NeutralBranch(_NeutralCopy):
    """The copy of an added branch for an adapter that does not use it: adds zeros (shaped like
    the branch's output)."""

    neutral = "zero"
    queries = ("delta_weight", "delta_bias")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return torch.zeros_like(self._ref(*args, **kwargs))

    def _neutral_query(self, ref: nn.Module, name: str) -> Any:
        return lambda: torch.zeros_like(getattr(ref, name)())


class NeutralModule(_NeutralCopy):
    """The copy of a module applied to a layer's output, for an adapter that does not use it:
    the identity (merges as scale 1, shift 0)."""

    neutral = "identity"
    queries = ("affine",)

    def forward(self, y: Any, *args: Any, **kwargs: Any) -> Any:
        return y

    def _neutral_query(self, ref: nn.Module, name: str) -> Any:
        def affine() -> tuple[torch.Tensor, torch.Tensor]:
            scale, shift = ref.affine()
            return torch.ones_like(scale), torch.zeros_like(shift)

        return affine


# -- bookkeeping ----------------------------------------------------------------------------
@dataclass
class AdapterGroup:
    """Adapters sharing one method signature (and so one set of switches)."""

    signature: str
    methods: list[tuple[str, Any]]
    members: list[str]
    exclusive: bool
    switches: list[TaskSwitch] = field(default_factory=list)
    roles: dict[int, str] = field(default_factory=dict)  # id(switch) -> "zero" | "identity"
    originals: list[nn.Parameter] = field(default_factory=list)
    #: normalised shared name -> single-task file name; file name -> backbone original
    names: dict[str, str] = field(default_factory=dict)
    backbone_names: dict[str, nn.Parameter] = field(default_factory=dict)
    buffer_names: dict[str, str] = field(default_factory=dict)
    file_task: str = "main"


@dataclass
class NamedState:
    groups: list[AdapterGroup] = field(default_factory=list)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    active: str | None = None
    disabled: bool = False
    merged: tuple[str, list[tuple[Slot, nn.Module]]] | None = None

    def group_of(self, name: str) -> AdapterGroup:
        return next(g for g in self.groups if name in g.members)


class _PerAdapterContext(InstallContext):
    """Always one copy per adapter (even for the first one); VQT-like forwards allowed."""

    @property
    def copies_per_task(self) -> bool:  # type: ignore[override]
        return True

    def require_single_task(self) -> None:
        return None


# -- building ---------------------------------------------------------------------------------
def with_adapters(base: nn.Module) -> Any:
    """An empty named-adapter model on the frozen backbone `base` (add or load adapters next)."""
    from .model import PeftModel, feature_info  # noqa: F401

    model = with_head(base)
    spec = describe(model)
    fp = fingerprint(frozen_state(model, exclude=spec.classifier()))
    model.requires_grad_(False)
    pm = PeftModel(model, [], {}, fp)
    pm.named = NamedState()
    return pm


def load_adapters(
    base: nn.Module,
    files: Mapping[str, str | Path] | Sequence[str | Path],
    strict_fingerprint: bool = True,
) -> Any:
    """A named-adapter model on `base` holding every adapter file (``{name: path}``, or paths
    named by their file stem); the first one is active."""
    items = files.items() if isinstance(files, Mapping) else [(Path(p).stem, p) for p in files]
    pm = with_adapters(base)
    for name, path in items:
        load_adapter(pm, path, name, strict_fingerprint=strict_fingerprint)
    return pm


def _state(pm: Any) -> NamedState:
    named = getattr(pm, "named", None)
    if named is None:
        raise ConfigError(
            "this model was not built for named adapters; start from "
            "vpeft.with_adapters(backbone) or vpeft.load_adapters(backbone, files)"
        )
    return named


def _check_name(pm: Any, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"adapter name {name!r} must start with a letter or digit and hold only letters, "
            "digits, '_' and '-'"
        )
    if name in pm.tasks:
        raise ConfigError(f"an adapter named {name!r} already exists; delete it first")


def _signature(methods: Sequence[tuple[str, Any]]) -> str:
    return json.dumps([[m, cfg.to_dict()] for m, cfg in methods], sort_keys=True, default=str)


def add_adapter(
    pm: Any,
    name: str,
    method: str,
    num_classes: int | None = None,
    *,
    task: Task | None = None,
    classes: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    **options: Any,
) -> None:
    """Add a fresh (trainable) adapter `name`: `method` with `options` and a new head."""
    if (task is None) == (num_classes is None):
        raise ConfigError("add_adapter needs num_classes=N or task=Task")
    task = task or ClassificationTask(name, num_classes=num_classes)
    config = get_method(method).config.from_options(options)
    _add(pm, name, task, [(method, config)])
    _info_set(pm, name, classes=classes, preprocessing=preprocessing)
    set_adapter(pm, name)


def load_adapter(
    pm: Any, path: str | Path, name: str | None = None, strict_fingerprint: bool = True
) -> str:
    """Add the adapter stored in the single-task file `path` under `name` (default: the file's
    stem); returns the name. The first adapter loaded becomes active."""
    named = _state(pm)
    name = name or Path(path).stem
    tensors, meta = read_safetensors(path)
    for key in ("methods", "backbone", "fingerprint", "tasks"):
        if key not in meta:
            raise AdapterFileError(f"{path}: metadata lacks {key!r}; not a vpeft adapter file")
    if len(meta["tasks"]) != 1:
        raise AdapterFileError(
            f"{path} holds {len(meta['tasks'])} tasks; named adapters come from single-task "
            "files (vpeft.load(..., tasks=[t]) + save, to split one)"
        )
    _check_backbone(pm, path, meta, strict_fingerprint)
    file_task = task_from_json(meta["tasks"][0])
    methods = []
    for i, entry in enumerate(meta["methods"]):
        info = get_method(entry["name"])
        prefix = f"__config__.{i}."
        extra = {k[len(prefix) :]: t for k, t in tensors.items() if k.startswith(prefix)}
        options = info.config.from_saved(entry["options"], extra)
        methods.append((entry["name"], info.config.from_options(options)))
    task = task_from_json({**file_task.to_json(), "name": name})
    group = _add(pm, name, task, methods, file_task=file_task.name)
    try:
        special = ("__config__.", "__buffer__.")
        trained = {k: v for k, v in tensors.items() if not k.startswith(special)}
        load_matching(path, _adapter_tensors(pm, group, name), trained)
        mark = "__buffer__."
        buffers = {k[len(mark) :]: v for k, v in tensors.items() if k.startswith(mark)}
        load_matching(path, _adapter_buffers(pm, group, name), buffers)
    except BaseException:
        delete_adapter(pm, name)
        raise
    named.info[name] = {k: meta[k] for k in _info.KEYS if k in meta}
    if named.active is None or named.active == name:
        set_adapter(pm, name)
    else:
        _set_trainable(pm, named.active)
    return name


def _check_backbone(pm: Any, path: Any, meta: dict, strict: bool) -> None:
    from .model import backbone_identity

    want, have = meta["backbone"], backbone_identity(pm.model, pm.spec)
    bad = [k for k in ("family", "depth", "embed_dim", "num_features") if want[k] != have[k]]
    if bad:
        raise AdapterFileError(
            f"{path} was trained on {want['architecture']} ({want}); this model's backbone is "
            f"{have['architecture']} ({have}); mismatch in {bad}"
        )
    if strict and meta["fingerprint"] != pm.frozen_fingerprint:
        raise AdapterFileError(
            f"{path} was trained on a backbone with different frozen weights (fingerprint "
            f"{meta['fingerprint']} vs {pm.frozen_fingerprint}); pass the same pretrained "
            "weights, or strict_fingerprint=False"
        )


def _add(
    pm: Any, name: str, task: Task, methods: list[tuple[str, Any]], file_task: str | None = None
) -> AdapterGroup:
    named = _state(pm)
    if named.merged is not None:
        raise ConfigError("unmerge_adapter() before adding adapters")
    _check_name(pm, name)
    signature = _signature(methods)
    group = next((g for g in named.groups if g.signature == signature), None)
    if group is None:
        scratch = _scratch(pm, methods, file_task or name, task)
        exclusive = not _composable(pm, scratch)
        others = [g for g in named.groups if g.members]
        if others and (exclusive or any(g.exclusive for g in others)):
            held = sorted({m for g in others for m, _ in g.methods})
            raise ConfigError(
                f"adapter {name!r} ({[m for m, _ in methods]}) cannot share this model with "
                f"adapters of methods {held}: prompts, prefix, VQT and hypernetwork adapters "
                "share a backbone only with adapters of the same method and options; load it "
                "into a separate model (vpeft.load_adapters)"
            )
        group = AdapterGroup(signature, methods, [], exclusive, file_task=file_task or name)
        _record_names(pm, group, scratch)
        _add_task(pm, name, task, member_of=None)
        try:
            _install_group(pm, group, name)
        except BaseException:
            _remove_task(pm, name)
            raise
        named.groups.append(group)
    else:
        _add_task(pm, name, task, member_of=group)
        group.file_task = file_task or group.file_task
    group.members.append(name)
    pm._refresh_task_specific()
    return group


def _add_task(pm: Any, name: str, task: Task, member_of: AdapterGroup | None) -> None:
    from .model import feature_info

    named = _state(pm)
    pm.tasks[name] = task
    pm.task_state.tasks = (*pm.task_state.tasks, name)
    head = task.build_head(feature_info(pm.spec))
    ref = next(iter(pm.model.parameters()))
    pm.heads[name] = head.to(ref.device)
    for group in named.groups:
        for switch in group.switches:
            if group is member_of:
                if (
                    group.exclusive
                    and isinstance(switch, TaskSwitch)
                    and switch is pm.forward_override
                ):
                    switch.add_copy(name, _override_copy(pm, group, task))
                    pm.heads[name] = nn.Identity()  # the forward module holds the head
                else:
                    switch.add_copy(name)
            else:
                switch.add_copy(name, _neutral(group, switch))
    copies = pm.task_parameters
    if copies is not None:
        mine = {id(p) for p in member_of.originals} if member_of is not None else set()
        copies.tasks[name] = nn.ParameterList(
            nn.Parameter(o.detach().clone(), requires_grad=id(o) in mine)
            for o in copies.originals()
        )


def _remove_task(pm: Any, name: str) -> None:
    for m in pm.modules():
        if isinstance(m, TaskSwitch) and name in m.copies:
            del m.copies[name]
        elif isinstance(m, TaskParameterCopies) and name in m.tasks:
            del m.tasks[name]
    override = pm.forward_override
    if isinstance(override, TaskSwitch) and name in override.copies:
        del override.copies[name]
    if name in pm.heads:
        del pm.heads[name]
    pm.tasks.pop(name, None)
    pm.task_state.tasks = tuple(t for t in pm.task_state.tasks if t != name)


def _neutral(group: AdapterGroup, switch: TaskSwitch) -> nn.Module:
    role = group.roles.get(id(switch))
    ref = next(iter(switch.copies.values()))
    if role == "zero":
        return NeutralBranch(ref)
    if role == "identity":
        return NeutralModule(ref)
    raise ConfigError("internal: a switch without a neutral copy in a shared group")


def _new_context(pm: Any, method: str, task: Task) -> _PerAdapterContext:
    from .model import _task_copies

    return _PerAdapterContext(
        pm.model,
        pm.spec,
        method,
        getattr(task, "num_classes", 0),
        task_state=pm.task_state,
        per_task=True,
        backbone_params=pm._backbone_params,
        copy_per_task=lambda p: _task_copies(pm, p),
        heads=pm.heads,
    )


def _install_group(pm: Any, group: AdapterGroup, name: str) -> None:
    from .model import AppliedMethod

    before = {id(m) for m in pm.modules() if isinstance(m, TaskSwitch)}
    n_before = len(pm.task_parameters) if pm.task_parameters is not None else 0
    task = pm.tasks[name]
    for method, config in group.methods:
        ctx = _new_context(pm, method, task)
        get_method(method).install(ctx, config)
        if ctx.forward_override is not None:
            if pm.forward_override is not None:
                raise ConfigError("only one feature-extracting method (vqt, head2toe) per model")
            module = ctx.forward_override
            switch = TaskSwitch(pm.task_state, lambda module=module: module)
            pm.forward_override = switch
            pm.heads[name] = nn.Identity()
        pm.methods.append(AppliedMethod(method, config, shared=False))
    group.switches = [m for m in pm.modules() if isinstance(m, TaskSwitch) and id(m) not in before]
    if pm.task_parameters is not None:
        group.originals = pm.task_parameters.originals()[n_before:]
    if not group.exclusive:
        group.roles = _roles(pm, group.switches)
        for switch in group.switches:  # the other adapters get neutral copies
            for task_name in list(switch.copies):
                if task_name != name:
                    switch.copies[task_name] = _neutral(group, switch)
        mine = {id(p) for p in group.originals}
        for task_name, copies in pm.task_parameters.tasks.items() if pm.task_parameters else ():
            if task_name != name:
                for o, c in zip(pm.task_parameters.originals(), copies, strict=True):
                    if id(o) in mine:
                        c.requires_grad_(False)


def _override_copy(pm: Any, group: AdapterGroup, task: Task) -> nn.Module:
    """A fresh forward-replacing module (VQT) for another adapter of an exclusive group."""
    for method, config in group.methods:
        ctx = _new_context(pm, method, task)
        get_method(method).install(ctx, config)
        if ctx.forward_override is not None:
            return ctx.forward_override
    raise ConfigError("internal: no forward module in this group")


def _roles(pm: Any, switches: list[TaskSwitch]) -> dict[int, str]:
    ids = {id(s) for s in switches}
    roles: dict[int, str] = {}
    for layer in pm.model.modules():
        if not isinstance(layer, AdaptedLayer):
            continue
        for role, table in (("zero", layer.parallel), ("identity", layer.sequential)):
            for entry in table.values():
                for m in entry.modules():
                    if id(m) in ids:
                        roles[id(m)] = role
    return roles


# -- names in single-task files ---------------------------------------------------------------
def _normalise(name: str) -> str:
    parts = name.split(".")
    out: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if part == "copies" and i + 1 < len(parts):
            i += 2
            continue
        if part == "base":
            i += 1
            continue
        if out and out[-1] in _PIECE_TABLES:
            part = re.sub(r"_\d+$", "", part)
        out.append(part)
        i += 1
    return ".".join(out)


def _scratch(pm: Any, methods: list[tuple[str, Any]], task_name: str, task: Task) -> Any:
    """The signature installed as a single-task model on a structure-only copy of the backbone
    (parameters and buffers shared, never written; their requires_grad flags restored)."""
    from .model import apply

    with plain_structure(pm.model):
        memo = {id(t): t for t in (*pm.model.parameters(), *pm.model.buffers())}
        base = copy.deepcopy(pm.model, memo)
    flags = [(p, p.requires_grad) for p in pm.model.parameters()]
    try:
        scratch: Any = base
        one = task_from_json({**task.to_json(), "name": task_name})
        for i, (method, config) in enumerate(methods):
            kwargs: dict[str, Any] = {"tasks": [one]} if i == 0 else {}
            options = config.from_saved(config.to_dict(), config.to_tensors())
            scratch = apply(scratch, method, shared=True, **kwargs, **options)
        from .core.buffers import trained_buffers

        # what the single-task model trains, read before the shared flags are restored
        scratch.scratch_trainables = dict(scratch.trainable_parameters())
        scratch.scratch_buffers = list(trained_buffers(scratch))
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return scratch


def _composable(pm: Any, scratch: Any) -> bool:
    if scratch.forward_override is not None:
        return False
    backbone = {id(p) for p in pm.model.parameters()}
    allowed: set[int] = set()
    for layer in scratch.model.modules():
        if isinstance(layer, AdaptedLayer):
            for entry in (*layer.parallel.values(), *layer.sequential.values()):
                allowed |= {id(p) for p in entry.parameters()}
    for n, p in scratch.scratch_trainables.items():
        if n.startswith("heads.") or id(p) in backbone:
            continue
        if id(p) not in allowed:
            return False
    return not any(
        isinstance(m, nn.Module) and type(m).__name__ != "AdaptedLayer" and unwrapped(m) is not m
        for m in scratch.model.modules()
        if not isinstance(m, AdaptedLayer) and type(m).__name__ != "InputTap"
    )


def _record_names(pm: Any, group: AdapterGroup, scratch: Any) -> None:
    backbone = {id(p): p for p in pm.model.parameters()}
    for n, p in scratch.scratch_trainables.items():
        if n.startswith("heads."):
            continue
        if id(p) in backbone:
            group.backbone_names[n] = p
        else:
            group.names[_normalise(n)] = n
    for n in scratch.scratch_buffers:
        group.buffer_names[_normalise(n)] = n


def _switch_copies(pm: Any, group: AdapterGroup, name: str) -> Iterator[tuple[str, nn.Module]]:
    """(path of the switch in `pm`, its copy for adapter `name`) for each switch of `group`."""
    ids = {id(s) for s in group.switches}
    for path, module in pm.named_modules():
        if id(module) in ids:
            yield path, module.copies[name]


def _adapter_tensors(pm: Any, group: AdapterGroup, name: str) -> dict[str, torch.Tensor]:
    """Single-task file name -> tensor of adapter `name` (its copies and its head)."""
    out: dict[str, torch.Tensor] = {}
    for path, held in _switch_copies(pm, group, name):
        for leaf, p in held.named_parameters():
            key = _normalise(f"{path}.copies.{name}.{leaf}")
            if key not in group.names:
                raise AdapterFileError(f"internal: no file name for {path}.{leaf}")
            out[group.names[key]] = p
    if group.backbone_names:
        copies = pm.task_parameters
        index = {id(o): i for i, o in enumerate(copies.originals())}
        for file_name, original in group.backbone_names.items():
            out[file_name] = copies.tasks[name][index[id(original)]]
    for leaf, p in pm.heads[name].named_parameters():
        out[f"heads.{group.file_task}.{leaf}"] = p
    return out


def _adapter_buffers(pm: Any, group: AdapterGroup, name: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path, held in _switch_copies(pm, group, name):
        for leaf, b in held.named_buffers():
            key = _normalise(f"{path}.copies.{name}.{leaf}")
            if key in group.buffer_names:
                out[group.buffer_names[key]] = b
    for leaf, b in pm.heads[name].named_buffers():
        key = f"heads.{group.file_task}.{leaf}"
        if key in group.buffer_names.values():
            out[key] = b
    return out


def save_adapter(pm: Any, name: str, path: str | Path) -> None:
    """Write adapter `name` as a single-task file (loadable by `vpeft.load` on a plain backbone
    or by `load_adapter`), with its class names and preprocessing."""
    from . import __version__
    from .model import FILE_VERSION, AppliedMethod, backbone_identity

    named = _state(pm)
    _require(pm, name)
    group = named.group_of(name)
    tensors = {k: v.detach() for k, v in _adapter_tensors(pm, group, name).items()}
    tensors.update({f"__buffer__.{k}": v for k, v in _adapter_buffers(pm, group, name).items()})
    for i, (_, config) in enumerate(group.methods):
        for key, t in config.to_tensors().items():
            tensors[f"__config__.{i}.{key}"] = t
    task = task_from_json({**pm.tasks[name].to_json(), "name": group.file_task})
    meta: dict[str, Any] = {
        "vpeft_version": __version__,
        "file_version": FILE_VERSION,
        "methods": [AppliedMethod(m, c, shared=True).to_json() for m, c in group.methods],
        "tasks": [task.to_json()],
        "backbone": backbone_identity(pm.model, pm.spec),
        "fingerprint": pm.frozen_fingerprint,
    }
    if isinstance(task, ClassificationTask):
        meta["num_classes"] = task.num_classes
    write_safetensors(path, tensors, meta, dict(named.info.get(name, {})))


# -- switching --------------------------------------------------------------------------------
def _require(pm: Any, name: str) -> None:
    if name not in pm.tasks:
        raise ConfigError(f"unknown adapter {name!r}; the model's adapters: {list(pm.tasks)}")


def _set_trainable(pm: Any, name: str | None) -> None:
    named = _state(pm)
    for group in named.groups:
        for member in group.members:
            for p in _adapter_tensors(pm, group, member).values():
                p.requires_grad_(member == name)


def set_adapter(pm: Any, name: str) -> None:
    """Make `name` the adapter `pm(x)` runs, and the only one whose tensors train."""
    named = _state(pm)
    _require(pm, name)
    if named.merged is not None and named.merged[0] != name:
        raise ConfigError(f"adapter {named.merged[0]!r} is merged; unmerge_adapter() first")
    named.active = name
    _set_trainable(pm, name)


def delete_adapter(pm: Any, name: str) -> None:
    """Remove adapter `name` (its copies, head and info)."""
    named = _state(pm)
    _require(pm, name)
    if named.merged is not None:
        raise ConfigError("unmerge_adapter() before deleting adapters")
    group = next((g for g in named.groups if name in g.members), None)
    _remove_task(pm, name)
    named.info.pop(name, None)
    if group is not None:
        group.members.remove(name)
        if not group.members:
            named.groups.remove(group)
            if pm.forward_override is not None and not pm.tasks:
                pm.forward_override = None
    if named.active == name:
        named.active = next(iter(pm.tasks), None)
        if named.active is not None:
            _set_trainable(pm, named.active)
    pm._refresh_task_specific()


@contextlib.contextmanager
def disable_adapters(pm: Any) -> Iterator[None]:
    """Run the body with the plain backbone (no adapter module, no parameter copy); `pm(x)`
    applies the active adapter's head to the plain backbone's features."""
    named = _state(pm)
    if named.merged is not None:
        raise ConfigError("unmerge_adapter() before disabling adapters")
    previous, named.disabled = named.disabled, True
    try:
        yield
    finally:
        named.disabled = previous


def merge_adapter(pm: Any, name: str | None = None) -> None:
    """Fold adapter `name` (default: the active one) into merged copies of the adapted layers,
    installed in place of the originals until `unmerge_adapter`."""
    named = _state(pm)
    name = name or named.active
    if name is None:
        raise ConfigError("no adapter to merge")
    _require(pm, name)
    if named.merged is not None:
        raise ConfigError(f"adapter {named.merged[0]!r} is already merged; unmerge first")
    group = named.group_of(name)
    blocking = [m for m, _ in group.methods if not get_method(m).mergeable]
    if blocking:
        raise NotMergeableError(f"adapter {name!r} uses {blocking}, which cannot be merged")
    swaps: list[tuple[Slot, nn.Module]] = []
    copies = pm.task_parameters
    swap_in = copies.swapped_in(pm.model, name) if copies is not None and len(copies) else None
    with pm.task_state.active(name), swap_in or contextlib.nullcontext(), torch.no_grad():
        covered: set[int] = set()

        def visit(parent: nn.Module) -> None:
            for child_name, child in list(parent._modules.items()):
                if isinstance(child, AdaptedLayer):
                    merged = child.merged()
                    if merged is unwrapped(child):
                        merged = copy.deepcopy(merged)
                    covered.update(id(p) for p in child.parameters())
                    swaps.append(((parent, child_name), merged.requires_grad_(False)))
                elif child is not None:
                    visit(child)

        visit(pm.model)
        if copies is not None and len(copies):
            live = {id(p) for p in copies.tasks[name]}
            for parent in list(pm.model.modules()):
                for child_name, child in parent._modules.items():
                    if child is None or any(id(p) in covered for p in child.parameters()):
                        continue
                    own = child._parameters.values()
                    if any(p is not None and id(p) in live for p in own):
                        swaps.append(
                            ((parent, child_name), copy.deepcopy(child).requires_grad_(False))
                        )
    named.merged = (name, apply_swaps(swaps))
    named.active = name


def unmerge_adapter(pm: Any) -> None:
    """Put the frozen layers back (bit-exact: they were never written)."""
    named = _state(pm)
    if named.merged is None:
        return
    _, undo = named.merged
    apply_swaps(undo)
    named.merged = None


def merged_backbone(pm: Any, name: str | None = None) -> nn.Module:
    """A plain copy of the backbone with adapter `name` folded in and its classifier attached
    (timm models): what `vpeft export` writes."""
    named = _state(pm)
    name = name or named.active
    merge_adapter(pm, name)
    try:
        with plain_structure(pm.model):  # nothing may stay wrapped
            target = copy.deepcopy(pm.model)
    finally:
        unmerge_adapter(pm)
    leftovers = [n for n, m in target.named_modules() if isinstance(m, TaskSwitch)]
    if leftovers:
        raise NotMergeableError(f"modules of other adapters remain after merge: {leftovers[:3]}")
    task = pm.tasks[name]
    if isinstance(task, ClassificationTask) and hasattr(target, "reset_classifier"):
        reattach_classifier(target, copy.deepcopy(pm.heads[name]), task.num_classes)
    return target.requires_grad_(False).eval()


# -- forward ----------------------------------------------------------------------------------
def forward(pm: Any, inputs: Any, task: str | None, adapter_names: Sequence[str] | None) -> Any:
    """`pm(x)` of a named-adapter model: the active (or given) adapter's output; with
    ``adapter_names`` one output per sample, each from its own adapter, in one pass."""
    named = _state(pm)
    if adapter_names is not None:
        if named.merged is not None or named.disabled:
            raise ConfigError("mixed-adapter batches need every adapter unmerged and enabled")
        return forward_mixed(pm, inputs, list(adapter_names))
    name = task or named.active
    if name is None:
        raise ConfigError("this model holds no adapter; load_adapter() or add_adapter() first")
    _require(pm, name)
    if named.disabled or named.merged is not None:
        if named.merged is not None and named.merged[0] != name:
            raise ConfigError(f"adapter {named.merged[0]!r} is merged; unmerge_adapter() first")
        if isinstance(pm.heads[name], nn.Identity) and pm.forward_override is not None:
            raise ConfigError("a VQT adapter has no output without its query tokens")
        return _plain(pm, inputs, name, unwrap=named.disabled)
    return pm.forward_tasks(inputs, [name])[name]


def _plain(pm: Any, inputs: Any, name: str, unwrap: bool) -> Any:
    from .model import _FEATURES

    spec = pm.tasks[name]
    with plain_structure(pm.model) if unwrap else contextlib.nullcontext():
        features = _FEATURES[spec.features](pm.spec, inputs)
    return spec.run_head(pm.heads[name], features, inputs)


def forward_mixed(pm: Any, inputs: Any, names: list[str]) -> list[Any]:
    """One output per sample i, computed with adapter ``names[i]``; the backbone runs once."""
    from .model import _FEATURES

    x = pixel_values(inputs)
    if len(names) != x.shape[0]:
        raise ConfigError(f"adapter_names has {len(names)} entries for a batch of {x.shape[0]}")
    unknown = sorted({n for n in names if n not in pm.tasks})
    if unknown:
        raise ConfigError(f"unknown adapter(s) {unknown}; the model's adapters: {list(pm.tasks)}")
    routing = Routing(names, x.device)
    outputs: list[Any] = [None] * len(names)
    if pm.forward_override is not None:
        per_task = _mixed_override(pm, x, routing)
    else:
        kinds = {pm.tasks[t].features for t in routing.groups}
        with routed(pm.task_state, routing, pm.task_parameters, pm.model):
            features = {kind: _FEATURES[kind](pm.spec, inputs) for kind in sorted(kinds)}
        per_task = {}
        for t, idx in routing.groups.items():
            sub = {k: _rows(v, idx) for k, v in features.items()}
            per_task[t] = pm._head(t, sub, _rows(inputs, idx))
    for t, idx in routing.groups.items():
        for j, i in enumerate(idx.tolist()):
            outputs[i] = per_task[t][j]
    return outputs


def _mixed_override(pm: Any, x: torch.Tensor, routing: Routing) -> dict[str, Any]:
    from .methods.vqt.head import normalize_groups
    from .methods.vqt.query_tuning import QueryTuning

    switch = pm.forward_override
    copies = {t: switch.copies[t] for t in routing.groups}
    if not all(isinstance(c, QueryTuning) for c in copies.values()):
        # each adapter's forward on its rows (the backbone runs once per adapter)
        return {
            t: _run_active(pm, t, c, x.index_select(0, routing.groups[t]))
            for t, c in copies.items()
        }
    first = next(iter(copies.values()))
    final, keys_values = first.backbone_pass(x)  # the frozen pass, once for the whole batch
    out = {}
    for t, q in copies.items():
        idx = routing.groups[t]
        kv = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in keys_values]
        summaries = q.summaries(kv, len(idx))
        groups = [final.index_select(0, idx)] + [
            q.reduce_layer(m, z) for m, z in enumerate(summaries)
        ]
        out[t] = q.head(normalize_groups(groups))
    return out


def _run_active(pm: Any, task: str, module: nn.Module, x: torch.Tensor) -> Any:
    with pm.task_state.active(task):
        return module(x)


def _rows(value: Any, idx: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return value.index_select(0, idx.to(value.device))
    if isinstance(value, dict):
        return {k: _rows(v, idx) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_rows(v, idx) for v in value)
    return value


# -- info -------------------------------------------------------------------------------------
def _info_set(pm: Any, name: str, **entries: Any) -> None:
    named = _state(pm)
    info = named.info.setdefault(name, {})
    if entries.get("classes") is not None:
        info["classes"] = [str(c) for c in entries["classes"]]
    if entries.get("preprocessing") is not None:
        info["preprocessing"] = dict(entries["preprocessing"])


def describe_adapter(pm: Any, name: str) -> dict[str, Any]:
    """Methods, task, class names and preprocessing of adapter `name`."""
    named = _state(pm)
    _require(pm, name)
    group = named.group_of(name)
    task = pm.tasks[name]
    out: dict[str, Any] = {
        "name": name,
        "methods": [m for m, _ in group.methods],
        "num_classes": getattr(task, "num_classes", None),
    }
    out.update(named.info.get(name, {}))
    return out
