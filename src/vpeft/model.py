"""`PeftModel`: one frozen backbone, one or more named tasks with their heads, and the methods
installed into the backbone (shared by all tasks or one copy per task); its public API."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__, adapter_info
from .backbones import BackboneSpec, describe, with_head
from .backbones.calls import (
    Inputs,
    class_embeddings,
    classifier_factory,
    feature_maps,
    pair_embeddings,
    pixel_values,
    pooled_features,
    pooled_pair_features,
    reattach_classifier,
)
from .core.buffers import trained_buffers
from .core.context import InstallContext
from .core.registry import get_method
from .core.task_params import TaskParameterCopies
from .core.task_switch import TaskState, TaskSwitch
from .core.wrapper import AdaptedLayer, NotMergeableError, unwrap_all
from .errors import AdapterFileError, ConfigError, VpeftError
from .io import fingerprint, frozen_state, load_matching, read_safetensors, write_safetensors
from .tasks import ClassificationTask, FeatureInfo, Task, task_from_json

#: name of the task of a model built with ``num_classes=`` (single-task classification)
DEFAULT_TASK = "main"
#: adapter-file layout version (2: heads under ``heads.<task>``, tasks in the metadata)
FILE_VERSION = 2


@dataclass
class AppliedMethod:
    """One installed method: its name, validated config and whether tasks share it."""

    name: str
    config: Any
    shared: bool = True
    #: whether the install made the dense tasks share one set of stage-output norms
    shared_norms: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "options": self.config.to_dict(),
            "shared": self.shared,
            "shared_norms": self.shared_norms,
        }


@dataclass
class Summary:
    """Trainable / total parameter counts, split into encoder and head, plus a per-module table.

    ``trainable_encoder = encoder_shared + encoder_per_task``: tensors every task uses, and the
    per-task copies of all tasks together; ``head`` covers every task's head or decoder.
    """

    trainable: int
    trainable_encoder: int
    head: int
    total: int
    rows: list[tuple[str, int]] = field(default_factory=list)
    encoder_shared: int = 0
    encoder_per_task: int = 0
    tasks: int = 1

    def as_dict(self) -> dict[str, int]:
        return {
            "trainable": self.trainable,
            "trainable_encoder": self.trainable_encoder,
            "head": self.head,
            "total": self.total,
            "encoder_shared": self.encoder_shared,
            "encoder_per_task": self.encoder_per_task,
            "tasks": self.tasks,
        }

    def __str__(self) -> str:
        width = max([len(n) for n, _ in self.rows] + [20])
        lines = [f"{'trainable module':<{width}}  {'params':>12}"]
        lines += [f"{name:<{width}}  {count:>12,}" for name, count in self.rows]
        share = 100.0 * self.trainable / max(self.total, 1)
        lines.append(
            f"trainable {self.trainable:,} (encoder {self.trainable_encoder:,} + head "
            f"{self.head:,}) of {self.total:,} ({share:.3f}%)"
        )
        if self.tasks > 1:
            lines.append(
                f"{self.tasks} tasks: encoder shared {self.encoder_shared:,}, per-task copies "
                f"{self.encoder_per_task:,}"
            )
        return "\n".join(lines)


class PeftModel(nn.Module):
    """A frozen backbone adapted by vpeft for one or several named tasks.

    ``pm(x)`` returns the output of a single-task model (e.g. logits) and a dict task -> output
    for a multi-task model; `forward_tasks` always returns the dict. Inputs are an image tensor
    or a dict of tensors. Only trained tensors are saved.
    """

    def __init__(
        self,
        model: nn.Module,
        tasks: Sequence[Task],
        heads: dict[str, nn.Module],
        frozen_fingerprint: str,
    ) -> None:
        super().__init__()
        self.model = model
        self.heads = nn.ModuleDict(heads)
        self.tasks: dict[str, Task] = {t.name: t for t in tasks}
        self.task_state = TaskState(tuple(self.tasks))
        self.spec: BackboneSpec = describe(model)
        self.methods: list[AppliedMethod] = []
        self.forward_override: nn.Module | None = None
        self._custom_head: nn.Module | None = None
        self.frozen_fingerprint = frozen_fingerprint
        self._backbone_params = {id(p) for p in model.parameters()}
        self.task_parameters: TaskParameterCopies | None = None
        #: one set of stage-output norms read by every dense head (`share_stage_norms`)
        self.shared_norms: nn.Module | None = None
        self._task_specific = False
        self._tokenizer: Any = None
        # task -> (its class prompts, their token ids): tokenized once per class set
        self._prompt_ids: dict[str, tuple[tuple[str, ...], dict[str, torch.Tensor]]] = {}
        #: named-adapter bookkeeping (`vpeft.adapters.NamedState`); None for a plain model
        self.named: Any = None

    # -- forward --------------------------------------------------------------------------
    def forward(
        self, inputs: Inputs, task: str | None = None, adapter_names: Sequence[str] | None = None
    ) -> Any:
        """``adapter_names``: one named adapter per sample (a mixed batch, `vpeft.adapters`)."""
        if self.named is not None or adapter_names is not None:
            from . import adapters

            return adapters.forward(self, inputs, task, adapter_names)
        if task is not None:
            return self.forward_tasks(inputs, [task])[task]
        outputs = self.forward_tasks(inputs)
        if len(self.tasks) == 1:
            return next(iter(outputs.values()))
        return outputs

    def forward_tasks(self, inputs: Inputs, tasks: Sequence[str] | None = None) -> dict[str, Any]:
        """Every (or the given) task's output. The backbone runs once for all tasks when no
        method is installed per task, else once per task with that task's copies active."""
        names = list(tasks) if tasks is not None else list(self.tasks)
        unknown = [t for t in names if t not in self.tasks]
        if unknown:
            raise ConfigError(f"unknown task(s) {unknown}; the model's tasks: {list(self.tasks)}")
        if self.forward_override is not None:
            if not names:
                return {}
            with self.task_state.active(names[0]):
                return {names[0]: self.forward_override(pixel_values(inputs))}
        if not self.is_task_specific:
            features = self._features(inputs, names)
            return {t: self._head(t, features, inputs) for t in names}
        outputs = {}
        for t in names:
            with self.task_state.active(t):
                features = self._features(inputs, [t], t)
                outputs[t] = self._head(t, features, inputs)
        return outputs

    @property
    def is_task_specific(self) -> bool:
        """True when some installed module or parameter differs between tasks."""
        return self._task_specific

    def _refresh_task_specific(self) -> None:
        copies = self.task_parameters
        self._task_specific = (copies is not None and len(copies) > 0) or any(
            isinstance(m, TaskSwitch) or getattr(m, "reads_task", False)
            for m in self.model.modules()
        )

    def _features(self, inputs: Inputs, names: Sequence[str], task: str | None = None) -> dict:
        """Features of every kind the tasks `names` read, computed once per kind; kinds that
        depend on the task (`_TASK_FEATURES`, e.g. class-prompt embeddings) once per task,
        keyed ``(kind, task)``."""
        copies = self.task_parameters
        swap = contextlib.nullcontext()
        if task is not None and copies is not None and len(copies) > 0:
            swap = copies.swapped_in(self.model, task)
        kinds = {self.tasks[t].features for t in names}
        unknown = sorted(kinds - set(_FEATURES) - set(_TASK_FEATURES))
        if unknown:
            raise ConfigError(
                f"feature kind(s) {unknown} are unknown; kinds: "
                f"{sorted(_FEATURES) + sorted(_TASK_FEATURES)}"
            )
        with swap:
            out: dict[Any, Any] = {
                kind: _FEATURES[kind](self.spec, inputs) for kind in sorted(kinds & set(_FEATURES))
            }
            for t in names:
                kind = self.tasks[t].features
                if kind in _TASK_FEATURES:
                    out[(kind, t)] = _TASK_FEATURES[kind](self.spec, inputs, self.class_texts(t))
            return out

    def _head(self, task: str, features: dict[Any, Any], inputs: Inputs) -> Any:
        spec = self.tasks[task]
        value = features[(spec.features, task)] if spec.features in _TASK_FEATURES else None
        if value is None:
            value = features[spec.features]
        return spec.run_head(self.heads[task], value, inputs)

    # -- text side of vision-language tasks -----------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The backbone's tokenizer, for texts the model encodes itself (class prompts):
        set here, or found with the backbone (`vpeft.backbones.text.tokenizer_for`)."""
        if self._tokenizer is None:
            from .backbones.text import tokenizer_for

            self._tokenizer = tokenizer_for(self.spec.backbone)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        if isinstance(value, str | Path):
            from .data.vl.tokenizer import load_tokenizer

            value = load_tokenizer(value)
        self._tokenizer = value
        self._prompt_ids.clear()

    def class_texts(self, task: str) -> dict[str, torch.Tensor]:
        """Token ids of the task's class prompts (``task.prompts()``), tokenized once per class
        set with `tokenizer` and cached (a task replaced by ``with_classes`` is re-tokenized)."""
        from .backbones.text import text_positions, tokenize_prompts

        prompts = tuple(self.tasks[task].prompts())  # type: ignore[attr-defined]
        cached = self._prompt_ids.get(task)
        if cached is None or cached[0] != prompts:
            positions = text_positions(self.spec.backbone)
            ids = tokenize_prompts(self.tokenizer, list(prompts), positions)
            cached = self._prompt_ids[task] = (prompts, ids)
        return cached[1]

    # -- named adapters (vpeft.adapters) ---------------------------------------------------
    def add_adapter(
        self, name: str, method: str, num_classes: int | None = None, **kw: Any
    ) -> None:
        """Add a fresh adapter `name` (`method` + options, new head); it becomes active."""
        from . import adapters

        adapters.add_adapter(self, name, method, num_classes, **kw)

    def load_adapter(self, path: str | Path, name: str | None = None, **kw: Any) -> str:
        """Add the adapter of a single-task file under `name` (default: the file stem)."""
        from . import adapters

        return adapters.load_adapter(self, path, name, **kw)

    def set_adapter(self, name: str) -> None:
        """Run (and train) adapter `name`."""
        from . import adapters

        adapters.set_adapter(self, name)

    def delete_adapter(self, name: str) -> None:
        from . import adapters

        adapters.delete_adapter(self, name)

    def disable_adapters(self) -> contextlib.AbstractContextManager[None]:
        """Context: the plain backbone runs, the active adapter's head reads its features."""
        from . import adapters

        return adapters.disable_adapters(self)

    def merge_adapter(self, name: str | None = None) -> None:
        from . import adapters

        adapters.merge_adapter(self, name)

    def unmerge_adapter(self) -> None:
        from . import adapters

        adapters.unmerge_adapter(self)

    def save_adapter(self, name: str, path: str | Path) -> None:
        from . import adapters

        adapters.save_adapter(self, name, path)

    @property
    def active_adapter(self) -> str | None:
        return self.named.active if self.named is not None else None

    @property
    def adapters(self) -> list[str]:
        """Names of the named adapters (the tasks) of this model."""
        return list(self.tasks)

    # -- bookkeeping ----------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Classes of the only task (single-task classification models)."""
        if len(self.tasks) == 1:
            only = next(iter(self.tasks.values()))
            if isinstance(only, ClassificationTask):
                return only.num_classes
        raise AttributeError("num_classes is defined for single-task classification models")

    @property
    def head(self) -> nn.Module:
        """The head of a single-task model (a method's own head when it supplies one)."""
        if self._custom_head is not None:
            return self._custom_head
        if len(self.heads) != 1:
            raise AttributeError(f"this model has {len(self.heads)} heads; use pm.heads[task]")
        return next(iter(self.heads.values()))

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Qualified name -> parameter, for every parameter that trains."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def summary(self) -> Summary:
        """Trainable parameters (encoder shared / per task, head, all) and a per-module table."""
        head_ids = {id(p) for p in self.heads.parameters()}
        if self.shared_norms is not None:
            head_ids |= {id(p) for p in self.shared_norms.parameters()}
        if self._custom_head is not None:
            head_ids |= {id(p) for p in self._custom_head.parameters()}
        per_task_ids = {
            id(p)
            for m in self.modules()
            if isinstance(m, TaskSwitch | TaskParameterCopies)
            for p in m.parameters()
        }
        trainable = self.trainable_parameters()
        count = lambda ids: sum(p.numel() for p in trainable.values() if id(p) in ids)  # noqa: E731
        head = count(head_ids)
        per_task = count(per_task_ids - head_ids)
        n_trainable = sum(p.numel() for p in trainable.values())
        total = sum(p.numel() for p in self.parameters())
        rows: dict[str, int] = {}
        for name, p in trainable.items():
            module_name = name.rsplit(".", 1)[0] if "." in name else name
            rows[module_name] = rows.get(module_name, 0) + p.numel()
        encoder = n_trainable - head
        return Summary(
            n_trainable,
            encoder,
            head,
            total,
            list(rows.items()),
            encoder_shared=encoder - per_task,
            encoder_per_task=per_task,
            tasks=len(self.tasks),
        )

    def print_summary(self) -> None:
        print(self.summary())

    def select_tasks(self, names: Sequence[str]) -> PeftModel:
        """Keep only the tasks `names` (their heads and per-task copies); returns self."""
        unknown = [t for t in names if t not in self.tasks]
        if unknown or not names:
            raise ConfigError(
                f"cannot select tasks {list(names)}; the model has {list(self.tasks)}"
            )
        keep = [t for t in self.tasks if t in names]
        for t in list(self.tasks):
            if t not in keep:
                del self.heads[t]
                for m in self.modules():
                    if isinstance(m, TaskSwitch):
                        del m.copies[t]
                    elif isinstance(m, TaskParameterCopies):
                        del m.tasks[t]
        self.tasks = {t: self.tasks[t] for t in keep}
        self.task_state.tasks = tuple(keep)
        self._refresh_task_specific()
        return self

    # -- files ----------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        meta = {
            "vpeft_version": __version__,
            "file_version": FILE_VERSION,
            "methods": [m.to_json() for m in self.methods],
            "tasks": [t.to_json() for t in self.tasks.values()],
            "backbone": backbone_identity(self.model, self.spec),
            "fingerprint": self.frozen_fingerprint,
        }
        with contextlib.suppress(AttributeError):
            meta["num_classes"] = self.num_classes
        return meta

    def save(self, path: str | Path) -> None:
        """Write the trained tensors (+ buffers of trained modules, e.g. BatchNorm statistics,
        + method state) and metadata to a safetensors file."""
        tensors = dict(self.trainable_parameters())
        tensors.update({f"__buffer__.{k}": v for k, v in trained_buffers(self).items()})
        for i, method in enumerate(self.methods):
            for key, t in method.config.to_tensors().items():
                tensors[f"__config__.{i}.{key}"] = t
        write_safetensors(path, tensors, self.metadata(), adapter_info.extras(self))

    # -- merge ----------------------------------------------------------------------------
    def merge(self, inplace: bool = False, task: str | None = None) -> nn.Module:
        """Fold every re-parameterisable method into the weights; return the plain backbone
        with the task's classifier in its classifier slot (timm models)."""
        blocking = [m.name for m in self.methods if not get_method(m.name).mergeable]
        if blocking:
            raise NotMergeableError(
                f"method(s) {blocking} add modules that cannot be folded into the backbone "
                "weights; use the PeftModel directly"
            )
        if len(self.tasks) > 1 and (task is None or self.is_task_specific):
            raise NotMergeableError(
                "merge() of a multi-task model needs the per-task copies folded one task at a "
                "time: use pm.select_tasks([task]).merge()"
            )
        name = task or next(iter(self.tasks))
        target = self.model if inplace else copy.deepcopy(self.model)
        unwrap_all(target)
        leftovers = [n for n, m in target.named_modules() if isinstance(m, AdaptedLayer)]
        if leftovers:
            raise NotMergeableError(f"modules still wrapped after merge: {leftovers}")
        head = self.heads[name] if inplace else copy.deepcopy(self.heads[name])
        only = self.tasks[name]
        if isinstance(only, ClassificationTask) and hasattr(target, "reset_classifier"):
            reattach_classifier(target, head, only.num_classes)
        target.requires_grad_(False)
        return target


#: feature kind -> ``fn(spec, inputs)`` (the kinds `Task.features` names; tasks/vl.py lists
#: what each VL kind must hold)
_FEATURES = {
    "pooled": pooled_features,
    "maps": feature_maps,
    "pooled_pair": pooled_pair_features,
    "embeddings": pair_embeddings,
}
#: kinds that also depend on the task: ``fn(spec, inputs, class_texts)``
_TASK_FEATURES = {"class_embeddings": class_embeddings}


def backbone_identity(model: nn.Module, spec: BackboneSpec) -> dict[str, Any]:
    """A small description of the backbone architecture stored in saved files."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return {
        "family": spec.family,
        "architecture": cfg.get("architecture", type(model).__name__),
        "depth": spec.depth,
        "embed_dim": spec.embed_dim,
        "num_features": spec.num_features,
    }


def feature_info(spec: BackboneSpec) -> FeatureInfo:
    """What the backbone offers task heads (pooled width, tapped maps, its classifier)."""
    dims, strides = spec.tap_channels_and_strides()
    return FeatureInfo(
        pooled_dim=spec.num_features,
        map_dims=dims,
        map_strides=strides,
        new_classifier=classifier_factory(spec),
        embed_dim=int(getattr(getattr(spec.backbone, "config", None), "projection_dim", 0) or 0),
    )


def apply(
    model: nn.Module | PeftModel,
    method: str,
    num_classes: int | None = None,
    *,
    tasks: Sequence[Task] | None = None,
    shared: bool | None = None,
    shared_norms: bool | None = None,
    **options: Any,
) -> PeftModel:
    """Install `method` into a backbone (or on top of an existing `PeftModel`).

    A plain backbone gets frozen and one head per task: ``num_classes=N`` builds a single
    classification task (named ``main``); ``tasks=[...]`` any set of named `Task`s. The method
    is installed once per task (``shared=False``, the default of single-task methods on a
    multi-task model: the dense papers' setting) or once for all tasks (``shared=True``).
    Dense tasks keep their own stage-output norms unless ``shared_norms`` (default: when
    ``shared=True`` is given, or the method asks for it, e.g. ``shared-adapter``): then one set
    serves every task (spec/polyhistor.md: multi-task fine-tuning and Shared Adapter).
    Returns the `PeftModel`.
    """
    info = get_method(method)
    config = info.config.from_options(options)
    if isinstance(model, PeftModel):
        pm = model
        if num_classes is not None and (len(pm.tasks) != 1 or num_classes != pm.num_classes):
            raise ConfigError(f"num_classes={num_classes} differs from the model's tasks")
        if tasks is not None:
            raise ConfigError("tasks= is given when the backbone is first adapted")
        _check_family(info, method, pm.spec)
        _install(pm, info, method, config, shared, shared_norms)
        return pm
    task_list = _task_list(num_classes, tasks)
    model = with_head(model)  # transformers base models get timm's classifier API
    spec = describe(model)  # clear error on unsupported backbones, before any change
    _check_family(info, method, spec)
    undo = _HeadUndo(model)
    try:
        features = feature_info(spec)
        heads = {t.name: t.build_head(features) for t in task_list}
        fp = fingerprint(frozen_state(model, exclude=spec.classifier()))
        model.requires_grad_(False)
        pm = PeftModel(model, task_list, heads, fp)
        # heads train, except tensors a task declares frozen (CLIP's fixed temperature)
        declared_frozen = [p for p in pm.heads.parameters() if not p.requires_grad]
        pm.heads.requires_grad_(True)
        for p in declared_frozen:
            p.requires_grad_(False)
        _install(pm, info, method, config, shared, shared_norms)
    except BaseException:
        undo.restore()  # a failed install leaves the user's model as it was given
        raise
    return pm


def _task_list(num_classes: int | None, tasks: Sequence[Task] | None) -> list[Task]:
    if tasks is not None and num_classes is not None:
        raise ConfigError("give either num_classes (one classification task) or tasks, not both")
    if tasks is None:
        if num_classes is None:
            raise ConfigError("num_classes (or tasks=) is required when adapting a plain backbone")
        return [ClassificationTask(DEFAULT_TASK, num_classes=num_classes)]
    task_list = list(tasks)
    names = [t.name for t in task_list]
    if not task_list or len(set(names)) != len(names):
        raise ConfigError(f"tasks must be a non-empty list with distinct names, got {names}")
    return task_list


def _check_family(info: Any, method: str, spec: BackboneSpec) -> None:
    if info.backbones is not None and spec.family not in info.backbones:
        from .errors import UnsupportedBackboneError

        raise UnsupportedBackboneError(
            f"method {method!r} is not meaningful on {spec.family} backbones; supported: "
            f"{list(info.backbones)}"
        )


class _HeadUndo:
    """Remembers a plain model's classifier and requires_grad flags to undo a failed apply()."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags = [(p, p.requires_grad) for p in model.parameters()]
        self.num_classes = getattr(model, "num_classes", None)
        get = getattr(model, "get_classifier", None)
        head = get() if callable(get) else None
        self.slot = next(
            (
                (parent, name)
                for parent in model.modules()
                for name, child in parent.named_children()
                if child is head
            ),
            None,
        )
        self.head = head

    def restore(self) -> None:
        if self.slot is not None:
            setattr(self.slot[0], self.slot[1], self.head)
        if self.num_classes is not None:
            self.model.num_classes = self.num_classes
        for p, flag in self.flags:
            p.requires_grad_(flag)


def _install(
    pm: PeftModel,
    info: Any,
    method: str,
    config: Any,
    shared: bool | None,
    shared_norms: bool | None = None,
) -> None:
    multi_task = getattr(info, "multi_task", False)
    per_task = not multi_task and not (shared if shared is not None else False)
    ctx = InstallContext(
        pm.model,
        pm.spec,
        method,
        _num_classes_or_zero(pm),
        task_state=pm.task_state,
        per_task=per_task,
        backbone_params=pm._backbone_params,
        copy_per_task=lambda p: _task_copies(pm, p),
        heads=pm.heads,
        unused=_unused_parameters(pm),
    )
    info.install(ctx, config)
    # one set of stage-output norms when the whole encoder adaptation is shared (multi-task
    # full FT, Shared Adapter); a shared method added to per-task ones leaves them per task
    asked = shared is True or ctx.stage_norms_shared
    share = (
        shared_norms if shared_norms is not None else (asked and all(m.shared for m in pm.methods))
    )
    if share and len(pm.tasks) > 1:
        from .tasks.dense import share_stage_norms

        norms = share_stage_norms(pm.heads.values())
        if norms is not None and pm.shared_norms is None:
            pm.shared_norms = norms
    if ctx.forward_override is not None:
        if len(pm.tasks) > 1:
            raise ConfigError(f"method {method!r} replaces the forward; it supports one task")
        if pm.forward_override is not None:
            raise ConfigError(
                f"method {method!r} replaces the model's forward, which "
                f"{type(pm.forward_override).__name__} already does; apply only one "
                "feature-extracting method (vqt, head2toe) per model"
            )
        pm.forward_override = ctx.forward_override
        # the method's head replaces the task head; a plain reference (named once, in the
        # forward module)
        pm.heads[next(iter(pm.tasks))] = nn.Identity()
        object.__setattr__(pm, "_custom_head", ctx.head)
    pm.methods.append(
        AppliedMethod(
            method,
            config,
            shared=not ctx.copies_per_task,
            shared_norms=pm.shared_norms is not None,
        )
    )
    pm._refresh_task_specific()


def _unused_parameters(pm: PeftModel) -> set[int]:
    """Backbone parameters no task reads: when every task reads feature maps, the modules the
    feature taps never run (Swin's final norm; spec/polyhistor.md counts the encoder without
    it). Methods leave them frozen."""
    if not pm.tasks or any(t.features != "maps" for t in pm.tasks.values()):
        return set()
    return {id(p) for m in pm.spec.unused_by_taps() for p in m.parameters()}


def _num_classes_or_zero(pm: PeftModel) -> int:
    try:
        return pm.num_classes
    except AttributeError:
        return 0


def _task_copies(pm: PeftModel, original: nn.Parameter) -> list[nn.Parameter]:
    """Per-task copies of a frozen backbone parameter (created on first use); the optimiser
    decides their weight decay as their original's (`vpeft.train.optim`)."""
    if pm.task_parameters is None:
        pm.task_parameters = TaskParameterCopies(pm.task_state.tasks)
    return pm.task_parameters.add(original)


def _check_metadata(path: str | Path, meta: dict[str, Any]) -> None:
    """Raise `AdapterFileError` unless the metadata keys `load` reads have their saved types."""
    backbone = meta["backbone"]
    methods = meta["methods"]
    problems = []
    if not isinstance(meta["fingerprint"], str):
        problems.append("fingerprint is not a string")
    if not (isinstance(backbone, dict) and isinstance(backbone.get("architecture"), str)):
        problems.append("backbone is not an object naming its architecture")
    elif not all(k in backbone for k in ("family", "depth", "embed_dim", "num_features")):
        problems.append("backbone lacks family / depth / embed_dim / num_features")
    if not (isinstance(meta["tasks"], list) and all(isinstance(t, dict) for t in meta["tasks"])):
        problems.append("tasks is not a list of objects")
    if not (isinstance(methods, list) and methods):
        problems.append("methods is not a non-empty list")
    else:
        for entry in methods:
            ok = isinstance(entry, dict) and isinstance(entry.get("name"), str)
            ok = ok and isinstance(entry.get("options"), dict)
            if not (ok and isinstance(entry.get("shared", True), bool)):
                problems.append(f"method entry {str(entry)[:80]} is malformed")
                break
    if problems:
        raise AdapterFileError(
            f"{path} has corrupted metadata ({'; '.join(problems)}); re-create or restore it"
        )
    for entry in methods:
        entry.setdefault("shared", True)


def load(
    path: str | Path,
    base: nn.Module,
    strict_fingerprint: bool = True,
    tasks: Sequence[str] | None = None,
) -> PeftModel:
    """Rebuild a saved `PeftModel` on `base` (the same pretrained backbone it was trained on);
    ``tasks`` keeps a subset of a multi-task file's tasks."""
    tensors, meta = read_safetensors(path)
    for key in ("methods", "backbone", "fingerprint", "tasks"):
        if key not in meta:
            raise AdapterFileError(
                f"{path}: metadata lacks {key!r}; the file is corrupted or was written by an "
                "older vpeft (before tasks were stored)"
            )
    _check_metadata(path, meta)
    base = with_head(base)
    spec = describe(base)
    want = meta["backbone"]
    have = backbone_identity(base, spec)
    mismatched = [k for k in ("family", "depth", "embed_dim", "num_features") if want[k] != have[k]]
    if mismatched:
        raise AdapterFileError(
            f"{path} was trained on {want['architecture']} ({want}); the given base is "
            f"{have['architecture']} ({have}); mismatch in {mismatched}"
        )
    try:
        task_list = [task_from_json(entry) for entry in meta["tasks"]]
    except (VpeftError, TypeError, KeyError, ValueError, AttributeError) as err:
        raise AdapterFileError(f"{path}: unreadable task description ({err!r})") from None
    head_ids = {id(p) for p in spec.classifier().parameters()}
    state = {k: v for k, v in frozen_state(base).items() if id(v) not in head_ids}
    fp = fingerprint(state)
    if strict_fingerprint and fp != meta["fingerprint"]:
        raise AdapterFileError(
            f"{path} was trained on a backbone with different frozen weights (fingerprint "
            f"{meta['fingerprint']} vs {fp}); pass the same pretrained weights, or "
            "strict_fingerprint=False to load anyway"
        )
    pm: nn.Module | PeftModel = base
    for i, entry in enumerate(meta["methods"]):
        info = get_method(entry["name"])
        prefix = f"__config__.{i}."
        extra = {k[len(prefix) :]: t for k, t in tensors.items() if k.startswith(prefix)}
        kwargs: dict[str, Any] = {"tasks": task_list} if i == 0 else {}
        try:
            options = info.config.from_saved(entry["options"], extra)
            pm = apply(
                pm,
                entry["name"],
                shared=entry["shared"],
                shared_norms=entry.get("shared_norms", False),
                **kwargs,
                **options,
            )
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as err:
            # hostile or damaged options that the config's own checks did not word
            raise AdapterFileError(
                f"{path}: unreadable options of method {entry['name']!r} ({err!r})"
            ) from None
    assert isinstance(pm, PeftModel)
    pm.frozen_fingerprint = meta["fingerprint"]
    adapter_info.restore(pm, meta)  # class names, preprocessing
    special = ("__config__.", "__buffer__.")
    trained = {k: v for k, v in tensors.items() if not k.startswith(special)}
    load_matching(path, pm.trainable_parameters(), trained)
    mark = "__buffer__."
    buffers = {k[len(mark) :]: v for k, v in tensors.items() if k.startswith(mark)}
    load_matching(path, trained_buffers(pm), buffers)
    if tasks is not None:
        pm.select_tasks(list(tasks))
    return pm
