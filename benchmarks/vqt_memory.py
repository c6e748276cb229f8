"""Training memory of VQT against VPT-deep, AdaptFormer, LoRA and full fine-tuning (VQT §4.4).

ViT-B/16 at 224², batch 64, AdamW, fp32, random weights. For each method:

- CPU (always): the estimate params + grads + AdamW states + activations saved for backward
  (`vpeft.analysis.training_memory`; activations counted exactly with saved_tensors_hooks).
  Activations are per sample, so they are measured at `--measure-batch` and scaled to `--batch`
  (pass `--measure-batch 64` to measure at full batch; it takes minutes on a laptop CPU).
- CUDA (when available, or `--device cuda`): the measured peak `torch.cuda.max_memory_allocated`
  of one full training step (forward, backward, AdamW step) after a warm-up step.

Printed beside the paper's claims: VQT needs 76% less memory than VPT (VPT ≈ 4.2× VQT in the
text) and, in Fig. 3b, VPT and AdaptFormer use 3.8× and 5.9× VQT's memory.

    .venv/bin/python benchmarks/vqt_memory.py                  # CPU estimate (+ GPU if present)
    .venv/bin/python benchmarks/vqt_memory.py --device cuda --json
    .venv/bin/python benchmarks/vqt_memory.py --low-memory     # + last-k-blocks VPT / AdaptFormer
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F

import vpeft
from vpeft.analysis import saved_activation_bytes, state_bytes

#: (label, method, options) — the configurations of the paper's memory comparison.
METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("VQT (T=1)", "vqt", {"num_queries": 1}),
    ("VPT-deep (50)", "vpt-deep", {"num_tokens": 50}),
    ("AdaptFormer (64)", "adaptformer", {"bottleneck": 64}),
    ("LoRA (r=8)", "lora", {"rank": 8}),
    ("full fine-tuning", "full", {}),
]

#: `--low-memory` (Fig. 3b's regime): VPT-deep and AdaptFormer with modules in the last k blocks
#: only, so that backpropagation stops there; which k matches VQT's memory?
LOW_MEMORY_BLOCKS = (1, 2, 3, 4, 6)
LOW_MEMORY_METHODS: list[tuple[str, str, dict[str, Any]]] = [
    (f"{name}, last {k}", method, {**options, "last_blocks": k})
    for name, method, options in (
        ("VPT-deep (50)", "vpt-deep", {"num_tokens": 50}),
        ("AdaptFormer (64)", "adaptformer", {"bottleneck": 64}),
    )
    for k in LOW_MEMORY_BLOCKS
]

#: memory relative to VQT claimed by the paper (§1 / §4.4 text and Fig. 3b).
PAPER_RATIO = {"vpt-deep": '3.8× (Fig. 3b); 4.2× ("76% less")', "adaptformer": "5.9× (Fig. 3b)"}

MIB = 2**20


@dataclass
class Row:
    label: str
    method: str
    trainable: int
    cpu_estimate: int  # bytes: params + grads + AdamW + activations
    activations: int  # bytes saved for backward at --batch
    cuda_peak: int | None = None  # bytes, measured
    last_blocks: int = 0  # 0: modules in every block


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--measure-batch", type=int, default=4, help="CPU activation batch")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--low-memory",
        action="store_true",
        help="also VPT-deep / AdaptFormer in only the last k blocks (Fig. 3b's regime)",
    )
    return parser.parse_args()


def build(args: argparse.Namespace, method: str, options: dict[str, Any]) -> vpeft.PeftModel:
    torch.manual_seed(0)
    model = timm.create_model(args.backbone, num_classes=0)
    return vpeft.apply(model, method, num_classes=args.num_classes, **options).train()


def cpu_estimate(args: argparse.Namespace, pm: vpeft.PeftModel) -> tuple[int, int]:
    """(params + grads + AdamW + activations at --batch, activations at --batch) in bytes."""
    size = pm.model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = torch.randn(args.measure_batch, *size)
    activations = saved_activation_bytes(pm, x) * args.batch // args.measure_batch
    states = state_bytes(pm)
    return (
        states.param_bytes + states.grad_bytes + states.optimizer_bytes + activations,
        activations,
    )


def cuda_peak(args: argparse.Namespace, pm: vpeft.PeftModel) -> int:
    """Peak allocated bytes of one AdamW training step (after a warm-up step)."""
    device = torch.device("cuda")
    pm = pm.to(device)
    size = pm.model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = torch.randn(args.batch, *size, device=device)
    y = torch.randint(0, args.num_classes, (args.batch,), device=device)
    optimizer = torch.optim.AdamW(pm.trainable_parameters().values(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(pm(x), y).backward()
        optimizer.step()

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    optimizer.state.clear()
    pm.to("cpu")
    torch.cuda.empty_cache()
    return peak


def measure(args: argparse.Namespace) -> list[Row]:
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    rows = []
    for label, method, options in METHODS + (LOW_MEMORY_METHODS if args.low_memory else []):
        if method not in vpeft.available_methods():
            continue
        pm = build(args, method, options)
        estimate, activations = cpu_estimate(args, pm)
        row = Row(label, method, pm.summary().trainable_encoder, estimate, activations)
        row.last_blocks = options.get("last_blocks", 0)
        if use_cuda:
            row.cuda_peak = cuda_peak(args, pm)
        rows.append(row)
    return rows


def ratio(value: int | None, reference: int | None) -> float | None:
    return None if value is None or not reference else value / reference


def report(args: argparse.Namespace, rows: list[Row]) -> dict[str, Any]:
    vqt = next((r for r in rows if r.method == "vqt"), None)
    return {
        "backbone": args.backbone,
        "batch": args.batch,
        "measure_batch": args.measure_batch,
        "device": torch.cuda.get_device_name() if rows and rows[0].cuda_peak else "cpu",
        "rows": [
            {
                "label": r.label,
                "method": r.method,
                "trainable_encoder": r.trainable,
                "cpu_estimate_bytes": r.cpu_estimate,
                "activation_bytes": r.activations,
                "cuda_peak_bytes": r.cuda_peak,
                "cpu_estimate_x_vqt": ratio(r.cpu_estimate, vqt and vqt.cpu_estimate),
                "activations_x_vqt": ratio(r.activations, vqt and vqt.activations),
                "cuda_peak_x_vqt": ratio(r.cuda_peak, vqt and vqt.cuda_peak),
                "last_blocks": r.last_blocks,
                "paper_x_vqt": None if r.last_blocks else PAPER_RATIO.get(r.method),
            }
            for r in rows
        ],
    }


def _fmt(value: float | None, unit: str = "×") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = report(args, measure(args))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.backbone}, batch {args.batch}, AdamW fp32; CPU activations measured at batch "
        f"{args.measure_batch} and scaled; device {result['device']}"
    )
    print(
        f"{'method':<26} {'trainable':>10} {'act MiB':>9} {'est MiB':>9} {'est×VQT':>8} "
        f"{'act×VQT':>8} {'GPU MiB':>9} {'GPU×VQT':>8}  paper (×VQT)"
    )
    for r in result["rows"]:
        gpu = r["cuda_peak_bytes"]
        print(
            f"{r['label']:<26} {r['trainable_encoder']:>10,} "
            f"{r['activation_bytes'] / MIB:>9.0f} {r['cpu_estimate_bytes'] / MIB:>9.0f} "
            f"{_fmt(r['cpu_estimate_x_vqt']):>8} {_fmt(r['activations_x_vqt']):>8} "
            f"{'-' if gpu is None else f'{gpu / MIB:.0f}':>9} {_fmt(r['cuda_peak_x_vqt']):>8}  "
            f"{r['paper_x_vqt'] or ''}"
        )


if __name__ == "__main__":
    main()
