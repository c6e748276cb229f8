"""SPT stage 2: allocate a trainable-parameter budget to the most sensitive positions (§3.2).

For a candidate τ take the global top-τ scores (one ranking over every unit, ties broken by
position) and let n_u be the number of unit u's entries among them (spec/spt.md, stage 2):

- matrix (out × in) with structured cost c: tuned by the structured module (cost c, no sparse
  entries) if n_u ≥ c/α, else its n_u entries are sparse-tuned (cost n_u);
- vector of length d: tuned whole (cost d) if n_u ≥ d/β, else sparse (cost n_u);
- other tensor: sparse (cost n_u).

    total(τ) = class token + Σ_u cost_u(n_u(τ))

Each cost_u is non-decreasing in n_u, so total(τ) is non-decreasing in τ, with jumps where a unit
crosses its threshold (up to 0.9·c for a matrix). The search is exact: the exact ranking of a
prefix of the scores (every entry ≥ a sampled threshold, sorted once) gives the increment of
total at every position, and one cumulative sum gives total(τ) for every τ of the prefix; the
prefix doubles until its totals pass the budget. (The reference sweeps τ in steps of 20k.)

`fill=True` (default) goes finer than any τ: with τ* the largest τ with total(τ*) ≤ budget, it
adds the next-ranked entries that do not bring their unit to its threshold (each costs exactly 1:
sparse-tuned), until the total equals the budget — instead of landing up to half a jump away.
Every unit still obeys the rules above for its own count. `fill=False` is the reference rule:
the plain top-τ with total closest to the budget. Either way the closer of the result and
total(τ*+1) is kept.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...errors import BudgetError, ConfigError
from .candidates import Unit

#: Structured modules and their trainable-parameter cost for one matrix unit (out × in).
STRUCTURED: tuple[str, ...] = ("lora", "adapter")
#: What happens to a unit: structured module, whole vector, some entries, nothing.
DECISIONS: tuple[str, ...] = ("structured", "full", "sparse", "frozen")


def lora_cost(unit: Unit, rank: int) -> int:
    """Parallel LoRA B·A on an (out × in) matrix: r·in + out·r."""
    out_features, in_features = unit.shape
    return rank * (in_features + out_features)


def adapter_cost(unit: Unit, rank: int) -> int:
    """Adapter Up(GELU(Down(·))) with biases: sequential on the output (out·r + r + r·out + out),
    or parallel from the input for the attention output projection (in·r + r + r·out + out)."""
    out_features, in_features = unit.shape
    width = in_features if unit.role == "proj" else out_features
    return width * rank + rank + rank * out_features + out_features


COSTS = {"lora": lora_cost, "adapter": adapter_cost}


@dataclass(frozen=True)
class Rules:
    """Allocation hyper-parameters: structured kind, its rank r, thresholds α and β."""

    structured: str = "lora"
    rank: int = 8
    alpha: float = 10.0
    beta: float = 5.0

    def __post_init__(self) -> None:
        if self.structured not in STRUCTURED:
            raise ConfigError(
                f"structured must be one of {list(STRUCTURED)}, got {self.structured!r}"
            )
        if self.rank < 1:
            raise ConfigError(f"rank must be >= 1, got {self.rank}")
        if not (self.alpha > 0 and self.beta > 0):
            raise ConfigError(f"alpha and beta must be > 0, got {self.alpha} and {self.beta}")

    def threshold_and_cost(self, unit: Unit) -> tuple[float, int]:
        """(selected entries from which the unit is tuned whole, the cost it then has)."""
        if unit.kind == "matrix":
            cost = COSTS[self.structured](unit, self.rank)
            return cost / self.alpha, cost
        if unit.kind == "vector":
            return unit.numel / self.beta, unit.numel
        return math.inf, unit.numel


@dataclass
class Allocation:
    """The result for one τ: per unit, selected count, decision, cost and sparse indices."""

    tau: int  # the top-τ prefix taken whole
    filled: int  # further entries added by `fill`
    total: int
    class_token: int
    selected: list[int]
    decisions: list[str]
    costs: list[int]
    indices: list[torch.Tensor | None]  # sorted flat indices into the unit (sparse units only)


def parse_budget(value: int | float | str) -> int:
    """400000, 4e5, '0.4M', '400k' -> 400000."""
    if isinstance(value, str):
        text = value.strip()
        scale = {"k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "G": 1e9}.get(text[-1:], 1.0)
        try:
            value = float(text[:-1] if scale != 1.0 else text) * scale
        except ValueError:
            raise ConfigError(
                f"budget {text!r} is not a number (e.g. 400000, 0.4M, 400k)"
            ) from None
    budget = round(float(value))
    if budget < 1:
        raise BudgetError(f"budget must be >= 1 parameter, got {value!r}")
    return budget


def _positions_at_least(flat: torch.Tensor, want: int) -> torch.Tensor:
    """Ascending positions of every score ≥ v, for a sampled v leaving at least `want` of them."""
    n = flat.numel()
    if want >= n:
        return torch.arange(n, device=flat.device)
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(0, n, (min(n, 1 << 20),), generator=g).to(flat.device)
    ranked = torch.sort(flat[pick], descending=True).values
    fraction = 1.25 * want / n
    while fraction < 1.0:
        v = ranked[min(ranked.numel(), max(1, math.ceil(fraction * ranked.numel()))) - 1]
        positions = torch.nonzero(flat >= v).squeeze(1)  # all ties: fewer prefix doublings
        if positions.numel() >= want:
            return positions
        fraction *= 2
    return torch.arange(n, device=flat.device)


def _at_least(scores: torch.Tensor, v: torch.Tensor, want: int) -> torch.Tensor:
    """Ascending positions of every score > v and of the first entries equal to v, enough to
    make `want` (all of them when fewer): an exact prefix of the (score desc, position asc)
    ranking. Keeps a score level shared by millions of entries (ties) from entering the sort."""
    above = torch.nonzero(scores > v).squeeze(1)
    if above.numel() >= want:
        return above
    tied = torch.nonzero(scores == v).squeeze(1)[: want - above.numel()]
    return torch.sort(torch.cat([above, tied])).values


@dataclass
class _Prefix:
    """The exact top-M ranking (M ≥ want): positions, unit ids, per-unit occurrence counts and
    total(τ) for τ = 1..M (spec rules, module docstring)."""

    order: torch.Tensor
    unit: torch.Tensor
    count: torch.Tensor
    totals: torch.Tensor

    @classmethod
    def build(
        cls, flat: torch.Tensor, want: int, ends: torch.Tensor, rules: tuple[torch.Tensor, ...],
        class_token: int,
    ) -> _Prefix:  # fmt: skip
        threshold, full = rules
        positions = _positions_at_least(flat, want)
        per_unit = torch.diff(torch.searchsorted(positions, ends), prepend=ends.new_zeros(1))
        unit_ascending = torch.repeat_interleave(
            torch.arange(ends.numel(), device=ends.device), per_unit
        )
        perm = torch.sort(flat[positions], descending=True, stable=True).indices
        order, unit = positions[perm], unit_ascending[perm]
        count = _occurrences(unit)
        thr, cost = threshold[unit], full[unit]
        after = torch.where(count.double() >= thr, cost, count)
        before = torch.where((count - 1).double() >= thr, cost, count - 1)
        totals = class_token + torch.cumsum(after - before, 0)
        return cls(order, unit, count, totals)

    @property
    def size(self) -> int:
        return self.order.numel()


def _occurrences(unit: torch.Tensor) -> torch.Tensor:
    """For each position, how many entries of its unit are selected once it is in (1, 2, …)."""
    m = unit.numel()
    perm = torch.sort(unit, stable=True).indices
    grouped = unit[perm]
    ar = torch.arange(m, device=unit.device)
    first = torch.ones(m, dtype=torch.bool, device=unit.device)
    first[1:] = grouped[1:] != grouped[:-1]
    starts = torch.cummax(torch.where(first, ar, 0), 0).values
    count = torch.empty_like(unit)
    count[perm] = ar - starts + 1
    return count


def _top_positions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the top-k `scores`, ordered by (score desc, position asc) — exact on ties."""
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    if k >= scores.numel():
        positions = torch.arange(scores.numel(), device=scores.device)
    else:
        cut = torch.topk(scores, k, sorted=False).values.min()
        positions = _at_least(scores, cut, k)
    order = torch.sort(scores[positions], descending=True, stable=True).indices
    return positions[order][:k]


def _fill(
    flat: torch.Tensor, ends: torch.Tensor, threshold: torch.Tensor, taken: torch.Tensor, need: int
) -> torch.Tensor:
    """The `need` best-ranked entries beyond the top-τ prefix whose units stay below their
    thresholds (each costs exactly 1); `taken[u]` = unit u's entries in the prefix.

    Equal to walking the global ranking past τ and keeping each entry that does not bring its
    unit to its threshold, but computed from each open unit's own top list (no deep ranking).
    """
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    candidates = []
    for u in range(ends.numel()):
        n = int(taken[u])
        room = threshold[u] - n  # entries that keep count < threshold: ceil(room) - 1
        quota = need if math.isinf(float(room)) else min(need, math.ceil(float(room)) - 1)
        if quota <= 0:
            continue
        a, b = int(starts[u]), int(ends[u])
        candidates.append(_top_positions(flat[a:b], n + quota)[n:] + a)
    if not candidates:
        return torch.zeros(0, dtype=torch.long, device=flat.device)
    pool = torch.sort(torch.cat(candidates)).values
    order = torch.sort(flat[pool], descending=True, stable=True).indices
    return pool[order][:need]


def allocate(
    units: Sequence[Unit],
    scores: Sequence[torch.Tensor],
    budget: int | float | str,
    rules: Rules,
    class_token: int = 0,
    fill: bool = True,
    search: str = "exact",
) -> Allocation:
    """Allocate `budget` trainable parameters from the flat sensitivities `scores[i]` of
    `units[i]` (module docstring); `class_token` entries are counted in every total.
    `search="official"`: the reference's τ sweep instead (`official_sweep`; `fill` unused).

    Raises `BudgetError` when the budget exceeds the largest plan or is too small for any.
    """
    budget = parse_budget(budget)
    if len(units) != len(scores) or not units:
        raise ConfigError(f"{len(units)} units but {len(scores)} score tensors")
    flat = torch.cat([s.detach().float().reshape(-1) for s in scores])
    if not bool(torch.isfinite(flat.max())):  # max propagates NaN; scores are squares (≥ 0)
        raise ConfigError("sensitivity scores contain NaN or inf; recompute them (check the data)")
    ends = torch.cumsum(torch.tensor([u.numel for u in units], dtype=torch.int64), 0)
    rule = [rules.threshold_and_cost(u) for u in units]
    threshold = torch.tensor([r[0] for r in rule], dtype=torch.float64)
    full = torch.tensor([r[1] for r in rule], dtype=torch.int64)
    largest = class_token + int(full.sum())
    if budget > largest:
        raise BudgetError(
            f"budget {budget:,} exceeds the largest SPT plan on this backbone ({largest:,} "
            f"parameters: every matrix {rules.structured}-tuned at rank {rules.rank}, every other "
            "candidate tensor fully tuned); lower the budget or raise the rank"
        )
    if budget <= class_token:
        raise BudgetError(
            f"budget {budget:,} leaves nothing beyond the class token ({class_token:,} "
            "parameters, always trained); raise it"
        )
    ends, threshold, full = (t.to(flat.device) for t in (ends, threshold, full))
    if search != "exact":
        return official_sweep(units, flat, ends, (threshold, full), class_token, budget, search)
    n = flat.numel()
    want = min(n, 2 * budget + 4096)
    while True:
        prefix = _Prefix.build(flat, want, ends, (threshold, full), class_token)
        if int(prefix.totals[-1]) > budget or prefix.size == n:
            break
        want = min(n, 2 * prefix.size)
    tau = int(torch.searchsorted(prefix.totals, budget, right=True))  # total(τ) ≤ budget
    under = int(prefix.totals[tau - 1]) if tau > 0 else class_token
    positions, unit = prefix.order[:tau], prefix.unit[:tau]
    if fill and under < budget:
        taken = torch.bincount(unit, minlength=len(units))
        extra = _fill(flat, ends, threshold, taken, budget - under)
        positions = torch.cat([positions, extra])
        unit = torch.cat([unit, torch.searchsorted(ends, extra, right=True)])
        under += extra.numel()
    if tau < prefix.size and int(prefix.totals[tau]) - budget < budget - under:
        positions, unit, tau = prefix.order[: tau + 1], prefix.unit[: tau + 1], tau + 1
    if positions.numel() == 0:
        raise BudgetError(
            f"budget {budget:,} is closer to an empty plan than to the smallest one "
            f"({int(prefix.totals[0]):,} parameters with the class token); raise it"
        )
    filled = positions.numel() - tau
    return _allocation_at(units, positions, unit, threshold, full, class_token, tau, filled)


def _allocation_at(
    units: Sequence[Unit],
    positions: torch.Tensor,
    unit: torch.Tensor,
    threshold: torch.Tensor,
    full: torch.Tensor,
    class_token: int,
    tau: int,
    filled: int,
) -> Allocation:
    n = len(units)
    selected = torch.bincount(unit, minlength=n).cpu()
    whole = (selected.double() >= threshold.cpu()).tolist()
    decisions = [
        "frozen" if count == 0 else
        ("structured" if u.kind == "matrix" else "full") if is_whole else "sparse"
        for u, count, is_whole in zip(units, selected.tolist(), whole, strict=True)
    ]  # fmt: skip
    costs = [
        int(full[i]) if d in ("structured", "full") else int(selected[i])
        for i, d in enumerate(decisions)
    ]
    sparse = torch.tensor([d == "sparse" for d in decisions], device=unit.device)
    chosen = torch.sort(positions[sparse[unit]]).values.cpu()
    pieces = torch.split(
        chosen, [c if d == "sparse" else 0 for c, d in zip(costs, decisions, strict=True)]
    )
    offsets = [0]
    for u in units[:-1]:
        offsets.append(offsets[-1] + u.numel)
    indices = [pieces[i] - offsets[i] if d == "sparse" else None for i, d in enumerate(decisions)]
    return Allocation(
        tau=tau,
        filled=filled,
        total=class_token + sum(costs),
        class_token=class_token,
        selected=selected.tolist(),
        decisions=decisions,
        costs=costs,
        indices=indices,
    )


#: The reference's τ grid: 0.02M, 0.04M, …, 1.58M selected entries.
OFFICIAL_TAUS: tuple[int, ...] = tuple(20_000 * k for k in range(1, 80))


def official_sweep(
    units: Sequence[Unit],
    flat: torch.Tensor,
    ends: torch.Tensor,
    rules: tuple[torch.Tensor, torch.Tensor],
    class_token: int,
    budget: int,
    search: str = "official",
) -> Allocation:
    """The reference search: the top-τ plan for τ in `OFFICIAL_TAUS` (capped at the candidate
    count) whose total is closest to `budget` (first on ties). The grid stops at 1.58M entries,
    so a larger budget ends under it: a `UserWarning` names the total reached."""
    if search != "official":
        raise ConfigError(f"search must be 'exact' or 'official', got {search!r}")
    n = flat.numel()
    taus = sorted({min(t, n) for t in OFFICIAL_TAUS})
    prefix = _Prefix.build(flat, taus[-1], ends, rules, class_token)
    totals = prefix.totals[torch.tensor(taus, device=prefix.totals.device) - 1]
    best = int(torch.argmin((totals - budget).abs()))
    tau = taus[best]
    if int(totals[best]) < budget and best == len(taus) - 1:
        warnings.warn(
            f"search=official stops at tau = {tau:,} selected entries: the plan holds "
            f"{int(totals[best]):,} parameters, under the budget {budget:,} "
            "(search=exact reaches it)",
            UserWarning,
            stacklevel=3,
        )
    threshold, full = rules
    return _allocation_at(
        units, prefix.order[:tau], prefix.unit[:tau], threshold, full, class_token, tau, 0
    )
