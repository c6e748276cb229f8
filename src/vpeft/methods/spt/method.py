"""SPT (He et al., Sensitivity-Aware Visual Parameter-Efficient Fine-Tuning, ICCV 2023).

`spt-lora` / `spt-adapter` install an SPT plan (`vpeft.methods.spt.plan`): the structured module
(LoRA or Adapter, `vpeft.methods.spt.structured`) on every matrix the plan marks, sparse deltas
(`vpeft.methods.spt.sparse`) on the selected entries of every other matrix, vector and tensor —
norms included —, and the class token. The plan comes from `plan=FILE`
(`vpeft sensitivity … --plan-out`)
or is allocated at install time from `budget=` and a sensitivity source (`sensitivity=FILE`; when
absent, random-data sensitivity, meaningful only for parameter counts).

The plan travels with saved adapter files: its indices through `to_tensors()`, the rest as JSON
options, so `vpeft.load` rebuilds the model from the file alone.

Merging: `spt-lora` folds LoRA and sparse deltas into the weights (mergeable). `spt-adapter` is
reported not mergeable (its adapters stay modules); `vpeft.methods.spt.fold_sparse(pm)` folds its
sparse deltas for inference.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ...core.config import MethodConfig, option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...core.wrapper import AdaptedLayer
from ...errors import ConfigError
from .candidates import Candidates, find_candidates
from .plan import SptPlan, build_plan
from .sensitivity import RANDOM_BATCHES, Sensitivity, random_sensitivity
from .sparse import SparseDelta, SparseLinearDelta
from .structured import SptAdapter, SptLora, SptParallelAdapter


@dataclass
class SptConfig(MethodConfig):
    plan: SptPlan | str | None = option(  # noqa: RUF009 (a plain dataclasses.field)
        None, "SPT plan file (`vpeft sensitivity … --budget B --plan-out FILE`); or give budget="
    )
    budget: int | None = option(
        None,
        "trainable-parameter budget, e.g. 0.4M (head excluded, class token included); the plan "
        "is allocated at install time from `sensitivity`",
    )
    sensitivity: Sensitivity | str | None = option(  # noqa: RUF009 (a plain dataclasses.field)
        None,
        "sensitivity file from `vpeft sensitivity` (used with budget=); when absent, random-data "
        f"sensitivity ({RANDOM_BATCHES} seeded random batches) stands in — fine for parameter "
        "counts (`vpeft params`), not for training",
    )
    rank: int = option(8, "rank r of the structured module (LoRA rank / adapter bottleneck)")
    alpha: float = option(10.0, "a matrix is tuned structurally when it holds >= cost/alpha picks")
    beta: float = option(5.0, "a vector is tuned whole when it holds >= length/beta picks")
    fill: bool = option(
        True, "fill the budget with next-ranked sparse entries (false: the reference's top-tau)"
    )
    dropout: float = option(0.1, "dropout on the structured branch input (none on proj)")
    drop_path: float = option(0.1, "drop-path (stochastic depth) on the structured branch")
    independent_drop_path: bool = option(
        False,
        "spt-lora: one drop-path mask per q/k/v branch of a fused qkv layer (the reference); "
        "default: one mask shared by the layer's branches",
    )
    search: Literal["exact", "official"] = option(
        "exact",
        "budget search: exact (reaches the budget; see fill) or official (the reference's "
        "sweep tau = 20k, 40k, ..., 1.58M; may end under the budget, with a warning)",
    )

    def validate(self) -> None:
        self._require(
            self.plan is None or self.budget is None, "give either plan= or budget=, not both"
        )
        self._require(
            self.budget is None or self.budget >= 1, f"budget must be >= 1, got {self.budget}"
        )
        self._require(
            self.sensitivity is None or self.plan is None,
            "sensitivity= is used with budget=; a plan already holds its allocation",
        )
        self._require(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        self._require(self.alpha > 0 and self.beta > 0, "alpha and beta must be > 0")
        for name in ("dropout", "drop_path"):
            value = getattr(self, name)
            self._require(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value}")

    # -- the plan travels with saved files ------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(self.plan, SptPlan):
            out.update(plan=self.plan.to_json(), budget=None, sensitivity=None)
        for key in ("plan", "sensitivity"):
            if isinstance(out[key], Path):
                out[key] = str(out[key])
            if isinstance(out[key], Sensitivity):
                out[key] = None  # consumed at install time
        return out

    def to_tensors(self) -> dict[str, Any]:
        return self.plan.index_tensors() if isinstance(self.plan, SptPlan) else {}

    @classmethod
    def from_saved(cls, options: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
        options = dict(options)
        if isinstance(options.get("plan"), dict):
            options["plan"] = SptPlan.from_json(options["plan"], tensors)
        return options


def _resolve_plan(ctx: InstallContext, cfg: SptConfig, structured: str) -> SptPlan:
    if isinstance(cfg.plan, SptPlan):
        return cfg.plan
    if isinstance(cfg.plan, str | Path):
        return SptPlan.load(cfg.plan)
    if cfg.budget is None:
        raise ConfigError(
            f"{ctx.method} needs plan=FILE, or budget=N with sensitivity=FILE (both made by "
            "`vpeft sensitivity`)"
        )
    sensitivity = cfg.sensitivity
    if isinstance(sensitivity, str | Path):
        sensitivity = Sensitivity.load(sensitivity)
    if sensitivity is None:
        warnings.warn(
            f"{ctx.method}: no sensitivity given; allocating from random-data sensitivity "
            f"({RANDOM_BATCHES} seeded random batches). The parameter count is right, the "
            "positions are not task-specific: use `vpeft sensitivity` on the task's data",
            UserWarning,
            stacklevel=2,
        )
        sensitivity = random_sensitivity(ctx.model, ctx.num_classes)
    return build_plan(
        ctx.model, sensitivity, cfg.budget, structured, cfg.rank, cfg.alpha, cfg.beta, cfg.fill,
        cfg.search,
    )  # fmt: skip


def _install_structured(
    ctx: InstallContext, plan: SptPlan, candidates: Candidates, cfg: SptConfig
) -> None:
    layers: dict[tuple[int, str], list[tuple[str, Any]]] = {}
    for e in plan.entries:
        if e.decision == "structured":
            slot = candidates.slots[e.unit.key]
            layers.setdefault((id(slot.parent), slot.attr), []).append((e.unit.role, slot))
    for group in layers.values():
        first = group[0][1]
        linear = first.linear
        like = {"device": linear.weight.device, "dtype": linear.weight.dtype}
        wrapper = AdaptedLayer.wrap(first.parent, first.attr)
        if plan.structured == "lora":
            parts = {
                role: (0, linear.out_features) if s.rows is None else (s.rows.start, s.rows.stop)
                for role, s in group
            }
            dropout = 0.0 if group[0][0] == "proj" else cfg.dropout
            branch = SptLora(
                linear.in_features, linear.out_features, parts, plan.rank, dropout, cfg.drop_path,
                cfg.independent_drop_path,
            ).to(**like)  # fmt: skip
            wrapper.add_parallel("spt_lora", branch)
            ctx.train(branch)
            continue
        for role, slot in group:
            if role == "proj":
                module: nn.Module = SptParallelAdapter(
                    slot.in_features, slot.out_features, plan.rank, cfg.drop_path
                ).to(**like)
                wrapper.add_parallel("spt_adapter_proj", module, slot.rows)
            else:
                module = SptAdapter(slot.out_features, plan.rank, cfg.dropout, cfg.drop_path)
                wrapper.add_sequential(f"spt_adapter_{role}", module.to(**like), slot.rows)
            ctx.train(module)


def _install_sparse(ctx: InstallContext, plan: SptPlan, candidates: Candidates) -> None:
    by_param: dict[str, list[torch.Tensor]] = {}
    for e in plan.entries:
        if e.decision in ("sparse", "full"):
            u = e.unit
            index = e.indices if e.decision == "sparse" else torch.arange(u.numel)
            by_param.setdefault(u.param, []).append(index.long() + u.offset)
    linears: dict[int, dict[str, Any]] = {}
    for name, chunks in by_param.items():
        owner, param = candidates.owners[name], candidates.params[name]
        index = torch.cat(chunks)
        module = owner.module
        if isinstance(module, nn.Linear):
            entry = linears.setdefault(id(module), {"owner": owner, "weight": None, "bias": None})
            entry["weight" if param is module.weight else "bias"] = index
            continue
        piece = SparseDelta(owner.local, param, index)
        AdaptedLayer.wrap(owner.parent, owner.attr).add_reparam("spt_sparse", piece)
        ctx.train(piece)
    for entry in linears.values():
        owner = entry["owner"]
        weight_index = entry["weight"] if entry["weight"] is not None else torch.zeros(0)
        branch = SparseLinearDelta(owner.module, weight_index, entry["bias"])
        AdaptedLayer.wrap(owner.parent, owner.attr).add_parallel("spt_sparse", branch)
        ctx.train(branch)


def _installer(structured: str):
    def install(ctx: InstallContext, cfg: SptConfig) -> None:
        ctx.require_shared(" (its plan is allocated from one task's sensitivity)")
        plan = _resolve_plan(ctx, cfg, structured)
        if plan.structured != structured:
            raise ConfigError(
                f"the plan was allocated for {plan.structured} modules; use spt-{plan.structured} "
                f"or allocate a new plan with --structured {structured}"
            )
        candidates = find_candidates(ctx.model, ctx.spec)
        plan.check_fits(candidates, ctx.spec)
        if ctx.spec.cls_token is not None:
            ctx.train(ctx.spec.cls_token)
        _install_structured(ctx, plan, candidates, cfg)
        _install_sparse(ctx, plan, candidates)
        cfg.plan, cfg.budget, cfg.sensitivity = plan, None, None
        cfg.rank, cfg.alpha, cfg.beta = plan.rank, plan.alpha, plan.beta

    return install


_PAPER = "He et al., Sensitivity-Aware Visual Parameter-Efficient Fine-Tuning, ICCV 2023"

register(
    MethodInfo(
        name="spt-lora",
        family="reparameterization",
        paper=_PAPER,
        mergeable=True,
        config=SptConfig,
        install=_installer("lora"),
        summary="sensitivity-allocated budget: LoRA on sensitive matrices + sparse deltas",
    )
)
register(
    MethodInfo(
        name="spt-adapter",
        family="adapter",
        paper=_PAPER,
        mergeable=False,
        config=SptConfig,
        install=_installer("adapter"),
        summary="sensitivity-allocated budget: adapters on sensitive matrices + sparse deltas",
    )
)
