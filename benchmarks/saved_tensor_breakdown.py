"""Which tensors one training forward saves for the backward, grouped by the source line that
saved them (one count per storage, parameters and buffers excluded, as `SavedTensorCounter`).

Deterministic on CPU; a batch (`--batch`, default 1) of the backbone's example inputs (ViLT:
40 text tokens + the image class token + the sampled patches). Options of a method go after a
colon.

    python benchmarks/saved_tensor_breakdown.py --backbone hf:ViltModel:max_image_length=200 \
        --img-size 480 --methods apt,apt:learn_scale=false,deep-prompt-kv
"""

from __future__ import annotations

import argparse
import traceback
from collections import defaultdict

import torch

import vpeft
from vpeft.analysis.flops import output_loss
from vpeft.analysis.memory import _storage_bytes as storage_bytes  # the counter's own rule
from vpeft.analysis.memory import _storage_key as storage_key
from vpeft.analysis.memory import model_tensors


def _origin() -> str:
    """file:line of the innermost vpeft / transformers / timm frame that saved the tensor."""
    frames = [
        f
        for f in traceback.extract_stack()[:-2]
        if any(k in f.filename for k in ("/vpeft/", "/transformers/", "/timm/"))
    ]
    if not frames:
        return "?"
    f = frames[-1]
    return f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {(f.line or '').strip()[:70]}"


def breakdown(pm: torch.nn.Module, inputs: object) -> dict[tuple[str, tuple, str], list[int]]:
    """(origin, shape, dtype) -> [bytes, storages] of the tensors saved by one forward."""
    excluded = {k for t in model_tensors(pm) if (k := storage_key(t)) is not None}
    seen: set = set()
    alive: list[torch.Tensor] = []
    rows: dict[tuple[str, tuple, str], list[int]] = defaultdict(lambda: [0, 0])

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = storage_key(t) or ("tensor", id(t))
        if key not in excluded and key not in seen:
            seen.add(key)
            alive.append(t)
            row = rows[(_origin(), tuple(t.shape), str(t.dtype).removeprefix("torch."))]
            row[0] += storage_bytes(t)
            row[1] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        output_loss(pm(inputs))
    return dict(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="hf:ViltModel:max_image_length=200")
    parser.add_argument("--img-size", type=int, default=480)
    parser.add_argument("--methods", default="apt,apt:learn_scale=false,deep-prompt-kv")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    for text in args.methods.split(","):
        name, _, rest = text.partition(":")
        options = dict(kv.split("=", 1) for kv in rest.split(";") if kv)
        torch.manual_seed(0)
        backbone = vpeft.create_backbone(args.backbone, img_size=args.img_size)
        pm = vpeft.apply(backbone, name, num_classes=2, **options).train()
        inputs = pm.spec.example_inputs(args.batch, args.img_size, torch.Generator().manual_seed(0))
        torch.manual_seed(0)  # ViLT samples its patches
        rows = breakdown(pm, inputs)
        total = sum(b for b, _ in rows.values())
        print(f"\n{text}: {total / 1e6:.3f} MB saved for backward")
        for (origin, shape, dtype), (size, count) in sorted(rows.items(), key=lambda r: -r[1][0]):
            print(f"{size / 1e6:9.3f} MB  x{count:<3d} {shape!s:<20} {dtype:<8} {origin}")


if __name__ == "__main__":
    main()
