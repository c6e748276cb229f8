"""Optimisers of the papers and the per-parameter weight-decay rule.

Which trainable parameter decays is decided structurally, never from its name:

1. an explicit tag wins: installers call ``ctx.train(p, weight_decay=False)``, which sets
   ``p._vpeft_no_decay = True`` (never decay: VPT prompts, VQT query tokens, SPT sparse deltas),
   or ``weight_decay=True`` (always decay, e.g. to reproduce a reference that decays its query
   tokens); any code may set the attribute directly;
2. tensors the backbone itself declares as token / position embeddings do not decay: the class
   token and position embedding of the `BackboneSpec`, and the parameters the timm model lists in
   its ``no_weight_decay()`` (resolved by exact lookup with ``get_parameter``);
3. every parameter with ``ndim <= 1`` does not decay (biases, norm affine parameters, 1-D deltas);
4. every parameter owned by a normalisation module (LayerNorm / GroupNorm / BatchNorm / RMSNorm and
   their subclasses) does not decay;
5. everything else decays.

A method may also set ``p._vpeft_lr_scale = s`` to train a tensor with ``s`` times the scheduled
learning rate (e.g. APT's heads at ×10). Tags are plain attributes on the ``nn.Parameter``; they
survive ``.to()`` but not ``copy.deepcopy`` (re-install the method instead, as `vpeft.load` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..backbones.spec import NORM_TYPES
from ..core.context import NO_DECAY_ATTR
from ..core.task_params import TaskParameterCopies
from ..errors import ConfigError

LR_SCALE_ATTR = "_vpeft_lr_scale"

_NORMS: tuple[type[nn.Module], ...] = (
    *NORM_TYPES,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def no_weight_decay(*params: nn.Parameter) -> None:
    """Tag parameters so that they never receive weight decay (rule 1 of this module)."""
    for p in params:
        setattr(p, NO_DECAY_ATTR, True)


@dataclass(frozen=True)
class DecayDecision:
    """Whether one parameter decays, and which rule decided it."""

    name: str
    decay: bool
    reason: str
    lr_scale: float


def _declared_embeddings(model: nn.Module) -> set[int]:
    """ids of class tokens / position embeddings the backbone declares (rule 2)."""
    ids: set[int] = set()
    spec = getattr(model, "spec", None)
    backbone = getattr(model, "model", model)
    if spec is not None:
        ids.update(id(t) for t in (spec.cls_token, spec.pos_embed) if t is not None)
    declared = getattr(backbone, "no_weight_decay", None)
    if callable(declared):
        for name in declared():
            try:
                ids.add(id(backbone.get_parameter(name)))
            except AttributeError:
                continue  # e.g. 'dist_token' on a ViT without distillation token
    return ids


def decay_decisions(model: nn.Module) -> list[DecayDecision]:
    """The weight-decay decision for every trainable parameter of `model`, in module order."""
    embeddings = _declared_embeddings(model)
    copies = _task_copy_originals(model)
    seen: set[int] = set()
    decisions: list[DecayDecision] = []
    for module_name, module in model.named_modules():
        for local, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            name = f"{module_name}.{local}" if module_name else local
            original, owner = copies.get(id(p), (p, module))
            decay, reason = _decide(p, original, owner, embeddings)
            scale = float(getattr(p, LR_SCALE_ATTR, 1.0))
            if scale <= 0:
                raise ConfigError(f"parameter {name} has lr scale {scale}; it must be > 0")
            decisions.append(DecayDecision(name, decay, reason, scale))
    return decisions


def _task_copy_originals(model: nn.Module) -> dict[int, tuple[nn.Parameter, nn.Module]]:
    """id(per-task copy) -> (the backbone parameter it copies, that parameter's owner module):
    a copy decays as its original would (rules 2–4 look at the original)."""
    owners = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    return {
        key: (original, owners.get(id(original), model))
        for m in model.modules()
        if isinstance(m, TaskParameterCopies)
        for key, original in m.original_of().items()
    }


def _decide(
    p: nn.Parameter, original: nn.Parameter, owner: nn.Module, embeddings: set[int]
) -> tuple[bool, str]:
    """Rule 1 reads `p`'s own tag; rules 2–4 look at `original` (`p` itself, or the backbone
    parameter a per-task copy stands for) and its owner module."""
    tag = getattr(p, NO_DECAY_ATTR, None)
    if tag is not None:
        return (not bool(tag), "tagged")
    p = original
    if id(p) in embeddings:
        return (False, "token/position embedding")
    if p.ndim <= 1:
        return (False, "1-D")
    if isinstance(owner, _NORMS):
        return (False, "norm")
    return (True, "weight")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups: one per (decays?, lr scale), with ``weight_decay`` and
    ``lr_scale`` set. Raises `ConfigError` when nothing trains."""
    params = dict(model.named_parameters())
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for d in decay_decisions(model):
        groups.setdefault((d.decay, d.lr_scale), []).append(params[d.name])
    if not groups:
        raise ConfigError("the model has no trainable parameters; install a method first")
    return [
        {"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        for (decay, scale), ps in groups.items()
    ]


def build_optimizer(
    name: str,
    groups: Iterable[dict[str, Any]],
    lr: float,
    momentum: float = 0.9,
    betas: tuple[float, ...] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """The named optimiser over `groups` (each group keeps its own ``weight_decay``).

    - ``adamw``: Adam with decoupled weight decay, θ ← θ − lr·(m̂/(√v̂+ε) + λθ) (Loshchilov & Hutter).
    - ``adam``: Adam with coupled L2, g ← g + λθ before the moments (as VQT's reference).
    - ``sgd``: SGD with momentum and coupled L2.
    """
    groups = list(groups)
    b = (float(betas[0]), float(betas[1]))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=b)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=b)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ConfigError(f"unknown optimizer {name!r}; choose adamw, adam or sgd")
