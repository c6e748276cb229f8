"""Linear probe of the bundled backbone, pretrained vs the same architecture at random init, on
every synthetic target task (train800 → test); see `vpeft.bench.probe`.

    .venv/bin/python benchmarks/transfer_probe.py --threads 1
"""

from __future__ import annotations

import argparse

import torch

from vpeft.bench.probe import transfer_probe
from vpeft.data.synthetic import TARGET_TASKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=list(TARGET_TASKS))
    parser.add_argument("--test-images", type=int, default=0, help="0: the whole test split")
    parser.add_argument("--init-seed", type=int, default=0, help="seed of the random init")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = transfer_probe(
        args.tasks, test_images=args.test_images or None, init_seed=args.init_seed
    )
    print("| task | group | chance | pretrained | random init | margin |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.task} | {r.group} | {r.chance:.1f} | {r.pretrained:.1f} | "
            f"{r.random_init:.1f} | {r.margin:+.1f} |"
        )
    mean = sum(r.margin for r in rows) / len(rows)
    print(f"\nmean margin over {len(rows)} tasks: {mean:+.1f} points")


if __name__ == "__main__":
    main()
