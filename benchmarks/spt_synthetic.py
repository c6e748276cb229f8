"""SPT evidence on the bundled backbone and the synthetic suite (issue "SPT", evidence part).

On `vit-tiny-synth` (4 blocks × 64 wide, 32² input) and synthetic target tasks of every group,
compares at matched trainable-encoder counts:

- LoRA (rank r on q and v, α = r so the update scale is 1) against SPT-LoRA (rank r) with the
  budget set to LoRA's real trainable-encoder count;
- the Houlsby adapter (bottleneck m after attention and MLP) against SPT-Adapter (rank m) with the
  budget set to the adapter's real trainable-encoder count.

Per task: SPT's sensitivity (`vpeft.methods.spt.compute_sensitivity`) on the first `--samples`
images of
train800 (batch `--sens-batch`, eval mode, fresh seeded head), timed against a plain forward +
backward over the same batches (every parameter requires grad, mean cross-entropy, gradients
dropped), the two interleaved `--repeats` times (median). From the scores: the SPT-LoRA and
SPT-Adapter plans that are trained (`build_plan`, defaults α = 10, β = 5, fill), and the
sensitive-parameter share per block × matrix type of the plain top-τ ranking at SPT-LoRA's budget
(`fill=False`, so that every counted entry is among the τ highest-ranked) with its heat map
(`vpeft.methods.spt.plot_heatmap`, one PNG per task in `--png-dir`). A split-half
control recomputes the scores on each half of the same samples, so that the differences between
tasks can be compared with the differences between two halves of one task's data.

Training (VTAB-1k style, scaled down for a shared CPU): AdamW (weight decay `--weight-decay`,
none on 1-D tensors, as `vpeft.train`), batch `--batch`, `--epochs` epochs, one warm-up epoch
then cosine per step, seed `--seed`, each method with its own default regularisation. One learning
rate per method is picked from `LR_GRID` by the mean val200 top-1 after the last epoch, training
on train800, over `--grid-tasks`; then every task is trained on train800val200 with it and the
test top-1 after the last epoch is reported (the test set selects nothing). SPT plans always come
from train800's sensitivity.

    .venv/bin/python benchmarks/spt_synthetic.py --jobs 2 --out spt_synthetic.md \\
        --png-dir docs/results/spt
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _synthetic_common import (
    BACKBONE,
    add_task_arguments,
    backbone,
    backbone_transform,
    chosen_lr_lines,
    default_grid_tasks,
    group_means,
    machine_line,
    prepare_tasks,
    present_groups,
    short_names,
    top1_table_head,
    train_config,
)
from torch import nn

import vpeft
from vpeft.backbones import describe
from vpeft.data import synthetic
from vpeft.methods.spt import (
    Sensitivity,
    SptPlan,
    build_plan,
    compute_sensitivity,
    find_candidates,
    plot_heatmap,
    sensitivity_batches,
)
from vpeft.train import train

#: Trained methods, in table order; each SPT method is matched to a baseline's encoder count.
METHODS = ("lora", "spt-lora", "adapter", "spt-adapter")
MATCHED = {"spt-lora": "lora", "spt-adapter": "adapter"}
STRUCTURED = {"spt-lora": "lora", "spt-adapter": "adapter"}
LABELS = {"lora": "LoRA", "spt-lora": "SPT-LoRA", "adapter": "Adapter (Houlsby)",
          "spt-adapter": "SPT-Adapter"}  # fmt: skip
#: Learning-rate grid (AdamW), the same for every method.
LR_GRID: tuple[float, ...] = (3e-2, 1e-2, 3e-3)


# ------------------------------------------------------------------ settings and data


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs (picklable)."""

    epochs: int
    batch: int
    weight_decay: float
    rank: int
    bottleneck: int
    samples: int
    sens_batch: int
    repeats: int
    seed: int
    device: str
    threads: int
    png_dir: str


def load_task(task: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train800, val200, train800val200 and test of `task`, normalised for the backbone."""
    transform = backbone_transform()
    x, y = synthetic.load_split(task, "train800val200").as_tensors(transform)
    test = synthetic.load_split(task, "test").as_tensors(transform)
    return {
        "train800": (x[:800], y[:800]),
        "val200": (x[800:], y[800:]),
        "train800val200": (x, y),
        "test": test,
    }


def baseline_options(method: str, s: Settings) -> dict[str, Any]:
    if method == "lora":
        return {"rank": s.rank, "alpha": float(s.rank), "targets": ("q", "v")}
    if method == "adapter":
        return {"bottleneck": s.bottleneck}
    raise ValueError(f"not a baseline: {method!r}")


def build(method: str, classes: int, s: Settings, plan: SptPlan | None = None) -> vpeft.PeftModel:
    """The `PeftModel` of one method (seeded init); SPT methods take their task's plan."""
    torch.manual_seed(s.seed)
    if method in STRUCTURED:
        return vpeft.apply(backbone(), method, num_classes=classes, plan=plan)
    return vpeft.apply(backbone(), method, num_classes=classes, **baseline_options(method, s))


def baseline_budgets(s: Settings) -> dict[str, int]:
    """SPT budget of each SPT method = its baseline's real trainable-encoder count."""
    return {spt: build(base, 10, s).summary().trainable_encoder for spt, base in MATCHED.items()}


# ------------------------------------------------------------------ sensitivity


def _median(values: list[float]) -> float:
    return statistics.median(values)


def timed_sensitivity(
    batches: list[tuple[torch.Tensor, torch.Tensor]], classes: int, s: Settings
) -> tuple[Sensitivity, dict[str, Any]]:
    """The sensitivity of `batches` and its time against a plain forward + backward over the same
    batches (interleaved plain, sensitivity, plain, … `repeats` times after one warm-up each)."""
    model = backbone().eval()
    work = copy.deepcopy(model)  # compute_sensitivity prepares it in place (copy_model=False)
    plain_model = copy.deepcopy(model)
    torch.manual_seed(s.seed)
    plain_model.reset_classifier(classes)
    plain_model.requires_grad_(True)
    result: dict[str, Sensitivity] = {}

    def plain() -> None:
        for x, y in batches:
            F.cross_entropy(plain_model(x), y).backward()
            plain_model.zero_grad(set_to_none=True)

    def sensitivity() -> None:
        result["s"] = compute_sensitivity(
            work, batches, classes, head_seed=s.seed, copy_model=False, source="train800"
        )

    x, y = batches[0]
    F.cross_entropy(plain_model(x), y).backward()  # warm-up of the plain path (one batch)
    plain_model.zero_grad(set_to_none=True)
    sensitivity()  # warm-up; its scores are the result
    first = result["s"]
    times: dict[str, list[float]] = {"plain": [], "sensitivity": []}
    for _ in range(s.repeats):
        for key, fn in (("plain", plain), ("sensitivity", sensitivity)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    if any(not torch.equal(first.scores[n], result["s"].scores[n]) for n in first.scores):
        raise RuntimeError("the eval-mode sensitivity pass is not deterministic")
    plain_s, sens_s = _median(times["plain"]), _median(times["sensitivity"])
    timing = {
        "plain_s": plain_s, "sensitivity_s": sens_s, "ratio": sens_s / plain_s,
        "plain_all_s": times["plain"], "sensitivity_all_s": times["sensitivity"],
    }  # fmt: skip
    return first, timing


def plan_stats(plan: SptPlan, model: nn.Module) -> dict[str, Any]:
    """Sensitive-parameter shares of a plan: the block × role grid, role and block totals, and
    per role the density = share / (the role's share of all matrix entries)."""
    blocks, roles, grid = plan.shares()
    units = [u for u in find_candidates(model, describe(model)).units if u.kind == "matrix"]
    sizes = {r: sum(u.numel for u in units if u.role == r) for r in roles}
    total = sum(sizes.values())
    role_share = {r: sum(row[j] for row in grid) for j, r in enumerate(roles)}
    return {
        "blocks": blocks,
        "roles": roles,
        "grid": grid,
        "role_share": role_share,
        "block_share": [sum(row) for row in grid],  # aligned with "blocks"
        "density": {r: role_share[r] / (100.0 * sizes[r] / total) for r in roles},
        "tau": plan.tau,
        "filled": plan.filled,
        "total": plan.total,
        "breakdown": plan.breakdown(),
        "structured": sorted(
            f"{e.unit.block}.{e.unit.role}" for e in plan.entries if e.decision == "structured"
        ),
    }


def run_sensitivity(task: str, budgets: dict[str, int], s: Settings) -> dict[str, Any]:
    """Sensitivity (timed), the trained plans, the top-τ shares and their heat map, and the
    split-half control of one task."""
    torch.set_num_threads(s.threads)
    data = load_task(task)
    classes = synthetic.task_info(task).num_classes
    batches = list(sensitivity_batches(data["train800"], s.samples, s.sens_batch))
    scores, timing = timed_sensitivity(batches, classes, s)
    model = backbone()
    ranks = {"spt-lora": s.rank, "spt-adapter": s.bottleneck}
    plans = {
        method: build_plan(model, scores, budget, STRUCTURED[method], rank=ranks[method])
        for method, budget in budgets.items()
    }
    stats = {method: plan_stats(plan, model) for method, plan in plans.items()}
    # The sensitive-parameter share proper: the plain top-τ rule (no fill entries) at SPT-LoRA's
    # budget, so every counted entry is one of the τ highest-ranked.
    shares = build_plan(model, scores, budgets["spt-lora"], "lora", rank=s.rank, fill=False)
    stats["top-tau"] = plan_stats(shares, model)
    if s.png_dir:
        plot_heatmap(
            shares, Path(s.png_dir) / f"{task.removeprefix('synth-')}.png",
            title=f"{task} ({synthetic.TARGET_TASKS[task]}): top-{shares.tau:,} sensitive "
            f"entries (SPT-LoRA rules, budget {budgets['spt-lora']:,}; L = LoRA)",
        )  # fmt: skip
    half = len(batches) // 2
    halves = []
    for part in (batches[:half], batches[half:]):
        sens = compute_sensitivity(model, part, classes, head_seed=s.seed, source="half")
        plan = build_plan(model, sens, budgets["spt-lora"], "lora", rank=s.rank, fill=False)
        halves.append(plan_stats(plan, model))
    print(
        f"  {task:<18} sensitivity {timing['sensitivity_s']:.2f} s, plain "
        f"{timing['plain_s']:.2f} s, ratio {timing['ratio']:.3f}",
        file=sys.stderr,
        flush=True,
    )
    return {"task": task, "timing": timing, "plans": plans, "stats": stats, "halves": halves}


# ------------------------------------------------------------------ training


@dataclass(frozen=True)
class Job:
    """One training run: a method on a task with one lr, on the grid or the final split."""

    task: str
    method: str
    lr: float
    final: bool
    plan: SptPlan | None = None


def run_job(job: Job, s: Settings) -> dict[str, Any]:
    torch.set_num_threads(s.threads)
    data = load_task(job.task)
    classes = synthetic.task_info(job.task).num_classes
    pm = build(job.method, classes, s, job.plan).to(torch.device(s.device))
    config = train_config(s, job.lr, "adamw")
    start = time.perf_counter()
    if job.final:
        result = train(pm, data["train800val200"], None, data["test"], config)
        top1 = result.test_top1
    else:
        result = train(pm, data["train800"], data["val200"], None, config)
        top1 = result.val_top1
    assert top1 is not None
    record = {
        "task": job.task, "group": synthetic.TARGET_TASKS[job.task], "method": job.method,
        "lr": job.lr, "split": "test" if job.final else "val200", "top1": top1,
        "trainable": pm.summary().as_dict(), "classes": classes,
        "wall_s": time.perf_counter() - start,
    }  # fmt: skip
    print(
        f"  {job.task:<18} {job.method:<12} lr {job.lr:<7g} {record['split']:<6} top-1 "
        f"{top1:6.2f}  ({record['wall_s']:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return record


# ------------------------------------------------------------------ orchestration


def run_all(fn: Any, items: list[Any], s: Settings, jobs: int) -> list[Any]:
    """`fn(item, s)` for every item, in `jobs` spawned processes (results in item order)."""
    if jobs <= 1:
        return [fn(*item, s) if isinstance(item, tuple) else fn(item, s) for item in items]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [
            pool.submit(fn, *item, s) if isinstance(item, tuple) else pool.submit(fn, item, s)
            for item in items
        ]
        return [f.result() for f in futures]


def select_lrs(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: the lr with the best mean val200 top-1 (ties: earlier in the grid)."""
    chosen = {}
    for method in METHODS:
        means = {
            lr: statistics.mean(
                r["top1"] for r in records if r["method"] == method and r["lr"] == lr
            )
            for lr in LR_GRID
        }
        best = max(LR_GRID, key=lambda lr: (means[lr], -LR_GRID.index(lr)))
        chosen[method] = {"lr": best, "val_mean": means}
    return chosen


def check_counts(records: list[dict[str, Any]], budgets: dict[str, int]) -> None:
    """Every SPT run trains exactly its baseline's encoder count; heads are the same size."""
    for r in records:
        if r["method"] in MATCHED:
            if r["trainable"]["trainable_encoder"] != budgets[r["method"]]:
                raise RuntimeError(f"{r['method']} on {r['task']}: {r['trainable']} trainable, "
                                   f"budget {budgets[r['method']]}")  # fmt: skip
            base = next(
                x for x in records
                if x["task"] == r["task"] and x["method"] == MATCHED[r["method"]]
                and x["split"] == r["split"]
            )  # fmt: skip
            if base["trainable"] != r["trainable"] | {"total": base["trainable"]["total"]}:
                raise RuntimeError(f"{r['method']} on {r['task']}: counts differ from baseline")


def tv_distance(a: dict[Any, float], b: dict[Any, float]) -> float:
    """Total-variation distance (in share points, 0–100) between two share distributions."""
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def by_block(stats: dict[str, Any]) -> dict[int, float]:
    return dict(zip(stats["blocks"], stats["block_share"], strict=True))


def cells(stats: dict[str, Any]) -> dict[tuple[int, str], float]:
    return {
        (b, r): stats["grid"][i][j]
        for i, b in enumerate(stats["blocks"])
        for j, r in enumerate(stats["roles"])
    }


# ------------------------------------------------------------------ report


def markdown(
    args: argparse.Namespace,
    s: Settings,
    finals: list[dict[str, Any]],
    chosen: dict[str, dict[str, Any]],
    sens: dict[str, dict[str, Any]],
    budgets: dict[str, int],
    wall_s: float,
) -> str:
    tasks = args.tasks
    present, short = present_groups(tasks), short_names(tasks)
    top1 = {(r["task"], r["method"]): r["top1"] for r in finals}
    lines = [
        f"{BACKBONE}; tasks: {', '.join(tasks)}; lr grid {list(LR_GRID)} on "
        f"{', '.join(args.grid_tasks)} (train800 → val200); {s.epochs} epochs, batch {s.batch}, "
        f"AdamW (wd {s.weight_decay:g}), warm-up 1 epoch + cosine per step; seed {s.seed}; "
        f"LoRA r = {s.rank} on q, v; Houlsby adapter m = {s.bottleneck}; SPT rank "
        f"{s.rank} / {s.bottleneck}, α 10, β 5, fill; sensitivity: first {s.samples} images of "
        f"train800, batch {s.sens_batch}, eval mode",
        machine_line(s.device, s.threads, args.jobs, wall_s),
        "",
        *top1_table_head(tasks, ["method", "lr", "trainable encoder"]),
    ]  # fmt: skip
    for method in METHODS:
        means = group_means(finals, "method", method)
        enc = next(r["trainable"]["trainable_encoder"] for r in finals if r["method"] == method)
        row = [f"{top1[(t, method)]:.1f}" for t in tasks] + [f"{means[g]:.1f}" for g in present]
        lines.append(
            f"| {LABELS[method]} | {chosen[method]['lr']:g} | {enc:,} | " + " | ".join(row)
            + f" | **{means['mean']:.1f}** |"
        )  # fmt: skip
    lines += ["", "SPT minus its same-budget baseline (test top-1 points):", "",
              "| pair | " + " | ".join(short[t] for t in tasks) + " | " + " | ".join(present)
              + " | mean of groups | tasks won |",
              "|---|" + "---|" * (len(tasks) + len(present) + 2)]  # fmt: skip
    for spt, base in MATCHED.items():
        a, b = group_means(finals, "method", spt), group_means(finals, "method", base)
        diff = [top1[(t, spt)] - top1[(t, base)] for t in tasks]
        won = sum(d > 0 for d in diff)
        lines.append(
            f"| {LABELS[spt]} − {LABELS[base]} | " + " | ".join(f"{d:+.1f}" for d in diff)
            + " | " + " | ".join(f"{a[g] - b[g]:+.1f}" for g in present)
            + f" | **{a['mean'] - b['mean']:+.1f}** | {won} / {len(tasks)} |"
        )  # fmt: skip
    lines += ["", "Trainable parameters (encoder = budget, head excluded; all = + head D·C + C):",
              "", "| classes C | " + " | ".join(LABELS[m] for m in METHODS) + " |",
              "|---|" + "---|" * len(METHODS)]  # fmt: skip
    for classes in sorted({r["classes"] for r in finals}):
        row = []
        for m in METHODS:
            t = next(r["trainable"] for r in finals if r["method"] == m and r["classes"] == classes)
            row.append(f"{t['trainable_encoder']:,} / {t['trainable']:,}")
        lines.append(f"| {classes} | " + " | ".join(row) + " |")
    lines += ["", "SPT budgets (= the baselines' real encoder counts): "
              + ", ".join(f"{LABELS[k]} {v:,}" for k, v in budgets.items()), ""]  # fmt: skip
    lines += [
        f"Sensitivity cost: {s.samples} images, batch {s.sens_batch}; median of {s.repeats} "
        "interleaved runs (seconds):",
        "",
        "| task | plain fwd + bwd | sensitivity pass | ratio |",
        "|---|---|---|---|",
    ]
    for t in tasks:
        tm = sens[t]["timing"]
        lines.append(
            f"| {short[t]} | {tm['plain_s']:.2f} | {tm['sensitivity_s']:.2f} | {tm['ratio']:.3f} |"
        )
    plain_sum = sum(sens[t]["timing"]["plain_s"] for t in tasks)
    sens_sum = sum(sens[t]["timing"]["sensitivity_s"] for t in tasks)
    ratios = [sens[t]["timing"]["ratio"] for t in tasks]
    lines.append(
        f"| all | {plain_sum:.2f} | {sens_sum:.2f} | **{sens_sum / plain_sum:.3f}** "
        f"(per-task {min(ratios):.3f}–{max(ratios):.3f}; target ≤ 1.3) |"
    )
    lines += _plan_tables(tasks, short, sens)
    lines += chosen_lr_lines(chosen, LABELS)
    return "\n".join(lines)


def _plan_tables(
    tasks: list[str], short: dict[str, str], sens: dict[str, dict[str, Any]]
) -> list[str]:
    stats = {t: sens[t]["stats"]["top-tau"] for t in tasks}
    roles = stats[tasks[0]]["roles"]
    blocks = stats[tasks[0]]["blocks"]
    lines = [
        "",
        "Trained plans: top-τ ranked entries + fill entries = budget; matrices given the "
        "structured module (block.matrix):",
        "",
        "| task | SPT-LoRA τ + fill | SPT-LoRA structured | SPT-Adapter τ + fill "
        "| SPT-Adapter structured |",
        "|---|---|---|---|---|",
    ]
    for t in tasks:
        row = [
            f"{st['tau']:,} + {st['filled']:,} | {' '.join(st['structured']) or '—'}"
            for st in (sens[t]["stats"]["spt-lora"], sens[t]["stats"]["spt-adapter"])
        ]
        lines.append(f"| {short[t]} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Sensitive-parameter share: % of the top-τ matrix entries (plain top-τ rule at SPT-LoRA's "
        "budget) per matrix type, summed over blocks, and in brackets the density = share ÷ "
        "that type's share of all matrix entries (1 = as many as a random pick; q, k, v, proj "
        "hold 4,096 entries per block, fc1 and fc2 16,384):",
        "",
        "| task | τ | " + " | ".join(roles) + " | rank of q, k (of 6 by density) |",
        "|---|---|" + "---|" * (len(roles) + 1),
    ]
    for t in tasks:
        st = stats[t]
        order = sorted(roles, key=lambda r: -st["density"][r])
        ranks = f"{order.index('q') + 1}, {order.index('k') + 1}"
        lines.append(
            f"| {short[t]} | {st['tau']:,} | "
            + " | ".join(f"{st['role_share'][r]:.1f} ({st['density'][r]:.2f})" for r in roles)
            + f" | {ranks} |"
        )
    lines += [
        "",
        "Share (%) of the top-τ matrix entries per block:",
        "",
        "| task | " + " | ".join(f"block {b}" for b in blocks) + " |",
        "|---|" + "---|" * len(blocks),
    ]
    for t in tasks:
        st = stats[t]
        lines.append(f"| {short[t]} | " + " | ".join(f"{v:.1f}" for v in st["block_share"]) + " |")
    pairs = list(itertools.combinations(tasks, 2))
    halves = {t: sens[t]["halves"] for t in tasks}
    between = {
        "block": [tv_distance(by_block(stats[a]), by_block(stats[b])) for a, b in pairs],
        "cell": [tv_distance(cells(stats[a]), cells(stats[b])) for a, b in pairs],
    }
    within = {
        "block": [tv_distance(by_block(h[0]), by_block(h[1])) for h in halves.values()],
        "cell": [tv_distance(cells(h[0]), cells(h[1])) for h in halves.values()],
    }
    lines += [
        "",
        "Total-variation distance (share points; 0 = same distribution, 100 = disjoint) between "
        "top-τ share distributions: between two tasks, and between the two halves of one "
        "task's sensitivity samples (each half scored alone: the noise floor):",
        "",
        "| distribution | between tasks: mean (min–max) | within a task (halves): mean (min–max) |",
        "|---|---|---|",
    ]
    for key, label in (("block", "over blocks"), ("cell", "over block × matrix cells")):
        lines.append(f"| {label} | {_spread(between[key])} | {_spread(within[key])} |")
    return lines


def _spread(values: list[float]) -> str:
    """`values` as "mean (min–max)"; a dash when there are none (one task: no pairs)."""
    if not values:
        return "- (needs two tasks)"
    return f"{statistics.mean(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_task_arguments(parser)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank r (and SPT-LoRA's)")
    parser.add_argument("--bottleneck", type=int, default=8, help="adapter m (and SPT-Adapter's)")
    parser.add_argument("--samples", type=int, default=512, help="sensitivity samples C")
    parser.add_argument("--sens-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="timed sensitivity repeats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--png-dir", default="", help="write the plans' heat maps here")
    parser.add_argument("--out", default="", help="write the markdown tables here")
    parser.add_argument("--json", default="", help="write every record here")
    parser.add_argument("--render", default="", help="only re-render the tables of a --json file")
    args = parser.parse_args()
    if args.grid_tasks is None:
        args.grid_tasks = default_grid_tasks(args.tasks)
    return args


def main() -> None:
    args = parse_args()
    if args.render:
        render(args)
        return
    torch.set_num_threads(args.threads)
    s = Settings(
        args.epochs, args.batch, args.weight_decay, args.rank, args.bottleneck, args.samples,
        args.sens_batch, args.repeats, args.seed, args.device, args.threads, args.png_dir,
    )  # fmt: skip
    all_tasks = prepare_tasks(args.tasks, args.grid_tasks)  # caches made before the workers
    start = time.perf_counter()
    budgets = baseline_budgets(s)
    print(f"budgets {budgets}; sensitivity on {all_tasks}", file=sys.stderr)
    sens = {
        r["task"]: r
        for r in run_all(run_sensitivity, [(t, budgets) for t in all_tasks], s, args.jobs)
    }
    sens_s = time.perf_counter() - start

    def jobs(tasks: list[str], final: bool, lrs: dict[str, tuple[float, ...]]) -> list[Job]:
        return [
            Job(t, m, lr, final, sens[t]["plans"].get(m))
            for m in ("spt-lora", "spt-adapter", "lora", "adapter")  # slowest first
            for t in tasks
            for lr in lrs[m]
        ]

    print(f"lr grid on {args.grid_tasks} (train800 -> val200)", file=sys.stderr)
    grid = run_all(run_job, jobs(args.grid_tasks, False, dict.fromkeys(METHODS, LR_GRID)),
                   s, args.jobs)  # fmt: skip
    chosen = select_lrs(grid)
    print(f"chosen: { {m: c['lr'] for m, c in chosen.items()} }", file=sys.stderr)
    grid_s = time.perf_counter() - start - sens_s
    best = {m: (c["lr"],) for m, c in chosen.items()}
    finals = run_all(run_job, jobs(args.tasks, True, best), s, args.jobs)
    check_counts(grid + finals, budgets)
    wall = time.perf_counter() - start
    print(f"sensitivity {sens_s:.0f} s, grid {grid_s:.0f} s, finals "
          f"{wall - sens_s - grid_s:.0f} s", file=sys.stderr)  # fmt: skip
    if args.json:
        record = {
            "settings": asdict(s),
            "args": vars(args),
            "budgets": budgets,
            "grid": grid,
            "final": finals,
            "chosen": chosen,
            "sensitivity": sens,
            "wall_s": wall,
        }
        for item in sens.values():
            item["plans"] = {m: p.to_json() for m, p in item["plans"].items()}
        Path(args.json).write_text(json.dumps(record, indent=1, default=str))
    report(args, s, finals, chosen, sens, budgets, wall)


def report(
    args: argparse.Namespace, s: Settings, finals: list[dict[str, Any]],
    chosen: dict[str, dict[str, Any]], sens: dict[str, dict[str, Any]],
    budgets: dict[str, int], wall: float,
) -> None:  # fmt: skip
    text = markdown(args, s, finals, chosen, sens, budgets, wall)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def render(args: argparse.Namespace) -> None:
    """Re-render the tables of a finished run from its `--json` file (no training)."""
    record = json.loads(Path(args.render).read_text())
    saved = argparse.Namespace(**record["args"])
    saved.out = args.out
    report(
        saved, Settings(**record["settings"]), record["final"], record["chosen"],
        record["sensitivity"], record["budgets"], record["wall_s"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
