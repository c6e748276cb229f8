"""Choose the `vpeft demo` learning rates on the VAL split (train800 → val200), never on test.

A `vpeft bench` sweep does the work: protocol ``synthetic`` with the demo's recipes
(`vpeft.bench.demo.RECIPES`: options, weight decay, epochs; AdamW, batch 32, one warm-up epoch,
val scored once after the last epoch) and the lr grids of `vpeft.bench.protocols` (linear
{1e-2, 3e-2, 1e-1}, full {3e-4, 1e-3, 3e-3}, vpt-deep {3e-3, 1e-2, 3e-2, 1e-1}, the other PEFT
methods {3e-3, 1e-2, 3e-2}). Only its selection stage is run — every grid point trained on
train800 and scored on val200; the final (test) runs are never started — and the runs live in
a result store (one JSON per run; a re-run skips what is there, so the grid can be split over
processes with --methods). The summary averages val200 over the tasks per (method, lr) and
keeps the best lr per method: the demo uses one recipe on every task, where `bench run` would
pick per task.

    .venv/bin/python benchmarks/demo_hparams.py --store runs/demo-hparams --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import fmean

import torch

from vpeft.bench.demo import DEFAULT_TASKS, RECIPES
from vpeft.bench.protocols import demo_train
from vpeft.bench.store import ResultStore, run_key
from vpeft.bench.sweep import SweepConfig, build_plan, planned_runs, run_and_store

SWEEP = "demo-hparams"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="bench result store folder")
    parser.add_argument("--methods", nargs="*", default=list(RECIPES))
    parser.add_argument("--tasks", nargs="*", default=list(DEFAULT_TASKS))
    parser.add_argument("--epochs", type=int, help="override every recipe's epochs (smoke runs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--summary-only", action="store_true", help="only print the summary")
    return parser.parse_args()


def sweep_config(methods: list[str], tasks: list[str], epochs: int | None) -> SweepConfig:
    train = {m: {"train": demo_train(epochs or RECIPES[m].epochs)} for m in methods}
    return SweepConfig(
        name=SWEEP, protocol="synthetic", methods=methods, tasks=tasks, method_overrides=train
    )


def run_selection(cfg: SweepConfig, store: ResultStore) -> None:
    """Train every grid run of the sweep that is not in the store yet (no final runs)."""
    for spec, labels in planned_runs(build_plan(cfg), store):
        if labels["stage"] == "select" and not store.has(run_key(spec)):
            record = run_and_store(spec, labels, store, device="cpu")
            print(f"{labels['unit']} lr {spec['train']['lr']:g}: val200 top-1 "
                  f"{record['metrics']['val_top1']:.1f}", flush=True)  # fmt: skip


def summary(store: ResultStore, methods: list[str], tasks: list[str]) -> None:
    by_point: dict[tuple[str, float], dict[str, float]] = {}
    for r in store.records(sweep=SWEEP, stage="select"):
        key = (r["labels"]["method"], r["spec"]["train"]["lr"])
        by_point.setdefault(key, {})[r["labels"]["task"]] = r["metrics"]["val_top1"]
    print("| method | lr | " + " | ".join(tasks) + " | mean val200 |")
    print("|---|---:|" + "---:|" * (len(tasks) + 1))
    best: dict[str, tuple[float, float]] = {}
    for (method, lr), by_task in sorted(by_point.items()):
        if method not in methods or not set(tasks) <= set(by_task):
            continue
        mean = fmean(by_task[t] for t in tasks)
        print(f"| {method} | {lr:g} | {' | '.join(f'{by_task[t]:.1f}' for t in tasks)} | "
              f"{mean:.1f} |")  # fmt: skip
        if method not in best or mean > best[method][1]:  # ties: the smaller lr
            best[method] = (lr, mean)
    print()
    for method, (lr, mean) in best.items():
        print(f"{method}: lr {lr:g} (mean val200 {mean:.1f})")


if __name__ == "__main__":
    args = parse_args()
    store = ResultStore(args.store)
    if not args.summary_only:
        torch.set_num_threads(args.threads)
        run_selection(sweep_config(args.methods, args.tasks, args.epochs), store)
    summary(store, args.methods, args.tasks)
