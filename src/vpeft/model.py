"""`PeftModel`: a frozen timm backbone with one or more methods installed, and its public API."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .backbones import BackboneSpec, describe, with_head
from .core.context import InstallContext
from .core.registry import get_method
from .core.wrapper import AdaptedLayer, NotMergeableError, unwrap_all
from .errors import AdapterFileError, ConfigError, VpeftError
from .io import fingerprint, frozen_state, load_matching, read_safetensors, write_safetensors


@dataclass
class AppliedMethod:
    """One installed method: its name and validated config."""

    name: str
    config: Any

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.config.to_dict()}


@dataclass
class Summary:
    """Trainable / total parameter counts, split into encoder and head, plus a per-module table."""

    trainable: int
    trainable_encoder: int
    head: int
    total: int
    rows: list[tuple[str, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "trainable": self.trainable,
            "trainable_encoder": self.trainable_encoder,
            "head": self.head,
            "total": self.total,
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
        return "\n".join(lines)


class PeftModel(nn.Module):
    """A backbone adapted by vpeft. Call it like the backbone; only trained tensors are saved."""

    def __init__(self, model: nn.Module, num_classes: int, frozen_fingerprint: str) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.spec: BackboneSpec = describe(model)
        self.methods: list[AppliedMethod] = []
        self.forward_override: nn.Module | None = None
        self._custom_head: nn.Module | None = None
        self.frozen_fingerprint = frozen_fingerprint

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        runner = self.forward_override if self.forward_override is not None else self.model
        return runner(x)

    # -- bookkeeping ----------------------------------------------------------------------
    @property
    def head(self) -> nn.Module:
        """The task head (the backbone's classifier unless a method supplies its own)."""
        return self._custom_head if self._custom_head is not None else self.model.get_classifier()

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Qualified name -> parameter, for every parameter that trains."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def summary(self) -> Summary:
        """Trainable parameters (encoder / head / all) and a per-module table."""
        head_ids = {id(p) for p in self.head.parameters()}
        trainable = self.trainable_parameters()
        head = sum(p.numel() for p in trainable.values() if id(p) in head_ids)
        total = sum(p.numel() for p in self.parameters())
        n_trainable = sum(p.numel() for p in trainable.values())
        rows: dict[str, int] = {}
        for name, p in trainable.items():
            module_name = name.rsplit(".", 1)[0] if "." in name else name
            rows[module_name] = rows.get(module_name, 0) + p.numel()
        return Summary(n_trainable, n_trainable - head, head, total, list(rows.items()))

    def print_summary(self) -> None:
        print(self.summary())

    # -- files ----------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "vpeft_version": __version__,
            "methods": [m.to_json() for m in self.methods],
            "num_classes": self.num_classes,
            "backbone": backbone_identity(self.model, self.spec),
            "fingerprint": self.frozen_fingerprint,
        }

    def save(self, path: str | Path) -> None:
        """Write only the trained tensors (+ method state) and metadata to a safetensors file."""
        tensors = dict(self.trainable_parameters())
        for i, method in enumerate(self.methods):
            for key, t in method.config.to_tensors().items():
                tensors[f"__config__.{i}.{key}"] = t
        write_safetensors(path, tensors, self.metadata())

    # -- merge ----------------------------------------------------------------------------
    def merge(self, inplace: bool = False) -> nn.Module:
        """Fold every re-parameterisable method into the weights; return the plain timm model."""
        blocking = [m.name for m in self.methods if not get_method(m.name).mergeable]
        if blocking:
            raise NotMergeableError(
                f"method(s) {blocking} add modules that cannot be folded into the backbone "
                "weights; use the PeftModel directly"
            )
        target = self.model if inplace else copy.deepcopy(self.model)
        unwrap_all(target)
        leftovers = [n for n, m in target.named_modules() if isinstance(m, AdaptedLayer)]
        if leftovers:
            raise NotMergeableError(f"modules still wrapped after merge: {leftovers}")
        target.requires_grad_(False)
        return target


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


def apply(
    model: nn.Module | PeftModel,
    method: str,
    num_classes: int | None = None,
    **options: Any,
) -> PeftModel:
    """Install `method` into a timm `model` (or on top of an existing `PeftModel`).

    The backbone is frozen, a new `num_classes` head is attached (timm's `reset_classifier`),
    then the method marks exactly the tensors it trains. Returns the `PeftModel`.
    """
    info = get_method(method)
    config = info.config.from_options(options)
    if isinstance(model, PeftModel):
        pm = model
        if num_classes is not None and num_classes != pm.num_classes:
            raise ConfigError(
                f"num_classes={num_classes} differs from the model's {pm.num_classes}"
            )
    else:
        if num_classes is None:
            raise ConfigError("num_classes is required when adapting a plain backbone")
        model = with_head(model)  # transformers base models get timm's classifier API
        spec = describe(model)  # clear error on unsupported backbones, before any change
        if info.backbones is not None and spec.family not in info.backbones:
            raise _unsupported(method, spec.family, info.backbones)
        undo = _HeadUndo(model)
        model.reset_classifier(num_classes)
        fp = fingerprint(frozen_state(model, exclude=spec.classifier()))
        model.requires_grad_(False)
        pm = PeftModel(model, num_classes, fp)
        pm.head.requires_grad_(True)
        try:
            _install(pm, info, method, config)
        except BaseException:
            undo.restore()  # a failed install leaves the user's model as it was given
            raise
        return pm
    if info.backbones is not None and pm.spec.family not in info.backbones:
        raise _unsupported(method, pm.spec.family, info.backbones)
    _install(pm, info, method, config)
    return pm


class _HeadUndo:
    """Remembers a plain model's classifier and requires_grad flags to undo a failed apply()."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags = [(p, p.requires_grad) for p in model.parameters()]
        self.num_classes = getattr(model, "num_classes", None)
        head = model.get_classifier()
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


def _install(pm: PeftModel, info: Any, method: str, config: Any) -> None:
    ctx = InstallContext(pm.model, pm.spec, method, pm.num_classes)
    info.install(ctx, config)
    if ctx.forward_override is not None:
        if pm.forward_override is not None:
            raise ConfigError(
                f"method {method!r} replaces the model's forward, which "
                f"{type(pm.forward_override).__name__} already does; apply only one "
                "feature-extracting method (vqt, head2toe) per model"
            )
        pm.forward_override = ctx.forward_override
        # a plain reference: the head is a submodule of forward_override (named once there)
        object.__setattr__(pm, "_custom_head", ctx.head)
    pm.methods.append(AppliedMethod(method, config))


def _unsupported(method: str, family: str, families: tuple[str, ...]) -> VpeftError:
    from .errors import UnsupportedBackboneError

    return UnsupportedBackboneError(
        f"method {method!r} is not meaningful on {family} backbones; supported: {list(families)}"
    )


def load(path: str | Path, base: nn.Module, strict_fingerprint: bool = True) -> PeftModel:
    """Rebuild a saved `PeftModel` on `base` (the same pretrained backbone it was trained on)."""
    tensors, meta = read_safetensors(path)
    for key in ("methods", "num_classes", "backbone", "fingerprint"):
        if key not in meta:
            raise AdapterFileError(f"{path}: metadata lacks {key!r}; the file is corrupted")
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
    base.reset_classifier(meta["num_classes"])
    fp = fingerprint(frozen_state(base, exclude=spec.classifier()))
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
        options = info.config.from_saved(entry["options"], extra)
        pm = apply(pm, entry["name"], num_classes=meta["num_classes"], **options)
    assert isinstance(pm, PeftModel)
    pm.frozen_fingerprint = meta["fingerprint"]
    trained = {k: v for k, v in tensors.items() if not k.startswith("__config__.")}
    load_matching(path, pm.trainable_parameters(), trained)
    return pm
