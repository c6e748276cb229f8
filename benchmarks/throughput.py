"""Training throughput of every method on a named backbone: img/s, counted FLOPs per image, MFU,
peak memory, eager and `torch.compile`d, HF PEFT LoRA in the same run, and `vpeft.train.train`'s
end-to-end rate ÷ the bare step rate.

- FLOPs: `vpeft.analysis.train_step_flops` (forward + backward, 2 per MAC) ÷ batch.
- MFU = counted FLOPs per second ÷ peak. Peak: `--peak-tflops`, else the datasheet dense bf16
  figure for the GPU name (H100 SXM / H200 989, A100 312 TFLOP/s); none on CPU unless given.
- memory: CUDA `max_memory_allocated` over the timed steps; on CPU the saved-activation bytes.
- time: the bare step (forward, loss, backward, AdamW step), median of `--rounds`, methods
  interleaved round by round so machine load hits all alike.
- `--compile`: the same step through `vpeft.train.compile.compile_model` (skipped with the reason
  where TorchInductor cannot compile).
- `--train-rate`: `vpeft.train.train` for one epoch of `--train-steps` batches (tensors in host
  memory, no evaluation) vs the bare step rate, for LoRA.

    .venv/bin/python benchmarks/throughput.py --backbone vit_small_patch16_224 --img-size 96 \
        --batch 8 --methods full,linear,lora,ssf,vqt --threads 2 --train-rate
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

import vpeft
from vpeft.analysis import output_loss, saved_activation_bytes, train_step_flops
from vpeft.cli.common import build_backbone
from vpeft.train.compile import CompileUnavailableError, compile_model

#: Dense bf16 peak, TFLOP/s, by a substring of `torch.cuda.get_device_name()` (datasheets).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--methods", default="full,linear,lora,ssf,vqt")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["off", "bf16"], default="off")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="0: datasheet by GPU")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--no-hf", action="store_true", help="skip HF PEFT LoRA")
    parser.add_argument("--train-rate", action="store_true", help="vpeft.train vs bare step")
    parser.add_argument("--train-steps", type=int, default=8)
    return parser.parse_args()


def peak_flops(args: argparse.Namespace, device: torch.device) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    return None


def hf_lora(base: nn.Module, rank: int, num_classes: int) -> nn.Module:
    import peft

    model = copy.deepcopy(base)
    model.reset_classifier(num_classes)
    config = peft.LoraConfig(
        r=rank, lora_alpha=rank, target_modules=r"blocks\.\d+\.attn\.qkv", modules_to_save=["head"]
    )
    return peft.get_peft_model(model, config)


class Stepper:
    """One bare training step of `model`: forward, loss, backward, AdamW step."""

    def __init__(self, model: nn.Module, x: torch.Tensor, amp: bool) -> None:
        self.model, self.x, self.amp = model, x, amp
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4)

    def __call__(self) -> float:
        sync(self.x)
        start = time.perf_counter()
        with torch.autocast(self.x.device.type, torch.bfloat16, enabled=self.amp):
            loss = output_loss(self.model(self.x))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync(self.x)
        return time.perf_counter() - start


def sync(x: torch.Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def build(args: argparse.Namespace, base: nn.Module) -> dict[str, nn.Module]:
    models: dict[str, nn.Module] = {}
    for name in args.methods.split(","):
        models[name] = vpeft.apply(copy.deepcopy(base), name, num_classes=10)
    if not args.no_hf:
        models["hf peft lora (qkv)"] = hf_lora(base, 8, 10)
    return {k: m.to(args.device).train() for k, m in models.items()}


def train_rate(pm: nn.Module, x: torch.Tensor, steps: int, step_s: float) -> float:
    """Images/s of `vpeft.train.train` over one epoch ÷ images/s of the bare step."""
    from vpeft.train import TrainConfig, train

    images = x.detach().cpu().repeat(steps, 1, 1, 1)
    labels = torch.zeros(images.shape[0], dtype=torch.long)
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            epochs=1, batch_size=x.shape[0], warmup_epochs=0.0, device=str(x.device),
            out_dir=out, save_adapter=False, eval_every=1, amp="off",
        )  # fmt: skip
        start = time.perf_counter()
        train(pm, (images, labels), config=config)
        seconds = time.perf_counter() - start
    return (steps * step_s) / seconds


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = build_backbone(args.backbone, img_size=args.img_size)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    models = build(args, base)
    amp = args.amp == "bf16"
    steppers: dict[str, Callable[[], float]] = {}
    figures: dict[str, dict[str, float | str]] = {}
    for name, model in models.items():
        flops = train_step_flops(model, x).train_step
        model.zero_grad(set_to_none=True)
        figures[name] = {"gflop_per_img": flops / args.batch / 1e9}
        if device.type != "cuda":
            figures[name]["mem_mib"] = saved_activation_bytes(model, x) / 2**20
        steppers[name] = Stepper(model, x, amp)
        if args.compile:
            try:
                compiled = compile_model(model, probe=x)
                steppers[f"{name} +compile"] = Stepper(compiled, x, amp)
                figures[f"{name} +compile"] = dict(figures[name])
            except CompileUnavailableError as err:
                print(f"{name}: compile skipped: {err}")
    for stepper in steppers.values():
        stepper()  # warm-up (and compilation)
    times: dict[str, list[float]] = {k: [] for k in steppers}
    for _ in range(args.rounds):
        for name, stepper in steppers.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[name].append(stepper())
            if device.type == "cuda":
                peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
                figures[name]["mem_mib"] = max(peak_mib, figures[name].get("mem_mib", 0.0))
    peak = peak_flops(args, device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{args.backbone}, batch {args.batch} × {args.img_size}², {where}, amp {args.amp}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, peak "
        f"{peak / 1e12 if peak else 'n/a'} TFLOP/s, median of {args.rounds} rounds"
    )
    print(f"{'method':<26} {'img/s':>9} {'GFLOP/img':>10} {'MFU %':>7} {'mem MiB':>9}")
    for name, t in times.items():
        step = statistics.median(t)
        f = figures[name]
        ips = args.batch / step
        mfu = f"{100 * f['gflop_per_img'] * 1e9 * ips / peak:.1f}" if peak else "-"
        mem = f.get("mem_mib", float("nan"))
        print(f"{name:<26} {ips:>9.2f} {f['gflop_per_img']:>10.3f} {mfu:>7} {mem:>9.1f}")
    if args.train_rate and "lora" in models:
        step = statistics.median(times["lora"])
        ratio = train_rate(models["lora"], x, args.train_steps, step)
        print(f"vpeft.train.train (lora, {args.train_steps} steps) ÷ bare step rate: {ratio:.2f}")


if __name__ == "__main__":
    main()
