"""PETL methods on the bundled VL backbones and the procedural VL suite (issue 12 evidence).

For every task × method × seed: the test metric after the last epoch, trainable parameters,
the extra forward FLOPs over the frozen model with only its head (``linear``) and the saved
training activations of one training step on the first 8 training samples. CLIP runs the
base-to-new protocol: train on the base classes, score base and new, harmonic mean; zero-shot
is the frozen model with the hand-written prompt.

    OMP_NUM_THREADS=1 python benchmarks/vl_synthetic.py --methods linear,vpt-shallow,vpt-deep,\
        lora,adapter,scaled-pa,full --tasks vqa,nlvr2,retrieval,clip --seeds 0,1 \
        --out docs/results/vl --store runs/vl-bench

Every (task, method, seed) is a `vpeft bench` run (protocol ``vl-synthetic``, `sweep_config`):
planning, training, resuming and storing are bench's (`build_plan`, `run_serial`, the result
store under ``--store``: a stored run is reused, never trained again; an interrupted one resumes
from its last epoch). The script's recipe goes in as overrides (AdamW, weight decay 0.01, one
warm-up epoch, ``--lr``), its subsets as ``sample`` (a random ``--train-size`` of train drawn
with the seed, a random ``--test-size`` of the VQA / NLVR2 test sets drawn with seed 0, the
first ``--gallery`` images of the retrieval test gallery), the costs as ``measure_batch = 8``,
zero-shot as the variant ``linear-zero-shot`` (``linear`` with ``evaluate_only``). A method that
does not apply to a backbone is a skipped bench record (and a skipped row).
``--opt METHOD:KEY=VALUE`` passes method options. What stays here: the rows, the table (extra
forward FLOPs over ``linear``, saved activations) and ``--rows`` merging of earlier results.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import vpeft

HEADLINE = {"vqa": "vqa/vqa_score", "nlvr2": "nlvr2/top1", "retrieval": "retrieval/rsum",
            "clip": "clip/top1"}  # fmt: skip
SWEEP = "vl-synthetic-script"
#: FLOPs and saved activations of one training step on the first 8 training samples
PROFILE_BATCH = 8
#: the frozen CLIP with the task's hand-written prompt: `linear` scored without training, the
#: bench variant ZERO_SHOT_VARIANT (the row "zero-shot"; vpeft's own `zero-shot` method is CLIP's
#: classifier over prompts given as token ids)
ZERO_SHOT = {"method": "linear", "evaluate_only": True}
ZERO_SHOT_VARIANT = "linear-zero-shot"


def _options(opts: list[str], method: str) -> dict[str, str]:
    out = {}
    for item in opts:
        name, _, pair = item.partition(":")
        if name == method:
            key, _, value = pair.partition("=")
            out[key] = value
    return out


def sweep_config(task: str, method: str, seed: int, args: argparse.Namespace) -> Any:
    """The bench sweep of one row and seed: protocol ``vl-synthetic``, this script's recipe
    (AdamW, weight decay 0.01, one warm-up epoch, --lr) and subsets (a random --train-size of
    train drawn with the seed, a random --test-size of the ViLT test sets drawn with seed 0,
    the retrieval gallery's first --gallery images); zero-shot is a variant that only scores."""
    from vpeft.bench.sweep import SweepConfig

    sample = {"train": args.train_size}
    if task == "retrieval":
        sample["gallery"] = args.gallery
    elif task != "clip":
        sample["eval"] = args.test_size
    opts = _options(args.opt, method)
    return SweepConfig(
        name=SWEEP,
        protocol="vl-synthetic",
        methods=[ZERO_SHOT_VARIANT if method == "zero-shot" else method],
        tasks=[task],
        seeds=[seed],
        backbone=args.clip if task == "clip" else args.vilt,
        variants={ZERO_SHOT_VARIANT: ZERO_SHOT} if method == "zero-shot" else {},
        method_overrides={method: {"options": opts}} if opts else {},
        train={"optimizer": "adamw", "epochs": args.epochs, "batch_size": args.batch_size,
               "warmup_epochs": float(min(1, args.epochs - 1)), "eval_batch_size": 64},
        lr=[args.lr],
        wd=[0.01],
        sample={k: v for k, v in sample.items() if v > 0} or None,
        measure_batch=PROFILE_BATCH,
    )  # fmt: skip


def row_of(record: dict[str, Any], task: str, method: str, args: argparse.Namespace) -> dict:
    """This script's row of a bench record: parameter counts, the forward FLOPs and saved
    activations of a training step on `batch` samples (none for zero-shot: nothing trains),
    the test metrics, the headline (CLIP: base-to-new HM) and the training time."""
    row: dict[str, Any] = {"task": task, "method": method, "seed": record["spec"]["train"]["seed"]}
    if record.get("status") == "skipped":
        return {**row, "skipped": record["skipped"]}
    row.update(record["params"])
    if _options(args.opt, method):
        row["options"] = _options(args.opt, method)  # the --opt values (not the derived ones)
    if method != "zero-shot":
        row.update(forward_flops=record["flops"]["forward_batch"],
                   saved_activation_bytes=record["memory"]["saved_activation_bytes"],
                   batch=record["flops"]["batch"])  # fmt: skip
    metrics = record["metrics"]
    row["test"] = metrics["results"]
    row["headline"] = metrics["score"]
    if "base_to_new" in metrics:
        row["base_to_new"] = metrics["base_to_new"]
    row["train_seconds"] = round(record["time"]["train_s"], 1)
    return row


def run_one(task: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One (task, method, seed) through bench (`run_serial` into --store: a stored run is
    reused, an interrupted one resumes) and its row."""
    from vpeft.bench.store import ResultStore, run_key
    from vpeft.bench.sweep import build_plan, final_specs, run_serial

    store = ResultStore(args.store)
    plan = build_plan(sweep_config(task, method, seed, args))
    run_serial(plan, store, device=args.device)
    (unit,) = plan["units"]
    (spec,) = final_specs(plan, unit, *unit["grid"][0])
    return row_of(store.get(run_key(spec)), task, method, args)


def _mean_std(values: list[float]) -> str:
    m = sum(values) / len(values)
    if len(values) == 1:
        return f"{m:.1f}"
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{m:.1f} ± {s:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per task and method, the headline metric (mean ± std over seeds), trainable
    parameters, extra forward MFLOPs per sample over ``linear`` and saved activations."""
    base = {(r["task"]): r for r in rows if r["method"] == "linear" and "forward_flops" in r}
    lines = ["| task | method | metric (seeds) | trainable | extra fwd MFLOPs / sample | "
             "saved activations KiB / sample |", "|---|---|---|---|---|---|"]  # fmt: skip
    keys = sorted({(r["task"], r["method"]) for r in rows if "headline" in r},
                  key=lambda k: (k[0], [r["method"] for r in rows].index(k[1])))  # fmt: skip
    for task, method in keys:
        mine = [r for r in rows if (r["task"], r["method"]) == (task, method) and "headline" in r]
        r0 = mine[0]
        ref = base.get(task)
        extra = (
            f"{(r0['forward_flops'] - ref['forward_flops']) / r0['batch'] / 1e6:.2f}"
            if ref and "forward_flops" in r0
            else "-"
        )
        saved = f"{r0['saved_activation_bytes'] / r0['batch'] / 1024:.0f}" if "batch" in r0 else "-"
        metric = _mean_std([r["headline"] for r in mine])
        if task == "retrieval":  # ViLT's TR (image -> text) and IR (text -> image) R@1
            tr = _mean_std([r["test"]["retrieval/i2t_r1"] for r in mine])
            ir = _mean_std([r["test"]["retrieval/t2i_r1"] for r in mine])
            metric = f"TR@1 {tr} / IR@1 {ir} / rsum {metric}"
        if task == "clip":
            b = _mean_std([r["base_to_new"]["base"] for r in mine])
            n = _mean_std([r["base_to_new"]["new"] for r in mine])
            metric = f"base {b} / new {n} / HM {metric}"
        lines.append(
            f"| {task} | {method} | {metric} ({len(mine)}) | {r0['trainable']:,} | {extra} | "
            f"{saved} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods", default="linear,vpt-shallow,vpt-deep,lora,adapter,scaled-pa,full"
    )
    parser.add_argument("--tasks", default="vqa,nlvr2,retrieval,clip")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-size", type=int, default=1000, help="0: the whole split")
    parser.add_argument("--test-size", type=int, default=500, help="0: the whole split")
    parser.add_argument("--gallery", type=int, default=20, help="ViLT retrieval test images")
    parser.add_argument("--vilt", default="vilt-tiny-synth", help="backbone of vqa/nlvr2/retrieval")
    parser.add_argument("--clip", default="clip-tiny-synth", help="backbone of clip")
    parser.add_argument("--opt", action="append", default=[], help="METHOD:KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("docs/results/vl"))
    parser.add_argument(
        "--store",
        type=Path,
        default=Path("runs/vl-bench"),
        help="bench result store: one record per run, reused when asked again",
    )
    parser.add_argument("--device", default="auto")  # fmt: skip
    parser.add_argument("--rows", type=Path, action="append", default=[],
                        help="results.json of earlier runs: merge their rows into one "
                        "results.json and table.md under --out, training nothing")  # fmt: skip
    args = parser.parse_args()
    if args.rows:
        rows = [row for path in args.rows for row in json.loads(path.read_text())]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
        (args.out / "table.md").write_text(table(rows) + "\n")
        print(table(rows))
        return

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in vpeft.available_methods() and m != "zero-shot"]
    if unknown:
        parser.error(f"unknown methods {unknown}; registered: {vpeft.available_methods()}")
    if "clip" in args.tasks.split(",") and "zero-shot" not in methods:
        methods = ["zero-shot", *methods]
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for task in args.tasks.split(","):
        for method in methods:
            if method == "zero-shot" and task != "clip":
                continue
            for seed in [int(s) for s in args.seeds.split(",")]:
                row = run_one(task, method, seed, args)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "test"}), flush=True)
                (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    (args.out / "table.md").write_text(table(rows) + "\n")


if __name__ == "__main__":
    main()
