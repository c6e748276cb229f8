"""Choose the `vpeft demo` learning rates on the VAL split (train800 → val200), never on test.

For each method and each learning rate of its grid, the bundled `vit-tiny-synth` is adapted on
train800 of every demo task for the demo's epochs and scored on val200 (the test split is not
evaluated at all). Records are appended to a JSONL file (a re-run skips the runs already there,
so the grid can be split over processes with --methods); the summary prints the mean val200
top-1 of every (method, lr) and the best lr per method, which `vpeft.bench.demo.RECIPES` uses.

    .venv/bin/python benchmarks/demo_hparams.py --out /tmp/demo_hparams.jsonl --threads 1
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from statistics import fmean

import torch

from vpeft.bench.demo import DEFAULT_TASKS, RECIPES, load_task_data, run_one
from vpeft.zoo import bundled_backbone

#: Learning rates tried per method (AdamW, batch 32, cosine schedule with 1 warm-up epoch).
GRID: dict[str, tuple[float, ...]] = {
    "linear": (1e-2, 3e-2, 1e-1),
    "full": (3e-4, 1e-3, 3e-3),
    "bitfit": (3e-3, 1e-2, 3e-2),
    "lora": (3e-3, 1e-2, 3e-2),
    "adapter": (3e-3, 1e-2, 3e-2),
    "adaptformer": (3e-3, 1e-2, 3e-2),
    "vpt-deep": (3e-3, 1e-2, 3e-2, 1e-1),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSONL file of run records")
    parser.add_argument("--methods", nargs="*", default=list(GRID))
    parser.add_argument("--tasks", nargs="*", default=list(DEFAULT_TASKS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--summary-only", action="store_true", help="only print the summary")
    return parser.parse_args()


def _done(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sweep(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    backbone = bundled_backbone("vit-tiny-synth")
    seen = {(r["method"], r["task"], r["lr"]) for r in _done(args.out)}
    reference = backbone.create()
    for task in args.tasks:
        data = load_task_data(task, reference)
        for method in args.methods:
            for lr in GRID[method]:
                if (method, task, lr) in seen:
                    continue
                row = run_one(backbone.name, replace(RECIPES[method], lr=lr), task, data,
                              score_test=False)  # fmt: skip
                record = {
                    "method": method, "task": task, "lr": lr, "epochs": row.epochs,
                    "weight_decay": row.weight_decay, "val_top1": row.val_top1,
                    "wall_s": round(row.wall_s, 1),
                }  # fmt: skip
                print(json.dumps(record), flush=True)
                with args.out.open("a") as f:
                    f.write(json.dumps(record) + "\n")


def summary(path: Path, tasks: list[str]) -> None:
    records = [r for r in _done(path) if r["task"] in tasks]
    print("| method | lr | " + " | ".join(tasks) + " | mean val200 |")
    print("|---|---:|" + "---:|" * (len(tasks) + 1))
    best: dict[str, tuple[float, float]] = {}
    for method in GRID:
        for lr in GRID[method]:
            by_task = {
                r["task"]: r["val_top1"] for r in records if (r["method"], r["lr"]) == (method, lr)
            }
            if set(by_task) != set(tasks):
                continue
            mean = fmean(by_task.values())
            cells = " | ".join(f"{by_task[t]:.1f}" for t in tasks)
            print(f"| {method} | {lr:g} | {cells} | {mean:.1f} |")
            if method not in best or mean > best[method][1]:
                best[method] = (lr, mean)
    print()
    for method, (lr, mean) in best.items():
        print(f"{method}: lr {lr:g} (mean val200 {mean:.1f})")


if __name__ == "__main__":
    arguments = parse_args()
    if not arguments.summary_only:
        sweep(arguments)
    summary(arguments.out, arguments.tasks)
