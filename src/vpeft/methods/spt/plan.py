"""An SPT plan: which matrices get the structured module, which vectors are tuned whole and which
entries are sparse-tuned — serialisable (safetensors indices + JSON), inspectable, re-appliable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...backbones import MATRIX_ROLES, BackboneSpec, describe
from ...errors import AdapterFileError, ConfigError
from ...io import read_safetensors, write_safetensors
from .allocation import Rules, allocate, parse_budget
from .candidates import Candidates, Unit, find_candidates
from .sensitivity import Sensitivity

FILE_KIND = "spt-plan"
#: Cell marks of the structured module in tables and heat maps.
MARKS = {"lora": "L", "adapter": "A"}


@dataclass
class PlanEntry:
    """What happens to one unit; `indices` (sorted, into the flattened unit) when sparse."""

    unit: Unit
    decision: str  # "structured" | "full" | "sparse"
    selected: int  # entries of the unit among those selected (global top-τ prefix + fill)
    cost: int  # trainable scalars it adds
    indices: torch.Tensor | None = None

    def to_json(self) -> dict[str, Any]:
        u = self.unit
        return {
            "key": u.key,
            "param": u.param,
            "rows": list(u.rows) if u.rows is not None else None,
            "shape": list(u.shape),
            "kind": u.kind,
            "role": u.role,
            "block": u.block,
            "decision": self.decision,
            "selected": self.selected,
            "cost": self.cost,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], indices: torch.Tensor | None) -> PlanEntry:
        rows = tuple(data["rows"]) if data["rows"] is not None else None
        unit = Unit(
            data["key"], data["param"], rows, tuple(data["shape"]), data["kind"],
            data["role"], data["block"],
        )  # fmt: skip
        return cls(unit, data["decision"], int(data["selected"]), int(data["cost"]), indices)


@dataclass
class SptPlan:
    """An allocation for one backbone; `entries` lists every unit that trains."""

    structured: str
    rank: int
    alpha: float
    beta: float
    budget: int | None
    tau: int
    class_token: int
    entries: list[PlanEntry]
    backbone: dict[str, Any] = field(default_factory=dict)
    sensitivity: dict[str, Any] = field(default_factory=dict)
    filled: int = 0  # entries added after the top-τ prefix (allocation `fill`)

    # -- counts ---------------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Trainable scalars of the plan (head excluded, class token included)."""
        return self.class_token + sum(e.cost for e in self.entries)

    def breakdown(self) -> dict[str, int]:
        """Trainable scalars by decision, plus the class token."""
        out = {d: 0 for d in ("structured", "full", "sparse")}
        for e in self.entries:
            out[e.decision] += e.cost
        out["class_token"] = self.class_token
        return out

    # -- serialisation --------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "structured": self.structured,
            "rank": self.rank,
            "alpha": self.alpha,
            "beta": self.beta,
            "budget": self.budget,
            "tau": self.tau,
            "filled": self.filled,
            "class_token": self.class_token,
            "total": self.total,
            "backbone": self.backbone,
            "sensitivity": self.sensitivity,
            "entries": [e.to_json() for e in self.entries],
        }

    def index_tensors(self) -> dict[str, torch.Tensor]:
        """The sparse indices, one int32 tensor per sparse entry (`indices.<entry number>`)."""
        return {
            f"indices.{i}": e.indices.to(torch.int32)
            for i, e in enumerate(self.entries)
            if e.indices is not None
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SptPlan:
        try:
            entries = []
            for i, item in enumerate(data["entries"]):
                idx = tensors.get(f"indices.{i}")
                if item["decision"] == "sparse" and idx is None:
                    raise KeyError(f"indices.{i}")
                entries.append(PlanEntry.from_json(item, None if idx is None else idx.long()))
            plan = cls(
                data["structured"], int(data["rank"]), float(data["alpha"]), float(data["beta"]),
                data["budget"], int(data["tau"]), int(data["class_token"]), entries,
                dict(data.get("backbone", {})), dict(data.get("sensitivity", {})),
                int(data.get("filled", 0)),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise AdapterFileError(f"the SPT plan is incomplete or corrupted ({err!r})") from None
        if "total" in data and int(data["total"]) != plan.total:
            raise AdapterFileError(
                f"the SPT plan is corrupted: its entries add up to {plan.total}, "
                f"it records {data['total']}"
            )
        return plan

    def save(self, path: str | Path) -> None:
        """Write the plan as a safetensors file (indices) with JSON metadata."""
        write_safetensors(path, self.index_tensors(), {"kind": FILE_KIND, "plan": self.to_json()})

    @classmethod
    def load(cls, path: str | Path) -> SptPlan:
        tensors, meta = read_safetensors(path)
        if meta.get("kind") != FILE_KIND:
            raise AdapterFileError(
                f"{path} is not an SPT plan (kind {meta.get('kind')!r}); create one with "
                "`vpeft sensitivity … --budget B --plan-out FILE`"
            )
        return cls.from_json(meta["plan"], tensors)

    # -- checks ---------------------------------------------------------------------------
    def check_fits(self, candidates: Candidates, spec: BackboneSpec) -> None:
        """Raise `ConfigError` unless every entry names a candidate unit of this backbone."""
        units = candidates.by_key()
        bad = [e.unit.key for e in self.entries if units.get(e.unit.key) != e.unit]
        if bad:
            raise ConfigError(
                f"the SPT plan does not fit this backbone: {len(bad)} entries name tensors it "
                f"lacks or shapes it does not have (e.g. {bad[:3]}); the plan was made for "
                f"{self.backbone.get('architecture', 'another backbone')}"
            )
        tokens = spec.cls_token.numel() if spec.cls_token is not None else 0
        if self.class_token != tokens:
            raise ConfigError(
                f"the SPT plan counts a class token of {self.class_token} but this backbone's "
                f"has {tokens}; it was made for another backbone"
            )
        for e in self.entries:
            if e.indices is not None and (
                e.indices.numel() != e.cost
                or (e.indices.numel() and int(e.indices.max()) >= e.unit.numel)
            ):
                raise ConfigError(f"the SPT plan's indices of {e.unit.key} are corrupted")

    # -- inspection -----------------------------------------------------------------------
    def shares(self) -> tuple[list[int], list[str], list[list[float]]]:
        """Sensitive-parameter share per block × matrix type: % of all selected matrix entries
        (the top-τ prefix plus, with allocation `fill`, the next-ranked fill entries)."""
        matrices = [e for e in self.entries if e.unit.kind == "matrix"]
        blocks = sorted({e.unit.block for e in matrices if e.unit.block is not None})
        roles = [r for r in MATRIX_ROLES if any(e.unit.role == r for e in matrices)]
        total = max(sum(e.selected for e in matrices), 1)
        grid = [[0.0] * len(roles) for _ in blocks]
        for e in matrices:
            if e.unit.block is not None:
                grid[blocks.index(e.unit.block)][roles.index(e.unit.role)] += (
                    100.0 * e.selected / total
                )
        return blocks, roles, grid

    def table(self) -> str:
        """A text table: per block, what each matrix gets (mark or sparse count) and vectors."""
        mark = MARKS[self.structured]
        cells: dict[tuple[int | None, str], str] = {}
        vectors: dict[int | None, int] = {}
        for e in self.entries:
            u = e.unit
            if u.kind == "matrix":
                cells[(u.block, u.role or "")] = mark if e.decision == "structured" else f"{e.cost}"
            else:
                vectors[u.block] = vectors.get(u.block, 0) + e.cost
        blocks = sorted({b for b, _ in cells} | set(vectors), key=lambda b: (b is None, b or 0))
        roles = [r for r in MATRIX_ROLES if any(k[1] == r for k in cells)]
        header = ["block", *roles, "other"]
        rows = [
            [("-" if b is None else str(b))]
            + [cells.get((b, r), ".") for r in roles]
            + [str(vectors.get(b, 0) or ".")]
            for b in blocks
        ]
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
        lines = [
            "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]
        ]
        parts = self.breakdown()
        budget = f"{self.budget:,}" if self.budget else "—"
        off = f" ({100.0 * (self.total - self.budget) / self.budget:+.2f}%)" if self.budget else ""
        summary = [
            f"SPT-{self.structured} plan: rank {self.rank}, alpha {self.alpha:g}, "
            f"beta {self.beta:g}; the top {self.tau:,} ranked entries + {self.filled:,} filled",
            f"budget {budget}, trainable {self.total:,}{off} = structured "
            f"{parts['structured']:,} + whole vectors {parts['full']:,} + sparse "
            f"{parts['sparse']:,} + class token {parts['class_token']:,} (head excluded)",
            f"cells: {mark} = {self.structured} module, number = sparse entries, . = frozen; "
            "'other' = vectors and non-matrix tensors (block '-' = outside blocks)",
            f"sensitivity: {self.sensitivity.get('source', '?')} "
            f"({self.sensitivity.get('samples', '?')} samples)",
        ]
        return "\n".join([*summary, "", *lines])


def build_plan(
    model: nn.Module,
    sensitivity: Sensitivity,
    budget: int | float | str,
    structured: str = "lora",
    rank: int = 8,
    alpha: float = 10.0,
    beta: float = 5.0,
    fill: bool = True,
    search: str = "exact",
) -> SptPlan:
    """Allocate `budget` trainable parameters on `model` from `sensitivity` (SPT stage 2).

    `fill=False` keeps the reference's plain top-τ rule; `search="official"` the reference's
    coarse τ sweep (see `allocation.py`)."""
    rules = Rules(structured, rank, alpha, beta)
    spec = describe(model)
    candidates = find_candidates(model, spec)
    sensitivity.check_matches(candidates)
    tokens = spec.cls_token.numel() if spec.cls_token is not None else 0
    scores = [sensitivity.unit_scores(u) for u in candidates.units]
    result = allocate(
        candidates.units, scores, parse_budget(budget), rules, tokens, fill, search=search
    )
    entries = [
        PlanEntry(u, d, n, c, idx)
        for u, d, n, c, idx in zip(
            candidates.units,
            result.decisions,
            result.selected,
            result.costs,
            result.indices,
            strict=True,
        )
        if d != "frozen"
    ]
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return SptPlan(
        structured, rank, alpha, beta, parse_budget(budget), result.tau, tokens, entries,
        {"family": spec.family, "architecture": cfg.get("architecture", type(model).__name__),
         "candidates": candidates.numel},
        dict(sensitivity.meta), result.filled,
    )  # fmt: skip
