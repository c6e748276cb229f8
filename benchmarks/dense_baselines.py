"""Every dense multi-task method (baselines, the Polyhistor family, MTLoRA) on the bundled tiny
Swin and the procedural dense suite: per-task test metrics (last epoch), Δm against single-task
full fine-tuning (against the mean of its seeds, and paired with the reference run of the same
seed), trainable parameters encoder / all, and the Fig. 3-style plot (paired Δm against
trainable encoder parameters, log x). Writes the table to docs/results/dense_table.md (quoted in
dense.md) and docs/results/dense_delta_m_vs_params.png.

    OMP_NUM_THREADS=1 python benchmarks/dense_baselines.py --store runs/dense-bench  # run+report
    python benchmarks/dense_baselines.py --report-only  # from docs/results/dense/results.json

The runs are a `vpeft bench` sweep (protocol ``dense-synthetic``, task set ``pascal-mt``): every
row is a named variant (`METHODS`: the method and its options) except the reference, bench's
``full`` with one encoder copy per task. Planning, training, resuming and storing are bench's
(`build_plan`, `run_serial`, the result store under ``--store``; a finished run is never trained
again, an interrupted one resumes from its last epoch), in priority order (`RUNS`, one wave per
(row, seed)); Δm is `vpeft.tasks.dense.delta_m`, bench's. ``--write-config FILE`` writes the same
sweep as a bench sweep file, for ``vpeft bench run --config FILE --workers N``; this script then
reports the runs it finds in the store (by run key). What stays here: the rows, the priority
order, the table with paired Δm and the plot. The report also writes a compact copy of every
run's figures (``--results``, docs/results/dense/results.json); ``--report-only`` reads it too,
so the table and the plot can be rebuilt without the store.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from vpeft.tasks.dense import delta_m as bench_delta_m

#: label -> the bench variant it runs (method, options; "shared": one encoder copy for all tasks).
#: Options scaled to the tiny Swin (widths 24/48/96/192): the paper's λ = 16 gives a stage-1
#: bottleneck of 24 // 16 = 1 there, so Polyhistor and PHM use λ = 4 (n = 6/12/24/48, r = n/4)
#: and Hyperformer λ = 8; everything else keeps its defaults. The reference row is bench's own.
REFERENCE = "single-task full FT"
METHODS: dict[str, dict[str, Any]] = {
    REFERENCE: {"method": "full"},
    "decoders only": {"method": "linear"},
    "multi-task full FT": {"method": "full", "shared": True},
    "BitFit": {"method": "bitfit"},
    "relative bias": {"method": "relative-bias"},
    "VPT-shallow": {"method": "vpt-shallow"},
    "VPT-deep": {"method": "vpt-deep"},
    "LoRA": {"method": "lora-qkv"},
    "Adapter λ=2": {"method": "adapter-ln"},
    "low-rank adapter": {"method": "low-rank-adapter"},
    "Shared Adapter λ=2": {"method": "shared-adapter"},
    "Hyperformer λ=8": {"method": "hyperformer", "options": {"reduction": 8}},
    "Polyhistor λ=4": {"method": "polyhistor", "options": {"reduction": 4}},
    "Polyhistor-Lite": {"method": "polyhistor-lite"},
    "PHM λ=4": {"method": "phm", "options": {"reduction": 4}},
    "Compacter": {"method": "compacter"},
    "Compacter++": {"method": "compacter++"},
    # the public reference point (Agiza et al., CVPR 2024), its smallest published configuration
    # (TA rank 16, TS rank 4, scales 4): ranks <= 24 fit the tiny Swin's first stage as they are
    "MTLoRA r=16/4": {"method": "mtlora"},
    # ablation: the same LoRA modules with every other official trainable (patch embedding,
    # LayerNorms, bias tables, patch-merging reductions) frozen
    "MTLoRA, LoRA only": {"method": "mtlora", "options": {
        "train_norms": False, "train_patch_embed": False, "train_relative_bias": False,
        "patch_merging": "frozen"}},
}  # fmt: skip
MAIN = (REFERENCE, "Hyperformer λ=8", "Polyhistor λ=4", "Polyhistor-Lite")
REFERENCE_POINT = "MTLoRA r=16/4"
ABLATION = "MTLoRA, LoRA only"
#: priority order: the reference's two seeds, the paper's key rows, the rest, MTLoRA, then a
#: second seed of everything, a third seed of the reference, the hypernetwork methods and
#: MTLoRA, the MTLoRA ablation (two seeds), a third seed of the rest, seeds 3 and 4 of the rows
#: whose seeds disagree most (the reference, the hypernetwork methods, MTLoRA), then of the rest:
#: every row ends with the same five seeds, so the seed effect they share cancels in Δm
RUNS: list[tuple[str, int]] = (
    [(REFERENCE, 0), (REFERENCE, 1), ("decoders only", 0),
     ("multi-task full FT", 0), ("Polyhistor λ=4", 0), ("Polyhistor-Lite", 0),
     ("Hyperformer λ=8", 0), ("LoRA", 0), ("Adapter λ=2", 0), ("BitFit", 0),
     ("relative bias", 0), ("VPT-shallow", 0), ("VPT-deep", 0), ("low-rank adapter", 0),
     ("Shared Adapter λ=2", 0), ("Polyhistor λ=4", 1), ("Polyhistor-Lite", 1),
     ("Hyperformer λ=8", 1), ("PHM λ=4", 0), ("Compacter", 0), ("Compacter++", 0),
     (REFERENCE_POINT, 0), (REFERENCE_POINT, 1)]
    + [(label, 1) for label in METHODS if label not in (*MAIN, REFERENCE_POINT, ABLATION)]
    + [(label, 2) for label in (*MAIN, REFERENCE_POINT)]
    + [(ABLATION, 0), (ABLATION, 1)]
    + [(label, 2) for label in METHODS if label not in (*MAIN, REFERENCE_POINT, ABLATION)]
    + [(ABLATION, 2)]
    + [(label, seed) for seed in (3, 4) for label in (*MAIN, REFERENCE_POINT)]
    + [(label, seed) for seed in (3, 4) for label in METHODS
       if label not in (*MAIN, REFERENCE_POINT)]
)  # fmt: skip
TASKS = ("semseg", "parts", "saliency", "normals")
LOWER_IS_BETTER = {"normals"}


SWEEP = "dense-baselines"


def sweep_config(args: argparse.Namespace, labels: list[str], seeds: list[int]) -> Any:
    """The bench sweep of `labels` × `seeds`: every row but the reference is a named variant."""
    from vpeft.bench.sweep import SweepConfig

    kind, _, root = args.data.partition(":")
    if kind != "dense-synthetic":
        sys.exit(f"--data {args.data}: this benchmark runs on dense-synthetic[:options]")
    return SweepConfig(
        name=SWEEP,
        protocol="dense-synthetic",
        methods=[bench_name(label) for label in labels],
        tasks=["pascal-mt"],
        seeds=seeds,
        backbone=args.backbone,
        data_root=root or None,
        variants={label: v for label, v in METHODS.items() if label != REFERENCE},
        # test once, after the last epoch (as every run of the committed table)
        train={"epochs": args.epochs, "warmup_epochs": 0.0, "batch_size": args.batch_size,
               "eval_every": args.epochs},
        lr=[args.lr],
    )  # fmt: skip


def bench_name(label: str) -> str:
    return METHODS[REFERENCE]["method"] if label == REFERENCE else label


def run_key_of(args: argparse.Namespace, label: str, seed: int) -> str:
    """The result-store key of (label, seed): the final run of its bench plan."""
    from vpeft.bench.store import run_key
    from vpeft.bench.sweep import build_plan, final_specs

    plan = build_plan(sweep_config(args, [label], [seed]))
    unit = next(u for u in plan["units"] if u["method"] == bench_name(label))
    return run_key(final_specs(plan, unit, *unit["grid"][0])[0])


def command(args: argparse.Namespace, label: str, seed: int) -> list[str]:
    """The command that runs (or, once stored, reports) this one run."""
    return ["python", "benchmarks/dense_baselines.py", "--only", label, "--seeds", str(seed),
            "--backbone", args.backbone, "--data", args.data, "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr)]  # fmt: skip


def run_all(args: argparse.Namespace, runs: list[tuple[str, int]]) -> None:
    """Each (row, seed) as a bench plan of its own, in priority order, through `run_serial`
    (the reference of the seed comes with it): stored runs are reused, never trained again."""
    from vpeft.bench.store import ResultStore
    from vpeft.bench.sweep import build_plan, run_serial

    store = ResultStore(args.store)

    def done(key: str, labels: dict[str, Any], state: str) -> None:
        if state == "done":
            record = store.get(key) or {}
            seed, wall = record["spec"]["train"]["seed"], record["time"]["wall_s"]
            label = REFERENCE if labels.get("reference") else labels["method"]
            print(f"{label} seed {seed}: {wall:.0f} s (run {key})", flush=True)

    for label, seed in runs:
        plan = build_plan(sweep_config(args, [label], [seed]))
        run_serial(plan, store, device=args.device, on_run=done)


#: the fields of a run kept in the compact results file
KEPT = ("headline", "trainable", "wall_s")


def collect(args: argparse.Namespace) -> dict[str, list[dict]]:
    """label -> its runs (seed order): the compact results file, then the bench store (a stored
    run wins over the file's copy of the same run)."""
    runs: dict[tuple[str, int], dict] = {}
    if args.results.is_file():
        for row in json.loads(args.results.read_text())["runs"]:
            if row["label"] in METHODS:
                runs[(row["label"], row["seed"])] = row
    if (args.store / "runs").is_dir():
        from vpeft.bench.store import ResultStore

        store = ResultStore(args.store)
        for label in METHODS:
            for seed in range(10):
                key = run_key_of(args, label, seed)
                record = store.get(key)
                if record is not None:
                    runs[(label, seed)] = {
                        "label": label, "seed": seed,
                        "headline": record["metrics"]["headline"],
                        "trainable": record["params"], "wall_s": record["time"]["wall_s"],
                        "command": shlex.join(command(args, label, seed)), "run": key,
                    }  # fmt: skip
    found: dict[str, list[dict]] = {}
    for label in METHODS:
        for seed in range(10):
            if (label, seed) in runs:
                found.setdefault(label, []).append(runs[(label, seed)])
    return found


def write_results(args: argparse.Namespace, found: dict[str, list[dict]]) -> None:
    """The compact machine-readable copy of every run (`--report-only` rebuilds from it)."""
    rows = [run for label in METHODS for run in found.get(label, [])]
    text = json.dumps({"protocol": protocol(args), "runs": rows}, indent=1, ensure_ascii=False)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text + "\n")


def protocol(args: argparse.Namespace) -> dict[str, object]:
    return {k: getattr(args, k) for k in ("backbone", "data", "epochs", "batch_size", "lr")}


def delta_m(headline: dict[str, float], ref: dict[str, float]) -> float:
    """Δm (%) over the four tasks: bench's (`vpeft.tasks.dense.delta_m`)."""
    return bench_delta_m({t: headline[t] for t in TASKS}, ref, sorted(LOWER_IS_BETTER))


def pm(values: list[float], fmt: str = ".2f") -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:{fmt}}"
    return f"{mean:{fmt}} ± {statistics.stdev(values):{fmt.lstrip('+')}}"


def report(args: argparse.Namespace) -> None:
    found = collect(args)
    ref_runs = found.get(REFERENCE, [])
    if not ref_runs:
        sys.exit("no single-task full FT run yet: nothing to report")
    ref = {t: statistics.fmean(s["headline"][t] for s in ref_runs) for t in TASKS}
    ref_by_seed = {s["seed"]: s["headline"] for s in ref_runs}
    lines = ["| method | seeds | " + " | ".join(TASKS) + " | Δm % | Δm paired % "
             "| trainable encoder / all | wall s / run |", "|---" * 10 + "|"]  # fmt: skip
    points = []
    for label in METHODS:
        runs = found.get(label)
        if not runs:
            lines.append(f"| {label} | — | not run (time) |" + " |" * 7)
            continue
        dms = [delta_m(s["headline"], ref) for s in runs]
        # against the reference run of the same seed (same decoder init and batch order)
        paired = [delta_m(s["headline"], ref_by_seed[s["seed"]]) for s in runs
                  if s["seed"] in ref_by_seed]  # fmt: skip
        t = runs[0]["trainable"]
        cells = [pm([s["headline"][k] for s in runs]) for k in TASKS]
        wall = statistics.fmean(s["wall_s"] for s in runs)
        lines.append(
            f"| {label} | {','.join(str(s['seed']) for s in runs)} | " + " | ".join(cells)
            + f" | {pm(dms, '+.2f')} | {pm(paired, '+.2f') if paired else '—'}"
            + f" | {t['trainable_encoder']:,} / {t['trainable']:,} | {wall:.0f} |"
        )  # fmt: skip
        drawn = paired or dms  # the plot shows the paired Δm (the seed effect cancels)
        points.append((label, t["trainable_encoder"], statistics.fmean(drawn),
                       statistics.stdev(drawn) if len(drawn) > 1 else 0.0))  # fmt: skip
    commands = [s["command"] for label in METHODS for s in found.get(label, [])]
    text = "\n".join(lines) + "\n\nCommands (run from the repository root):\n\n"
    text += "\n".join(f"    {c}" for c in commands) + "\n"
    print(text)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(text)
    write_results(args, found)
    plot(points, args.plot)


def plot(points: list[tuple[str, int, float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, n, dm, sd in points:
        x = max(n, 1)  # decoders only has 0 encoder parameters: drawn at 1 on the log axis
        if label == REFERENCE_POINT:
            style = {"fmt": "D", "ms": 9, "color": "C2", "label": f"{label} (public reference)"}
        elif label == ABLATION:
            style = {"fmt": "D", "ms": 7, "color": "C2", "mfc": "none", "label": label}
        elif label in MAIN:
            polyhistor = "Polyhistor" in label
            style = {
                "fmt": "*",
                "ms": 12,
                "color": "C3" if polyhistor else "k" if label == MAIN[0] else "C1",
                "label": label if label != REFERENCE else "reference (Δm = 0)",
            }
        else:
            style = {"fmt": "o", "ms": 6, "color": "C0", "label": "other baselines"}
        ax.errorbar(x, dm, yerr=sd or None, capsize=3, **style)
        ax.annotate(label, (x, dm), textcoords="offset points", xytext=(5, 4), fontsize=7)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # "other baselines" once
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left")
    ax.set_xscale("log")
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("trainable encoder parameters (log; decoders only drawn at 1)")
    ax.set_ylabel("Δm paired (%) vs single-task full FT, mean ± sd over seeds")
    ax.set_title("swin-tiny-synth, procedural dense suite (cf. Polyhistor Fig. 3)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="swin-tiny-synth")
    parser.add_argument("--data", default="dense-synthetic:limit=128")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(METHODS),
        metavar="LABEL",
        help="run only these rows (repeatable; default: every row)",
    )
    parser.add_argument("--seeds", help="run only these seeds, e.g. 0,1 (default: RUNS's)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--store",
        type=Path,
        default=Path("runs/dense-bench"),
        help="the bench result store the runs go to and are reported from",
    )
    parser.add_argument("--write-config", type=Path, metavar="FILE",
                        help="write the whole sweep (every row, seeds 0-4) as a bench sweep "
                        "file for `vpeft bench run --config FILE` and exit")  # fmt: skip
    parser.add_argument("--table", type=Path, default=Path("docs/results/dense_table.md"))
    parser.add_argument(
        "--plot", type=Path, default=Path("docs/results/dense_delta_m_vs_params.png")
    )
    parser.add_argument(
        "--results", type=Path, default=Path("docs/results/dense/results.json"),
        help="compact per-run results (written by the report, read by --report-only)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.write_config is not None:
        import dataclasses

        cfg = sweep_config(args, list(METHODS), sorted({s for _, s in RUNS}))
        args.write_config.write_text(json.dumps(dataclasses.asdict(cfg), indent=1,
                                                ensure_ascii=False) + "\n")  # fmt: skip
        return
    if not args.report_only:
        seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
        runs = [
            (label, seed)
            for label, seed in RUNS
            if (not args.only or label in args.only) and (seeds is None or seed in seeds)
        ]
        runs += [
            (label, seed)
            for label in args.only or ()
            for seed in sorted(seeds or ())
            if (label, seed) not in runs
        ]  # seeds outside RUNS, when asked for
        ref = [r for r in runs if r[0] == REFERENCE]
        run_all(args, ref + [r for r in runs if r[0] != REFERENCE])  # fmt: skip
    report(args)


if __name__ == "__main__":
    main()
