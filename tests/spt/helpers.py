"""Crafted sensitivities that force every kind of SPT decision on the tiny backbones."""

from __future__ import annotations

import torch
from torch import nn

from tests.helpers import images
from vpeft.backbones import describe
from vpeft.methods.spt import (
    Rules,
    Sensitivity,
    SptPlan,
    build_plan,
    compute_sensitivity,
    find_candidates,
)
from vpeft.methods.spt.candidates import Unit

RANK = 2


def _picks(unit: Unit, norm_ids: set[str], first_block: int) -> int:
    """How many entries of `unit` to put in the top ranks (0 = leave low)."""
    if unit.kind == "matrix" and unit.block == first_block:
        whole = {"q": unit.numel, "v": unit.numel, "proj": unit.numel, "fc1": unit.numel}
        return {**whole, "k": 3}.get(unit.role, 2)
    if unit.kind == "matrix":
        return 2
    if unit.kind == "vector" and unit.role == "fc2" and unit.block == first_block:
        return unit.numel  # a whole vector
    if unit.kind == "vector" and unit.param in norm_ids:
        return 2  # a sparse LayerNorm entry set
    return 1 if unit.kind == "vector" else 3


def crafted(model: nn.Module, seed: int = 0) -> tuple[Sensitivity, int]:
    """Scores whose top ranks give, on block 0: LoRA/adapter on q, v, proj, fc1, sparse k, whole fc2
    bias; sparse entries everywhere else (norms included). Returns (scores, exact budget).

    Picks are drawn among entries with a non-zero gradient on the test images (e.g. the outer
    taps of a 7x7 depthwise kernel on a 1x1 feature map never matter)."""
    spec = describe(model)
    cands = find_candidates(model, spec)
    labels = torch.arange(4) % 3
    real = compute_sensitivity(model, [(images(4), labels)], num_classes=3)
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(p.shape, generator=g) * 1e-3 for n, p in cands.params.items()}
    norms = {
        n for n, o in cands.owners.items() if isinstance(o.module, nn.LayerNorm | nn.GroupNorm)
    }
    first = spec.blocks[0].index
    rules = Rules("lora", RANK)
    budget = spec.cls_token.numel() if spec.cls_token is not None else 0
    for unit in cands.units:
        live = torch.nonzero(real.unit_scores(unit) > 0).squeeze(1)
        k = min(_picks(unit, norms, first), live.numel())
        flat = scores[unit.param].view(-1)[unit.offset : unit.offset + unit.numel]
        chosen = live[torch.randperm(live.numel(), generator=g)[:k]]
        flat[chosen] = 1.0 + torch.rand(k, generator=g)
        threshold, cost = rules.threshold_and_cost(unit)
        budget += cost if k >= threshold else k
    return Sensitivity(scores, {"source": "crafted"}), budget


def crafted_plan(model: nn.Module, structured: str = "lora") -> SptPlan:
    """The plan of `crafted` scores (the adapter cost differs, so re-budget per kind)."""
    sens, _ = crafted(model)
    lora = build_plan(model, sens, _, "lora", RANK)
    if structured == "lora":
        return lora
    rules = Rules("adapter", RANK)
    budget = lora.class_token + sum(
        rules.threshold_and_cost(e.unit)[1] if e.decision == "structured" else e.cost
        for e in lora.entries
    )
    return build_plan(model, sens, budget, "adapter", RANK)
