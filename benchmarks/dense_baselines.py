"""Every dense multi-task baseline on the bundled tiny Swin and the procedural dense suite:
per-task test metrics (last epoch), Δm against single-task full fine-tuning, trainable
parameters encoder / all. Writes a markdown table (default docs/results/dense.md).

    python benchmarks/dense_baselines.py --epochs 20 --seeds 0 --out runs/dense

Each run is one `vpeft train` command (printed in the table's source list); the first method,
per-task `full`, is the Δm baseline of the others (`--baseline`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

#: (label, method, extra CLI arguments)
METHODS: list[tuple[str, str, list[str]]] = [
    ("single-task full FT", "full", []),
    ("decoders only", "linear", []),
    ("multi-task full FT", "full", ["--shared"]),
    ("BitFit", "bitfit", []),
    ("relative bias", "relative-bias", []),
    ("VPT-shallow", "vpt-shallow", []),
    ("VPT-deep", "vpt-deep", []),
    ("LoRA", "lora-qkv", []),
    ("Adapter λ=2", "adapter-ln", []),
    ("low-rank adapter", "low-rank-adapter", []),
    ("Shared Adapter λ=2", "shared-adapter", []),
]
TASKS = ("semseg", "parts", "saliency", "normals")


def run(label: str, method: str, extra: list[str], seed: int, args: argparse.Namespace,
        baseline: Path | None) -> tuple[dict, str]:  # fmt: skip
    out = args.out / f"{method}{'-shared' if '--shared' in extra else ''}-s{seed}"
    cmd = [sys.executable, "-m", "vpeft.cli.main", "train", "-b", args.backbone, "-m", method,
           "--tasks", "pascal-mt", "--data", args.data, "--epochs", str(args.epochs),
           "--warmup-epochs", "1", "--batch-size", "16", "--lr", str(args.lr), "--seed",
           str(seed), "--out", str(out), "--no-progress", "--json", *extra]  # fmt: skip
    if baseline is not None:
        cmd += ["--baseline", str(baseline)]
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(summary_path.read_text()), shlex.join(cmd[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="swin-tiny-synth")
    parser.add_argument("--data", default="dense-synthetic:default")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("runs/dense"))
    parser.add_argument("--table", type=Path, default=Path("docs/results/dense.md"))
    args = parser.parse_args()
    rows, commands = [], []
    for seed in args.seeds:
        baseline = None
        for label, method, extra in METHODS:
            summary, command = run(label, method, extra, seed, args, baseline)
            if baseline is None:
                baseline = args.out / f"{method}-s{seed}" / "summary.json"
            rows.append((label, seed, summary))
            commands.append(command)
    lines = ["| method | " + " | ".join(TASKS) + " | Δm % | encoder / all |", "|---" * 7 + "|"]
    for label, _, _ in METHODS:
        runs = [s for lab, _, s in rows if lab == label]
        mean = {t: statistics.fmean(s["headline"][t] for s in runs) for t in TASKS}
        dm = [s.get("delta_m", {}).get("value", 0.0) for s in runs]
        t = runs[0]["trainable"]
        lines.append(
            f"| {label} | " + " | ".join(f"{mean[k]:.2f}" for k in TASKS)
            + f" | {statistics.fmean(dm):+.2f} | {t['trainable_encoder']:,} / {t['trainable']:,} |"
        )  # fmt: skip
    text = "\n".join(lines) + "\n\nCommands:\n\n" + "\n".join(f"    {c}" for c in commands) + "\n"
    print(text)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(
        "# Dense baselines on swin-tiny-synth and the procedural suite\n\n"
        f"Produced by `python benchmarks/dense_baselines.py --epochs {args.epochs} --seeds "
        f"{' '.join(map(str, args.seeds))}`. Test split, last epoch; seg/parts/saliency mIoU ↑, "
        "normals mean angular error ° ↓; Δm against single-task full FT.\n\n" + text
    )


if __name__ == "__main__":
    main()
