"""SSF training-step time with and without residual links (`residual_links=false`): the same
model and batch, interleaved rounds, medians (a ratio; CPU figures are noisy under load).

    .venv/bin/python benchmarks/ssf_residual_links.py --backbone vit_small_patch16_224 \
        --img-size 96 --batch 4 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import vpeft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    models = {}
    for name, links in (("links", True), ("no links", False)):
        torch.manual_seed(0)
        model = timm.create_model(args.backbone, num_classes=0, img_size=args.img_size)
        models[name] = vpeft.apply(model, "ssf", num_classes=10, residual_links=links).train()

    def step(pm: vpeft.PeftModel) -> float:
        start = time.perf_counter()
        pm.zero_grad(set_to_none=True)
        pm(x).square().mean().backward()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in models}
    for pm in models.values():
        step(pm)  # warm-up
    for _ in range(args.rounds):
        for name, pm in models.items():
            times[name].append(step(pm))
    ref = statistics.median(times["no links"])
    print(
        f"{args.backbone}, batch {args.batch} × {args.img_size}², {torch.get_num_threads()} "
        f"thread(s), median of {args.rounds} interleaved train steps"
    )
    for name, t in times.items():
        print(f"ssf, {name:<9} {statistics.median(t):8.4f} s   {statistics.median(t) / ref:.3f}×")


if __name__ == "__main__":
    main()
