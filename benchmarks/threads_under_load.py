"""`vpeft demo` beside one other CPU-bound process, ÷ its time alone (issue 13: ≤ 2.5× on 2 cores).

Conditions, interleaved over rounds (median wall time of a small demo run in a subprocess):
  alone, N threads             — N = os.cpu_count() (what torch picks by itself)
  busy,  N threads             — one spinning Python process beside it, same thread count
  busy,  default threads       — `vpeft.train.threads.default_threads()` (cores left free),
                                 OpenMP passive wait (`passive_wait_env`)

    .venv/bin/python benchmarks/threads_under_load.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from vpeft.train.threads import passive_wait_env

DEMO = "from vpeft.cli.main import app; app()"


def demo_seconds(threads: int | None, env: dict[str, str], out: str) -> float:
    """Wall time of one small demo, in a fresh folder under `out` (the demo keeps its runs in
    ``--out/store`` and would reuse them in the same folder instead of training)."""
    fresh = tempfile.mkdtemp(dir=out)
    cmd = [sys.executable, "-c", DEMO, "demo", "--tasks", "synth-objects", "--methods",
           "linear,lora", "--epochs", "1", "--out", fresh, "--json", "--no-progress"]  # fmt: skip
    if threads is not None:
        cmd += ["--threads", str(threads)]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    machine = os.cpu_count() or 1
    plain = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        plain.pop(key, None)
    times: dict[str, list[float]] = {"alone": [], "busy": [], "busy, default threads": []}
    with tempfile.TemporaryDirectory() as out:
        demo_seconds(machine, plain, out)  # warm caches (synthetic data, imports)
        for _ in range(args.rounds):
            times["alone"].append(demo_seconds(machine, plain, out))
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.5)
                times["busy"].append(demo_seconds(machine, plain, out))
                times["busy, default threads"].append(
                    demo_seconds(None, passive_wait_env(plain), out)
                )
            finally:
                spinner.kill()
                spinner.wait()
    alone = statistics.median(times["alone"])
    print(f"{machine} CPU(s), load average before: {os.getloadavg()}, {args.rounds} rounds")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<24} {med:7.1f} s   {med / alone:5.2f}× alone")


if __name__ == "__main__":
    main()
