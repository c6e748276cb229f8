"""Cost of SPT's sensitivity pass against a plain forward + backward over the same samples.

The sensitivity pass (`vpeft.methods.spt.compute_sensitivity`) runs one forward + backward per
batch and
squares each gradient into one fp32 accumulator per candidate parameter (a post-accumulate hook
frees the gradient at once). The baseline is a plain training-style pass over the same batches:
every parameter requires grad, mean cross-entropy, backward, gradients dropped. Target (issue):
sensitivity / plain ≤ 1.3×. Also printed: the allocation time for budgets 0.2M–1.0M on the
resulting scores (the exact τ search over every candidate entry, 85M on ViT-B) and, on CUDA, the
peak memory of both passes.

    .venv/bin/python benchmarks/spt_sensitivity_cost.py                        # spec: 512 × 224²
    .venv/bin/python benchmarks/spt_sensitivity_cost.py --samples 16 --batch 4 --img-size 112
    .venv/bin/python benchmarks/spt_sensitivity_cost.py --device cuda --json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F

from vpeft.methods.spt import build_plan, compute_sensitivity


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--samples", type=int, default=512, help="C (the spec's default: 512)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--budgets", default="0.2M,0.4M,0.6M,0.8M,1.0M")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> dict[str, tuple[float, int]]:
    """Median seconds and peak CUDA bytes of each function, after one warm-up each; the runs are
    interleaved (a, b, a, b, …) so that a drifting machine load hits both alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks = dict.fromkeys(fns, 0)
    for _ in range(repeats):
        for key, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - start)
            if device.type == "cuda":
                peaks[key] = max(peaks[key], torch.cuda.max_memory_allocated(device))
    return {k: (sorted(t)[len(t) // 2], peaks[k]) for k, t in times.items()}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.device
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    )
    torch.manual_seed(0)
    model = timm.create_model(args.backbone, num_classes=args.num_classes, img_size=args.img_size)
    model.to(device).eval()
    g = torch.Generator().manual_seed(0)
    sizes = [min(args.batch, args.samples - i) for i in range(0, args.samples, args.batch)]
    shape = (3, args.img_size, args.img_size)
    batches = [
        (
            torch.randn(n, *shape, generator=g).to(device),
            torch.randint(0, args.num_classes, (n,), generator=g).to(device),
        )
        for n in sizes
    ]
    models = {"plain": copy.deepcopy(model).requires_grad_(True)}

    def plain() -> None:
        for x, y in batches:
            F.cross_entropy(models["plain"](x), y).backward()
            models["plain"].zero_grad(set_to_none=True)

    work = copy.deepcopy(model)  # compute_sensitivity prepares it (candidates require grad)
    result = {}

    def sensitivity() -> None:
        result["scores"] = compute_sensitivity(work, batches, copy_model=False)

    timed = _timed({"plain": plain, "sensitivity": sensitivity}, device, args.repeats)
    (plain_s, plain_peak), (sens_s, sens_peak) = timed["plain"], timed["sensitivity"]
    del models["plain"]
    scores = result["scores"]
    alloc = {}
    structure = copy.deepcopy(model).cpu()
    for budget in args.budgets.split(","):
        start = time.perf_counter()
        plan = build_plan(structure, scores, budget, "lora")
        alloc[budget] = {"seconds": round(time.perf_counter() - start, 3), "total": plan.total}
    record = {
        "backbone": args.backbone,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "samples": args.samples,
        "batch": args.batch,
        "img_size": args.img_size,
        "plain_seconds": round(plain_s, 4),
        "sensitivity_seconds": round(sens_s, 4),
        "ratio": round(sens_s / plain_s, 3),
        "target_ratio": 1.3,
        "candidates": scores.meta["candidates"],
        "plain_peak_bytes": plain_peak or None,
        "sensitivity_peak_bytes": sens_peak or None,
        "allocation": alloc,
    }
    if args.json:
        print(json.dumps(record))
        return
    print(f"{args.backbone} on {record['device']}: {args.samples} samples, batch {args.batch}, "
          f"{args.img_size}²")  # fmt: skip
    print(f"  plain forward+backward : {plain_s:8.3f} s")
    print(f"  sensitivity pass       : {sens_s:8.3f} s")
    print(f"  ratio                  : {sens_s / plain_s:8.3f}×   (target ≤ 1.3×)")
    if plain_peak:
        print(f"  peak CUDA memory       : plain {plain_peak / 2**20:.0f} MiB, "
              f"sensitivity {sens_peak / 2**20:.0f} MiB")  # fmt: skip
    print(f"  allocation over {scores.meta['candidates']:,} scores (LoRA r=8):")
    for budget, a in alloc.items():
        print(f"    budget {budget:>5}: total {a['total']:>9,} in {a['seconds']:.2f} s")


if __name__ == "__main__":
    main()
