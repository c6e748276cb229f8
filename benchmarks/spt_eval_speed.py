"""SPT eval speed: sparse deltas and LoRA pairs folded into the weights (default), sparse deltas
only folded (LoRA branches run), nothing folded, against the plain backbone and the merged model
(the same computation as the plain one: the noise floor) — no-grad forwards, interleaved, median
of rounds (ratios only).

    .venv/bin/python benchmarks/spt_eval_speed.py --backbone vit_small_patch16_224 \
        --img-size 96 --batch 8 --budget 0.4M --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch

import vpeft
from vpeft.cli.common import build_backbone
from vpeft.methods.spt import build_plan, random_sensitivity
from vpeft.methods.spt.sparse import SparseDelta, SparseLinearDelta
from vpeft.methods.spt.structured import SptLora


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--budget", default="0.4M")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser.parse_args()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_backbone(args.backbone, img_size=args.img_size)
    sens = random_sensitivity(base, 10, batches=2, batch_size=2, img_size=args.img_size)
    plan = build_plan(base, sens, args.budget, "lora")
    pm = vpeft.apply(copy.deepcopy(base), "spt-lora", num_classes=10, plan=plan).eval()
    plain = copy.deepcopy(base)
    plain.reset_classifier(10)
    plain.eval()
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)

    def spt(folding: tuple[type, ...]) -> Callable[[], object]:
        """A copy of the SPT model whose pieces fold only when their type is in `folding`."""
        model = copy.deepcopy(pm)
        for module in model.modules():
            if isinstance(module, (SparseDelta, SparseLinearDelta, SptLora)) and not isinstance(
                module, folding
            ):
                module.fold_for_eval = lambda base: False  # instance attribute: never folds
        return lambda: model(x)

    sparse = (SparseDelta, SparseLinearDelta)
    merged = copy.deepcopy(pm).merge().eval()  # the plain model with W + Δ: a noise reference
    runs = {"plain backbone": lambda: plain(x), "spt-lora merged": lambda: merged(x),
            "spt-lora folded": spt((*sparse, SptLora)), "spt-lora sparse only": spt(sparse),
            "spt-lora unfolded": spt(())}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up (the folding runs fold here)
        for _ in range(args.rounds):
            for name, fn in runs.items():
                times[name].append(timed(fn))
    ref = statistics.median(times["plain backbone"])
    print(
        f"{args.backbone} {args.img_size}², batch {args.batch}, plan {plan.total:,} params "
        f"({plan.breakdown()}), {torch.get_num_threads()} thread(s), no-grad eval forward"
    )
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:<20} {med:8.4f} s   {med / ref:5.2f}× plain")


if __name__ == "__main__":
    main()
