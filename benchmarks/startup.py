"""Start-up time of the `vpeft` command line: wall time of whole processes, median of N runs.

Each source tree given with ``--src LABEL=PATH`` (a folder holding the ``vpeft`` package, e.g. a
checkout's ``src``) is timed on the same commands, interleaved run by run (tree A, tree B, A, B…)
so that a change in the machine's load hits every tree alike; ``import torch`` and
``import torch, timm`` are timed alongside as references.

    python benchmarks/startup.py --src before=/tmp/before/src --src after=src --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS: dict[str, list[str]] = {
    "vpeft --help": ["--help"],
    "vpeft train --help": ["train", "--help"],
    "vpeft methods": ["methods"],
    "vpeft params -b vit_tiny_patch16_224 -m lora --json": [
        "params", "-b", "vit_tiny_patch16_224", "-m", "lora", "--json",
    ],
}  # fmt: skip
REFERENCES: dict[str, str] = {
    "python -c 'import torch'": "import torch",
    "python -c 'import torch, timm'": "import torch, timm",
}
RUNNER = "import sys; from vpeft.cli.main import app; sys.argv[0] = 'vpeft'; app()"


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed:\n{done.stderr.decode()[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", required=True, help="LABEL=PATH, repeatable")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    trees = dict(item.split("=", 1) for item in args.src)
    cases: list[tuple[str, str, list[str], dict[str, str]]] = []
    for label, path in trees.items():
        env = {**os.environ, "PYTHONPATH": os.path.abspath(path), "COLUMNS": "100"}
        for name, cli_args in COMMANDS.items():
            cases.append((name, label, [sys.executable, "-c", RUNNER, *cli_args], env))
    for name, code in REFERENCES.items():
        cases.append((name, "-", [sys.executable, "-c", code], dict(os.environ)))
    times: dict[tuple[str, str], list[float]] = {(n, lab): [] for n, lab, _, _ in cases}
    for _ in range(args.runs):  # interleaved: every case once per round
        for name, label, argv, env in cases:
            times[(name, label)].append(_time(argv, env))
    labels = list(trees)
    print(f"| command | {' | '.join(labels)} |")
    print(f"|---|{'---:|' * len(labels)}")
    for name in COMMANDS:
        cells = [f"{statistics.median(times[(name, lab)]):.2f} s" for lab in labels]
        print(f"| `{name}` | {' | '.join(cells)} |")
    for name in REFERENCES:
        print(f"| `{name}` (reference) | {statistics.median(times[(name, '-')]):.2f} s |")
    print(f"\nmedian of {args.runs} runs each, interleaved; cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
