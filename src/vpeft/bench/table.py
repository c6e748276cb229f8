"""Result tables of a sweep: per-task mean ± sd over seeds, the two VTAB-1k averages, PPT, Δm.

* **mean of group means** (the VTAB-1k number of SPT / VPT / NOAH: average the tasks of each
  group, then the groups) and **mean of all tasks** (the 19-task average of VQT / Head2Toe);
* **mean ± sd** over seeds (sample standard deviation, n − 1; "±–" for a single seed);
* **PPT** (performance-parameter trade-off, V-PETL Bench, Xin et al., NeurIPS 2024 Datasets and
  Benchmarks; `ppt` says how the formula was checked): ``PPT = M · exp(−log10(P / C + 1))``
  with M the mean accuracy (%), P the trainable parameters of the encoder (head excluded, as
  the PETL papers count) and C = 10^7 — a method with few parameters keeps almost all of M,
  one with ~10^7 loses ~26%;
* **Δm** for dense multi-task runs (Maninis et al.; Polyhistor; docs/results/dense.md):
  ``Δm = (100/T) Σ_t (−1)^{l_t} (M_t − M_ref,t) / M_ref,t`` over the per-task headline metrics
  (mIoU; mean angular error for normals, l_t = 1) in the records' ``metrics.headline``, with
  M_ref the mean over seeds of the reference (the sweep's run labelled ``reference``: single-task
  full fine-tuning; or ``--reference METHOD``) — `vpeft.tasks.dense.delta_m`;
* extra per-task columns a record names in ``metrics.columns`` (dense headlines; CLIP base,
  new and harmonic mean), mean ± sd over seeds. A VL record's cell is its ``metrics.score``
  (VQA score, NLVR2 top-1, retrieval rsum, CLIP HM) where it has no top-1.

Only final-stage records are tabulated (selection runs score val200, never test).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import fmean, stdev
from typing import Any

PPT_C = 1e7
#: Column order of the groups (VTAB-1k's, then FGVC, then anything else by name).
GROUP_ORDER = ("natural", "specialized", "structured", "fgvc")


def ppt(accuracy: float, trainable: float, c: float = PPT_C) -> float:
    """V-PETL Bench's performance-parameter trade-off: ``PPT = M · exp(−log10(P / C + 1))``.

    `accuracy` is M in percent (V-PETL Bench prints PPT with M as a fraction, i.e. ours / 100),
    `trainable` is P, C = 10^7. Source check: the formula and C were verified against the
    published PPT column of V-PETL Bench's results tables (README of
    github.com/synbol/Parameter-Efficient-Transfer-Learning-Benchmark, commit c188fad, VTAB-1k and
    FGVC, ViT-B/16): with C = 10^7 every row checked rounds to the published value (e.g. LST
    71.70 %, 2.38M -> 0.65; VPT-deep 69.43 %, 0.56M -> 0.68), while C = 10^6 or 10^8 do not
    (tests/bench/test_table_plot_reproduce.py). The README states no formula itself; the formula
    text is from the V-PETL Bench paper (Xin et al., NeurIPS 2024 Datasets and Benchmarks).
    """
    return accuracy * math.exp(-math.log10(trainable / c + 1.0))


@dataclass
class Cell:
    """One (method, task): the seeds' values."""

    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return fmean(self.values)

    @property
    def sd(self) -> float | None:
        return stdev(self.values) if len(self.values) > 1 else None

    def text(self, digits: int = 1) -> str:
        if not self.values:
            return "-"
        if self.sd is None:  # one seed: no spread to show
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


@dataclass
class MethodRow:
    method: str
    cells: dict[str, Cell]  # task -> cell
    groups: dict[str, list[str]]  # group -> tasks (in table order)
    trainable_encoder: float
    trainable: float
    train_flops_per_image: float
    memory_bytes: float
    seeds: int
    #: dense: task set -> headline metric -> mean over seeds, and the lower-is-better names
    dense: dict[str, dict[str, float]] = field(default_factory=dict)
    lower: set[str] = field(default_factory=set)
    columns: dict[str, Cell] = field(default_factory=dict)  # "<task> <name>" -> values
    reference: bool = False  # the dense reference (single-task full fine-tuning)
    #: a named variant's definition (the method it runs, its options; "shared"), else None
    variant: str | None = None

    @property
    def mean_all(self) -> float | None:
        means = [c.mean for c in self.cells.values() if c.values]
        return fmean(means) if means else None

    def group_mean(self, group: str) -> float | None:
        means = [self.cells[t].mean for t in self.groups[group] if self.cells.get(t, Cell()).values]
        return fmean(means) if means else None

    @property
    def mean_of_groups(self) -> float | None:
        means = [m for g in self.groups if (m := self.group_mean(g)) is not None]
        return fmean(means) if means else None

    @property
    def ppt(self) -> float | None:
        acc = self.mean_of_groups
        return None if acc is None else ppt(acc, self.trainable_encoder)


def _finals(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Final-stage records that ran (a skipped run's record has no metrics to tabulate)."""
    return [
        r
        for r in records
        if r.get("labels", {}).get("stage") == "final" and r.get("status") != "skipped"
    ]


def _value(record: dict[str, Any], metric: str) -> float | None:
    metrics = record["metrics"]
    value = metrics.get(metric)
    return metrics.get("score") if value is None else value


def build_rows(records: Iterable[dict[str, Any]], metric: str = "test_top1") -> list[MethodRow]:
    """One row per method (first-seen order, by task then seed) from final-stage records."""
    finals = sorted(
        _finals(records),
        key=lambda r: (r["labels"]["method"], r["labels"]["task"], r["spec"]["train"]["seed"]),
    )
    tasks: dict[str, str] = {}
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in finals:
        tasks.setdefault(r["labels"]["task"], r["labels"].get("group", "other"))
        by_method.setdefault(r["labels"]["method"], []).append(r)
    groups: dict[str, list[str]] = {}
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    for task, group in sorted(tasks.items(), key=lambda tg: (rank.get(tg[1], len(rank)), tg[0])):
        groups.setdefault(group, []).append(task)
    rows = []
    for method, recs in by_method.items():
        cells: dict[str, Cell] = {t: Cell() for t in tasks}
        columns: dict[str, Cell] = {}
        dense: dict[str, dict[str, list[float]]] = {}
        lower: set[str] = set()
        for r in recs:
            task, metrics = r["labels"]["task"], r["metrics"]
            value = _value(r, metric)
            if value is not None:
                cells[task].values.append(float(value))
            for name, v in (metrics.get("columns") or {}).items():
                columns.setdefault(f"{task} {name}", Cell()).values.append(float(v))
            for name, v in (metrics.get("headline") or {}).items():
                dense.setdefault(task, {}).setdefault(name, []).append(float(v))
            lower.update(f"{task}/{n}" for n in metrics.get("lower_is_better") or ())
        rows.append(
            MethodRow(
                method=method,
                cells=cells,
                groups=groups,
                trainable_encoder=fmean(r["params"]["trainable_encoder"] for r in recs),
                trainable=fmean(r["params"]["trainable"] for r in recs),
                train_flops_per_image=fmean(r["flops"]["train_step_per_image"] for r in recs),
                memory_bytes=fmean(r["memory"]["total"] for r in recs),
                seeds=len({r["spec"]["train"]["seed"] for r in recs}),
                dense={t: {k: fmean(v) for k, v in m.items()} for t, m in dense.items()},
                lower=lower,
                columns=columns,
                reference=any(r["labels"].get("reference") for r in recs),
                variant=variant_definition(recs[0]) if recs[0]["labels"].get("variant") else None,
            )
        )
    return rows


def variant_definition(record: dict[str, Any]) -> str:
    """What a variant's row ran: ``polyhistor (reduction=4)``, ``full (shared)``."""
    spec = record["spec"]
    parts = [f"{k}={v}" for k, v in sorted((spec.get("options") or {}).items())]
    if spec.get("shared"):
        parts.append("shared")
    return spec["method"] + (f" ({', '.join(parts)})" if parts else "")


def variant_notes(rows: Sequence[MethodRow]) -> list[str]:
    """One line per variant row: its name and what it ran."""
    return [f"{r.method} = {r.variant}" for r in rows if r.variant]


def reference_of(rows: Sequence[MethodRow]) -> str | None:
    """The method labelled as the dense reference in the records, if any."""
    return next((r.method for r in rows if r.reference), None)


def delta_m_of(rows: Sequence[MethodRow], reference: str | None = None) -> dict[str, float]:
    """Δm (%) of every dense method against `reference` (default: the labelled reference run),
    over the headline metrics of every dense task set both have."""
    from ..tasks.dense import delta_m

    reference = reference or reference_of(rows)
    ref = {r.method: r for r in rows}.get(reference) if reference else None
    if ref is None:
        return {}
    out = {}
    for row in rows:
        results, base = {}, {}
        for task, metrics in row.dense.items():
            for name, value in metrics.items():
                if name in ref.dense.get(task, {}):
                    results[f"{task}/{name}"] = value
                    base[f"{task}/{name}"] = ref.dense[task][name]
        if results:
            lower = [k for k in results if k in row.lower | ref.lower]
            out[row.method] = delta_m(results, base, lower)
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_rows(rows: Sequence[MethodRow], reference: str | None = None) -> list[list[str]]:
    """Header + one line per method: tasks, group means, both averages, params, PPT (+ Δm)."""
    if not rows:
        return [["method"]]
    # columns no method has a value for (a dense task set's top-1) are left out
    tasks = [t for g in rows[0].groups.values() for t in g if any(r.cells[t].values for r in rows)]
    # a group's mean gets a column when it averages several task columns (else it repeats one)
    group_names = [
        g
        for g, members in rows[0].groups.items()
        if len([t for t in members if t in tasks]) > 1
        and any(r.group_mean(g) is not None for r in rows)
    ]
    dm = delta_m_of(rows, reference)
    reference = reference or reference_of(rows)
    extra = list(dict.fromkeys(c for r in rows for c in r.columns))  # first-seen order
    header = [
        "method",
        *tasks,
        *extra,
        *[f"{g} mean" for g in group_names],
        "mean of group means",
        "mean of all tasks",
        "trainable encoder (M)",
        "trainable all (M)",
        "PPT",
        "seeds",
    ]
    if dm:
        header.append(f"Δm vs {reference} (%)")
    out = [header]
    for r in rows:
        line = [
            r.method,
            *[r.cells[t].text() for t in tasks],
            *[r.columns.get(c, Cell()).text(2) for c in extra],
            *[_fmt(r.group_mean(g)) for g in group_names],
            _fmt(r.mean_of_groups),
            _fmt(r.mean_all),
            f"{r.trainable_encoder / 1e6:.4f}",
            f"{r.trainable / 1e6:.4f}",
            _fmt(r.ppt, 2),
            str(r.seeds),
        ]
        if dm:
            line.append(_fmt(dm.get(r.method), 2))
        out.append(line)
    return out


def markdown(lines: list[list[str]], title: str = "", notes: Sequence[str] = ()) -> str:
    head, *body = lines
    md = [f"# {title}", ""] if title else []
    md += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    md += ["| " + " | ".join(line) + " |" for line in body]
    md += [
        "",
        "Cells: last-epoch test top-1 (%; VL: the task's headline score), mean ± sd over seeds. "
        "PPT = M·exp(−log10(P/10^7 + 1)) with M the mean of group means and P the encoder's "
        "trainable parameters (V-PETL Bench). Dense: per-task headline metrics (mIoU; normals: "
        "mean angular error, lower is better) and Δm (%) against the reference run.",
    ]
    if notes:  # named variants: which method and options each row ran
        md += ["", "Variants: " + "; ".join(f"`{n}`" for n in notes) + "."]
    return "\n".join(md) + "\n"


def to_csv(lines: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return buffer.getvalue()


def long_rows(rows: Sequence[MethodRow]) -> list[list[Any]]:
    """Numbers for spreadsheets: one line per (method, task) and per (method, average)."""
    out: list[list[Any]] = [
        ["method", "task", "group", "mean", "sd", "n", "trainable_encoder", "trainable", "ppt"]
    ]
    for r in rows:
        for group, tasks in r.groups.items():
            for t in tasks:
                c = r.cells[t]
                out.append(
                    [
                        r.method,
                        t,
                        group,
                        c.mean if c.values else None,
                        c.sd,
                        len(c.values),
                        r.trainable_encoder,
                        r.trainable,
                        None,
                    ]
                )
        for name, value in (
            ("mean of group means", r.mean_of_groups),
            ("mean of all tasks", r.mean_all),
        ):
            out.append(
                [
                    r.method,
                    name,
                    "",
                    value,
                    None,
                    r.seeds,
                    r.trainable_encoder,
                    r.trainable,
                    r.ppt if name == "mean of group means" else None,
                ]
            )
    return out
