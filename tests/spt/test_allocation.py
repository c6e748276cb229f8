"""SPT stage 2: the exact τ search and the fill against a plain Python walk of the ranking."""

from __future__ import annotations

import math

import pytest
import torch

import vpeft
from vpeft.methods.spt import Rules, Unit, allocate, parse_budget
from vpeft.methods.spt.allocation import adapter_cost, lora_cost


def _units(sizes: list[tuple[str, tuple[int, ...]]]) -> list[Unit]:
    roles = {"matrix": "fc1", "vector": None, "tensor": None}
    return [
        Unit(f"u{i}", f"p{i}", None, shape, kind, roles[kind], 0)
        for i, (kind, shape) in enumerate(sizes)
    ]


def _brute(units, scores, budget, rules, cls, fill):
    """Walk the ranking position by position (score desc, position asc) in Python."""
    flat = torch.cat([s.reshape(-1) for s in scores]).tolist()
    owner = [i for i, u in enumerate(units) for _ in range(u.numel)]
    starts = [sum(u.numel for u in units[:i]) for i in range(len(units))]
    order = sorted(range(len(flat)), key=lambda p: (-flat[p], p))
    rule = [rules.threshold_and_cost(u) for u in units]

    def cost(u: int, n: int) -> int:
        return rule[u][1] if n >= rule[u][0] else n

    counts, total, totals = [0] * len(units), cls, []
    for p in order:
        u = owner[p]
        total += cost(u, counts[u] + 1) - cost(u, counts[u])
        counts[u] += 1
        totals.append(total)
    tau = sum(t <= budget for t in totals)
    chosen = list(order[:tau])
    under = totals[tau - 1] if tau else cls
    counts = [0] * len(units)
    for p in chosen:
        counts[owner[p]] += 1
    if fill:
        for p in order[tau:]:
            if under >= budget:
                break
            u = owner[p]
            if counts[u] + 1 < rule[u][0]:
                counts[u] += 1
                chosen.append(p)
                under += 1
    if tau < len(order) and totals[tau] - budget < budget - under:
        chosen, tau = list(order[: tau + 1]), tau + 1
    selected = [0] * len(units)
    for p in chosen:
        selected[owner[p]] += 1
    sparse = {
        u: sorted(p - starts[u] for p in chosen if owner[p] == u)
        for u in range(len(units))
        if 0 < selected[u] < rule[u][0]
    }
    total = cls + sum(cost(u, n) for u, n in enumerate(selected))
    return tau, len(chosen) - tau, total, selected, sparse


def _random_case(seed: int, big: bool):
    g = torch.Generator().manual_seed(seed)
    shapes = [
        ("matrix", (8, 6)),
        ("matrix", (12, 4)),
        ("vector", (10,)),
        ("vector", (3,)),
        ("tensor", (2, 3, 3)),
        ("matrix", (6, 6)),
        ("vector", (25,)),
    ]
    if big:
        shapes += [("matrix", (120, 100)), ("matrix", (100, 150)), ("vector", (400,))]
    units = _units(shapes)
    # few distinct levels, so ties are frequent; some units much more sensitive than others
    scores = [
        torch.randint(0, 12, u.shape, generator=g).float() * (1 + 3 * (i % 3))
        for i, u in enumerate(units)
    ]
    return units, scores


@pytest.mark.parametrize("fill", [True, False])
@pytest.mark.parametrize("structured", ["lora", "adapter"])
@pytest.mark.parametrize(("seed", "big"), [(0, False), (1, False), (2, True), (3, True)])
def test_allocation_equals_a_walk_of_the_ranking(seed, big, structured, fill) -> None:
    units, scores = _random_case(seed, big)
    rules = Rules(structured, rank=1, alpha=4.0, beta=3.0)
    cls = 2
    largest = cls + sum(rules.threshold_and_cost(u)[1] for u in units)
    budgets = sorted(
        {b for b in (5, 13, 40, 77, 120) if b < largest}
        | {largest // 3, largest // 2, largest - 1, largest}
    )
    for budget in budgets:
        got = allocate(units, scores, budget, rules, class_token=cls, fill=fill)
        tau, filled, total, selected, sparse = _brute(units, scores, budget, rules, cls, fill)
        assert (got.tau, got.filled, got.total) == (tau, filled, total), budget
        assert got.selected == selected
        assert got.total == cls + sum(got.costs)
        for i, decision in enumerate(got.decisions):
            if i in sparse:
                assert decision == "sparse"
                assert got.indices[i].tolist() == sparse[i]
            else:
                assert got.indices[i] is None
                whole = "structured" if units[i].kind == "matrix" else "full"
                assert decision == ("frozen" if selected[i] == 0 else whole)


def test_fill_reaches_the_budget_exactly_where_top_tau_cannot() -> None:
    units = _units([("matrix", (40, 40)), ("vector", (50,)), ("tensor", (40, 40))])
    scores = [torch.full((40, 40), 5.0), torch.linspace(1, 2, 50), torch.full((40, 40), 0.5)]
    rules = Rules("lora", rank=2, alpha=10.0, beta=5.0)  # matrix cost 160: structured at 16
    strict = allocate(units, scores, 100, rules, fill=False)
    assert strict.decisions[0] == "structured" and strict.total == 160  # the closest top-τ plan
    filled = allocate(units, scores, 100, rules, fill=True)
    assert filled.total == 100
    assert filled.decisions[:2] == ["sparse", "sparse"] and filled.selected[0] == 15
    assert filled.selected[1] == 9  # vector: 9 < 50/5, a 10th entry would tune it whole
    assert filled.selected[2] == 76  # the rest from a sparse-only tensor
    units[2] = _units([("matrix", (40, 40))])[0]  # a matrix instead: capped below 16 picks too
    capped = allocate(units, scores, 100, rules, fill=True)
    assert capped.selected == [16, 0, 0] and capped.total == 160  # 160 is closer than 15+9+15


def test_costs_follow_the_real_shapes() -> None:
    q = Unit("q", "w", (0, 16), (16, 16), "matrix", "q", 0)
    fc1 = Unit("fc1", "w1", None, (64, 16), "matrix", "fc1", 0)
    proj = Unit("proj", "w2", None, (16, 24), "matrix", "proj", 0)
    assert lora_cost(fc1, 4) == 4 * (16 + 64)
    assert adapter_cost(fc1, 4) == 64 * 4 + 4 + 4 * 64 + 64  # sequential on the output
    assert adapter_cost(proj, 4) == 24 * 4 + 4 + 4 * 16 + 16  # parallel from the input
    assert Rules("lora", 4, alpha=10).threshold_and_cost(q) == (12.8, 128)
    vec = Unit("b", "b", None, (30,), "vector", None, 0)
    assert Rules(beta=5).threshold_and_cost(vec) == (6.0, 30)
    conv = Unit("c", "c", None, (4, 1, 3, 3), "tensor", None, 0)
    assert Rules().threshold_and_cost(conv) == (math.inf, 36)


def test_impossible_budgets_raise_budget_error() -> None:
    units, scores = _random_case(0, False)
    rules = Rules("lora", rank=1)
    largest = 768 + sum(rules.threshold_and_cost(u)[1] for u in units)
    with pytest.raises(vpeft.BudgetError, match="exceeds the largest SPT plan"):
        allocate(units, scores, largest + 1, rules, class_token=768)
    with pytest.raises(vpeft.BudgetError, match="nothing beyond the class token"):
        allocate(units, scores, 768, rules, class_token=768)
    assert allocate(units, scores, largest, rules, class_token=768).total == largest
    top = Unit("v", "v", None, (100,), "vector", None, 0)  # one pick tunes it whole (beta=100)
    with pytest.raises(vpeft.BudgetError, match="closer to an empty plan"):
        allocate([top], [torch.rand(100)], 10, Rules(beta=100.0), fill=False)
    assert allocate([top], [torch.rand(100)], 60, Rules(beta=100.0), fill=False).total == 100


def test_parse_budget() -> None:
    assert parse_budget("0.4M") == 400_000
    assert parse_budget("400k") == 400_000
    assert parse_budget(4e5) == 400_000
    assert parse_budget("1.5e5") == 150_000
    with pytest.raises(vpeft.ConfigError, match="not a number"):
        parse_budget("lots")
    with pytest.raises(vpeft.BudgetError, match=">= 1"):
        parse_budget(0)


def test_non_finite_scores_are_refused() -> None:
    units = _units([("vector", (4,))])
    with pytest.raises(vpeft.ConfigError, match="NaN or inf"):
        allocate(units, [torch.tensor([1.0, float("nan"), 0.0, 2.0])], 2, Rules())
