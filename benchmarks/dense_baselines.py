"""Every dense multi-task method (baselines, the Polyhistor family, MTLoRA) on the bundled tiny
Swin and the procedural dense suite: per-task test metrics (last epoch), Δm against single-task
full fine-tuning (against the mean of its seeds, and paired with the reference run of the same
seed), trainable parameters encoder / all, and the Fig. 3-style plot (paired Δm against
trainable encoder parameters, log x). Writes the table to docs/results/dense_table.md (quoted in
dense.md) and docs/results/dense_delta_m_vs_params.png.

    OMP_NUM_THREADS=1 python benchmarks/dense_baselines.py --jobs 1 --out runs/dense  # run+report
    python benchmarks/dense_baselines.py --report-only --out runs/dense  # report what exists

Runs go in priority order (`RUNS`) and are skipped when their summary.json exists, so an
interrupted sweep resumes, and `--report-only` reports whatever finished (missing rows say so).
Each run is one `vpeft train` command, listed in the report. The report also writes a compact
copy of every run's figures (`--results`, docs/results/dense/results.json); `--report-only`
reads it too, so the table and the plot can be rebuilt without the run folders.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: (label, method, extra CLI arguments). Options scaled to the tiny Swin (widths 24/48/96/192):
#: the paper's λ = 16 gives a stage-1 bottleneck of 24 // 16 = 1 there, so Polyhistor and PHM use
#: λ = 4 (n = 6/12/24/48, r = n/4) and Hyperformer λ = 8; everything else keeps its defaults.
METHODS: dict[str, tuple[str, list[str]]] = {
    "single-task full FT": ("full", []),
    "decoders only": ("linear", []),
    "multi-task full FT": ("full", ["--shared"]),
    "BitFit": ("bitfit", []),
    "relative bias": ("relative-bias", []),
    "VPT-shallow": ("vpt-shallow", []),
    "VPT-deep": ("vpt-deep", []),
    "LoRA": ("lora-qkv", []),
    "Adapter λ=2": ("adapter-ln", []),
    "low-rank adapter": ("low-rank-adapter", []),
    "Shared Adapter λ=2": ("shared-adapter", []),
    "Hyperformer λ=8": ("hyperformer", ["--opt", "reduction=8"]),
    "Polyhistor λ=4": ("polyhistor", ["--opt", "reduction=4"]),
    "Polyhistor-Lite": ("polyhistor-lite", []),
    "PHM λ=4": ("phm", ["--opt", "reduction=4"]),
    "Compacter": ("compacter", []),
    "Compacter++": ("compacter++", []),
    # the public reference point (Agiza et al., CVPR 2024), its smallest published configuration
    # (TA rank 16, TS rank 4, scales 4): ranks <= 24 fit the tiny Swin's first stage as they are
    "MTLoRA r=16/4": ("mtlora", []),
    # ablation: the same LoRA modules with every other official trainable (patch embedding,
    # LayerNorms, bias tables, patch-merging reductions) frozen
    "MTLoRA, LoRA only": ("mtlora", ["--opt", "train_norms=false", "--opt",
                                      "train_patch_embed=false", "--opt",
                                      "train_relative_bias=false", "--opt",
                                      "patch_merging=frozen"]),
}  # fmt: skip
MAIN = ("single-task full FT", "Hyperformer λ=8", "Polyhistor λ=4", "Polyhistor-Lite")
REFERENCE_POINT = "MTLoRA r=16/4"
ABLATION = "MTLoRA, LoRA only"
#: priority order: the reference's two seeds, the paper's key rows, the rest, MTLoRA, then a
#: second seed of everything, a third seed of the reference, the hypernetwork methods and
#: MTLoRA, the MTLoRA ablation (two seeds), a third seed of the rest, seeds 3 and 4 of the rows
#: whose seeds disagree most (the reference, the hypernetwork methods, MTLoRA), then of the rest:
#: every row ends with the same five seeds, so the seed effect they share cancels in Δm
RUNS: list[tuple[str, int]] = (
    [("single-task full FT", 0), ("single-task full FT", 1), ("decoders only", 0),
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


def run_dir(args: argparse.Namespace, label: str, seed: int) -> Path:
    method, extra = METHODS[label]
    tag = "-shared" if "--shared" in extra else ""
    tag += "".join("-" + e.replace("=", "") for e in extra if "=" in e)
    return args.out / f"{method}{tag}-s{seed}"


def command(args: argparse.Namespace, label: str, seed: int) -> list[str]:
    method, extra = METHODS[label]
    return ["vpeft", "train", "-b", args.backbone, "-m", method, "--tasks", "pascal-mt",
            "--data", args.data, "--epochs", str(args.epochs), "--warmup-epochs", "0",
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(seed),
            "--train-opt", f"eval_every={args.epochs}",  # test once, after the last epoch
            "--val-split", "none", "--out", str(run_dir(args, label, seed)), "--no-progress",
            "--json", *extra]  # fmt: skip


def run(args: argparse.Namespace, label: str, seed: int) -> None:
    out = run_dir(args, label, seed)
    if (out / "summary.json").is_file():
        return
    cmd = [sys.executable, "-m", "vpeft.cli.main", *command(args, label, seed)[1:]]
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.log", "w") as log:
        rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=log).returncode
    print(f"{label} seed {seed}: rc {rc}, {time.time() - start:.0f} s", flush=True)


#: the fields of a run's summary.json kept in the compact results file
KEPT = ("headline", "trainable", "wall_s")


def collect(args: argparse.Namespace) -> dict[str, list[dict]]:
    """label -> its runs (seed order): the compact results file, then the run folders (a run
    folder wins over the file's copy of the same run)."""
    runs: dict[tuple[str, int], dict] = {}
    if args.results.is_file():
        for row in json.loads(args.results.read_text())["runs"]:
            if row["label"] in METHODS:
                runs[(row["label"], row["seed"])] = row
    for label in METHODS:
        for seed in range(10):
            path = run_dir(args, label, seed) / "summary.json"
            if path.is_file():
                summary = json.loads(path.read_text())
                runs[(label, seed)] = {
                    "label": label, "seed": seed, **{k: summary[k] for k in KEPT},
                    "command": shlex.join(command(args, label, seed)),
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
    terms = [(-1 if t in LOWER_IS_BETTER else 1) * (headline[t] - ref[t]) / ref[t] for t in TASKS]
    return 100 * statistics.fmean(terms)


def pm(values: list[float], fmt: str = ".2f") -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:{fmt}}"
    return f"{mean:{fmt}} ± {statistics.stdev(values):{fmt.lstrip('+')}}"


def report(args: argparse.Namespace) -> None:
    found = collect(args)
    ref_runs = found.get("single-task full FT", [])
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
                "label": label if label != "single-task full FT" else "reference (Δm = 0)",
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
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("runs/dense"))
    parser.add_argument("--table", type=Path, default=Path("docs/results/dense_table.md"))
    parser.add_argument(
        "--plot", type=Path, default=Path("docs/results/dense_delta_m_vs_params.png")
    )
    parser.add_argument(
        "--results", type=Path, default=Path("docs/results/dense/results.json"),
        help="compact per-run results (written by the report, read by --report-only)",
    )  # fmt: skip
    args = parser.parse_args()
    if not args.report_only:
        ref = [r for r in RUNS if r[0] == "single-task full FT"]
        rest = [r for r in RUNS if r[0] != "single-task full FT"]
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda r: run(args, *r), ref + rest))
    report(args)


if __name__ == "__main__":
    main()
