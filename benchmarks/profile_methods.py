"""Profile every registered method on one backbone, with ratios against full fine-tuning.

For each method (default options): trainable parameters, forward and train-step GFLOPs (2 per
multiply-accumulate, attention included), activation bytes saved for backward, the training
memory estimate (params + grads + AdamW + activations) and the median AdamW step time.
Full fine-tuning is measured first in the same run and every ratio is against it.

    .venv/bin/python benchmarks/profile_methods.py --backbone vit_small_patch16_224 \
        --img-size 96 --batch 4 --threads 1
"""

from __future__ import annotations

import argparse
import platform

import torch

from vpeft import available_methods
from vpeft.analysis import ProfileReport, profile_model
from vpeft.cli.common import build_model
from vpeft.errors import VpeftError

BASELINE = "full"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vit_small_patch16_224", help="timm model name")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--methods", nargs="*", default=None, help="default: all registered")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    return parser.parse_args()


def profile(args: argparse.Namespace, method: str) -> ProfileReport:
    pm = build_model(args.backbone, method, None, args.num_classes, None, args.img_size)
    pm = pm.to(args.device)
    return profile_model(
        pm, batch=args.batch, img_size=args.img_size, steps=args.steps, warmup=args.warmup
    )


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    methods = args.methods or available_methods()
    methods = [BASELINE] + [m for m in methods if m != BASELINE]
    print(
        f"backbone {args.backbone}, batch {args.batch} × {args.img_size}², "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, {platform.machine()}, "
        f"device {_device_name(args.device)}"
    )
    header = (
        f"{'method':<16} {'trainable':>11} {'fwd GF':>8} {'step GF':>8} {'step/fwd':>8} "
        f"{'act MiB':>8} {'mem MiB':>8} {'step s':>8} | {'GF×full':>7} {'act×full':>8} "
        f"{'mem×full':>8} {'time×full':>9}"
    )
    print(header)
    print("-" * len(header))
    base: ProfileReport | None = None
    for method in methods:
        try:
            r = profile(args, method)
        except VpeftError as err:
            print(f"{method:<16} skipped: {err}")
            continue
        except Exception as err:  # a broken method must not hide the others' figures
            print(f"{method:<16} error: {type(err).__name__}: {err}")
            continue
        if base is None:
            base = r
        mib = 2**20
        print(
            f"{method:<16} {r.trainable:>11,} {r.forward_flops / 1e9:>8.2f} "
            f"{r.train_step_flops / 1e9:>8.2f} {r.train_step_flops / r.forward_flops:>8.2f} "
            f"{r.saved_activation_bytes / mib:>8.1f} {r.training_memory_bytes / mib:>8.1f} "
            f"{r.step_seconds:>8.3f} | "
            f"{r.train_step_flops / base.train_step_flops:>7.2f} "
            f"{r.saved_activation_bytes / base.saved_activation_bytes:>8.2f} "
            f"{r.training_memory_bytes / base.training_memory_bytes:>8.2f} "
            f"{r.step_seconds / base.step_seconds:>9.2f}"
        )


if __name__ == "__main__":
    main()
