"""VQT's low-memory regime (Tu et al., CVPR 2023, Fig. 3b) on the bundled backbone.

Fig. 3b compares methods at matched training memory: VPT-deep and AdaptFormer keep their
modules only in the last k blocks (`last_blocks=k`), so back-propagation stops there. Here, on
`vit-tiny-synth` and the demo's three tasks (one per group):

1. training-memory estimate (params + grads + AdamW states + saved activations, batch 32) of
   VQT (T=1) and of VPT-deep / AdaptFormer in the last k = 1…L blocks;
2. for each of the two, the largest k whose estimate does not exceed VQT's (at least 1);
3. test top-1 after the last epoch (demo protocol: AdamW, batch 32, 5 epochs, seed 0) of VQT,
   the memory-matched VPT-deep / AdaptFormer, and the all-block versions and the linear probe
   for reference. Learning rates are the demo's (picked on val200 for the all-block methods, not
   re-tuned for the last-k versions); VQT uses 0.1, the rate `benchmarks/vqt_synthetic.py` chose
   on val200.

    .venv/bin/python benchmarks/low_memory_regime.py --threads 2
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from statistics import fmean

import torch

import vpeft
from vpeft.analysis import saved_activation_bytes, state_bytes
from vpeft.bench.demo import DEFAULT_TASKS, RECIPES, MethodRecipe, load_task_data, run_one
from vpeft.zoo import bundled_backbone

BACKBONE = "vit-tiny-synth"
BATCH = 32
VQT = MethodRecipe("vqt", {"num_queries": 1}, lr=0.1, weight_decay=1e-4, epochs=5)
LOW_MEMORY = ("vpt-deep", "adaptformer")


def memory_bytes(recipe: MethodRecipe, num_classes: int, image: torch.Tensor) -> int:
    """Params + grads + AdamW states + activations saved for backward at batch `BATCH`."""
    torch.manual_seed(0)
    model = bundled_backbone(BACKBONE).create()
    pm = vpeft.apply(model, recipe.method, num_classes=num_classes, **recipe.options).train()
    states = state_bytes(pm)
    activations = saved_activation_bytes(pm, image.expand(BATCH, -1, -1, -1).contiguous())
    return states.param_bytes + states.grad_bytes + states.optimizer_bytes + activations


def with_last_blocks(recipe: MethodRecipe, k: int) -> MethodRecipe:
    return replace(recipe, options={**recipe.options, "last_blocks": k})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=list(DEFAULT_TASKS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = {t: load_task_data(t, bundled_backbone(BACKBONE).create()) for t in args.tasks}
    first = data[args.tasks[0]]
    image, classes = first.train[0][:1], first.num_classes
    depth = len(bundled_backbone(BACKBONE).create().blocks)

    budget = memory_bytes(VQT, classes, image)
    print(f"memory estimate at batch {BATCH} (MiB; × VQT): VQT (T=1) {budget / 2**20:.1f}")
    matched: dict[str, MethodRecipe] = {}
    for method in LOW_MEMORY:
        sizes = {k: memory_bytes(with_last_blocks(RECIPES[method], k), classes, image)
                 for k in range(1, depth + 1)}  # fmt: skip
        cells = ", ".join(
            f"last {k}: {b / 2**20:.1f} ({b / budget:.2f}×)" for k, b in sizes.items()
        )
        print(f"  {method}: {cells}")
        fitting = [k for k, b in sizes.items() if b <= budget] or [1]
        matched[method] = with_last_blocks(RECIPES[method], max(fitting))

    configs = [
        ("VQT (T=1)", VQT),
        *[(f"{m}, last {r.options['last_blocks']} (low-memory)", r) for m, r in matched.items()],
        *[(f"{m}, all {depth} blocks", RECIPES[m]) for m in LOW_MEMORY],
        ("linear probe", RECIPES["linear"]),
    ]
    print(f"\n| configuration | memory × VQT | {' | '.join(args.tasks)} | mean |")
    print("|---|---:|" + "---:|" * (len(args.tasks) + 1))
    for label, recipe in configs:
        top1 = [run_one(BACKBONE, recipe, t, data[t]).test_top1 for t in args.tasks]
        ratio = memory_bytes(recipe, classes, image) / budget
        cells = " | ".join(f"{v:.1f}" for v in top1)
        print(f"| {label} | {ratio:.2f} | {cells} | {fmean(top1):.1f} |", flush=True)
    print(f"\nwall {time.perf_counter() - start:.0f} s, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
