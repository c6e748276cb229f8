"""Linear probe of the bundled backbone, pretrained vs the same architecture at random init, on
every synthetic target task (train800 → test); see `vpeft.bench.probe`. With ``--source N`` it
also probes the pretrained backbone on the source task itself (first N train images → val), with
the current data generator.

    .venv/bin/python benchmarks/transfer_probe.py --threads 2 --source 10000
"""

from __future__ import annotations

import argparse

import torch

from vpeft.bench.probe import features, linear_probe, transfer_probe
from vpeft.data import synthetic
from vpeft.data.synthetic import TARGET_TASKS
from vpeft.data.transforms import data_config_for
from vpeft.zoo import bundled_backbone


def source_probe(train_images: int, backbone: str = "vit-tiny-synth") -> float:
    """Linear-probe val top-1 (%) of the pretrained `backbone` on its own source task."""
    model = bundled_backbone(backbone).create()
    transform = data_config_for(model).transform()
    x, y = synthetic.load_split(synthetic.SOURCE_TASK, "train").as_tensors(transform)
    val = synthetic.load_split(synthetic.SOURCE_TASK, "val").as_tensors(transform)
    classes = synthetic.task_info(synthetic.SOURCE_TASK).num_classes
    train = (features(model, x[:train_images]), y[:train_images])
    return linear_probe(train, (features(model, val[0]), val[1]), classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=list(TARGET_TASKS))
    parser.add_argument("--test-images", type=int, default=0, help="0: the whole test split")
    parser.add_argument("--init-seed", type=int, default=0, help="seed of the random init")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--source", type=int, default=0, help="N>0: also probe the source task")
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
    if args.source:
        top1 = source_probe(args.source)
        print(
            f"source task {synthetic.SOURCE_TASK} (generator {synthetic.GENERATOR_VERSION}): "
            f"linear probe on the first {args.source} train images → val top-1 {top1:.1f}%"
        )


if __name__ == "__main__":
    main()
