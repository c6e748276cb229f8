"""Throughput of one mixed-adapter batch (K adapters, `pm(x, adapter_names=...)`) against K
single-adapter batches of the same images (`pm(x_k, task=name_k)`), on one shared backbone.

Both sides compute the same outputs (checked before timing). Timings are interleaved, median of
`--repeats` after a warm-up, under torch.inference_mode; CPU always, CUDA too when available.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mixed_batch.py --backbone vit_tiny_patch16_224 \
        --img-size 96 --adapters 4 --per-adapter 8 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch

import vpeft

MIXES = {
    "lora": ["lora"],
    "ssf": ["ssf"],
    "adapter": ["adapter"],
    "lora+ssf+bitfit+adapter": ["lora", "ssf", "bitfit", "adapter"],
}


def backbone(name: str, img_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, img_size=img_size, num_classes=0)


def build(name: str, img_size: int, methods: list[str], k: int, folder: Path) -> vpeft.PeftModel:
    files = {}
    for i in range(k):
        method = methods[i % len(methods)]
        pm = vpeft.apply(backbone(name, img_size), method, num_classes=10)
        with torch.no_grad():
            for p in pm.trainable_parameters().values():
                p.add_(torch.randn_like(p) * 0.02)
        files[f"a{i}"] = folder / f"a{i}.safetensors"
        pm.save(files[f"a{i}"])
    return vpeft.load_adapters(backbone(name, img_size), files).eval()


def median_seconds(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def measure(pm, x, order, chunks, names, repeats, sync) -> tuple[float, float]:
    """Median seconds of the mixed batch and of the K single-adapter batches."""
    mixed_out = torch.stack(pm(x, adapter_names=order))
    single_out = torch.cat([pm(c, task=n) for c, n in zip(chunks, names, strict=True)])
    torch.testing.assert_close(mixed_out, single_out, atol=1e-4, rtol=1e-4)

    def mixed() -> None:
        pm(x, adapter_names=order)

    def separate() -> None:
        for c, n in zip(chunks, names, strict=True):
            pm(c, task=n)

    for _ in range(2):
        mixed(), separate()
    t_mixed, t_sep = [], []
    for _ in range(repeats):  # interleaved: machine load hits both alike
        t_mixed.append(median_seconds(mixed, 1, sync))
        t_sep.append(median_seconds(separate, 1, sync))
    return statistics.median(t_mixed), statistics.median(t_sep)


def run(args: argparse.Namespace, device: str) -> None:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for label, methods in MIXES.items():
        with tempfile.TemporaryDirectory() as tmp:
            pm = build(args.backbone, args.img_size, methods, args.adapters, Path(tmp)).to(device)
        names = [f"a{i}" for i in range(args.adapters)]
        per = args.per_adapter
        x = torch.randn(per * len(names), 3, args.img_size, args.img_size, device=device)
        order = [n for n in names for _ in range(per)]
        chunks = [x[i * per : (i + 1) * per] for i in range(len(names))]
        m, s = measure(pm, x, order, chunks, names, args.repeats, sync)
        n = x.shape[0]
        print(
            f"{device:5s} {label:26s} K={len(names)} batch={n}: mixed {n / m:8.1f} img/s, "
            f"K single-adapter batches {n / s:8.1f} img/s, ratio {s / m:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_tiny_patch16_224")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--per-adapter", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run(args, "cpu")
    if torch.cuda.is_available():
        run(args, "cuda")


if __name__ == "__main__":
    main()
