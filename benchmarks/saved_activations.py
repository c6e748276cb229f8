"""Exact saved-activation bytes and counted FLOPs of methods on one backbone, ÷ full fine-tuning.

Deterministic on CPU (`saved_tensors_hooks`, `FlopCounterMode`); no timing. A method may carry
options after a colon: ``vqt:memory=recompute``.

    .venv/bin/python benchmarks/saved_activations.py --backbone vit_base_patch16_224 --batch 2 \
        --methods full,lora,ssf,vqt,vqt:memory=recompute
"""

from __future__ import annotations

import argparse

import timm
import torch

import vpeft
from vpeft.analysis import saved_activation_bytes, train_step_flops


def parse_method(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    options = dict(kv.split("=", 1) for kv in rest.split(";") if kv)
    return name, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--methods", default="full,lora,ssf,vqt,vqt:memory=recompute")
    args = parser.parse_args()
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    rows = {}
    for text in args.methods.split(","):
        name, options = parse_method(text)
        torch.manual_seed(0)
        model = timm.create_model(args.backbone, num_classes=0, img_size=args.img_size)
        pm = vpeft.apply(model, name, num_classes=10, **options).train()
        steps = train_step_flops(pm, x)
        rows[text] = (saved_activation_bytes(pm, x), steps.forward, steps.train_step)
    full = rows.get("full")
    print(f"{args.backbone}, batch {args.batch} × {args.img_size}², train mode")
    print(f"{'method':<24} {'act MiB':>9} {'act×full':>9} {'fwd GF':>8} {'step GF':>8}")
    for text, (saved, fwd, step) in rows.items():
        ratio = f"{saved / full[0]:.3f}" if full else "-"
        print(f"{text:<24} {saved / 2**20:>9.1f} {ratio:>9} {fwd / 1e9:>8.2f} {step / 1e9:>8.2f}")


if __name__ == "__main__":
    main()
