"""Our LoRA training step against Hugging Face PEFT's LoRA on the same timm ViT.

Equivalent setup: PEFT can only adapt whole modules, so it cannot put LoRA on the q and v
slices of timm's fused `qkv` layer (our default). Both are therefore compared on the unfused
linear maps of every block — attention output `proj`, MLP `fc1` and `fc2` — with the same rank,
alpha, a new trainable head, and identical frozen weights. The script first checks that the two
models compute the same logits once our LoRA weights are copied into PEFT's, then measures
(interleaving the two so machine load hits both alike): trainable parameters, train-step FLOPs,
activation bytes saved for backward and the median AdamW step time. A second, informational
pair compares the setups each library offers for attention: ours on the q and v slices (the
paper default, 2·r·(D + D) per block) vs PEFT on the whole fused qkv (r·(D + 3D) per block):
the same parameter count, but different functions (PEFT's shares A across q, k, v and also
adapts k).

    .venv/bin/python benchmarks/lora_vs_hf_peft.py --backbone vit_small_patch16_224 \
        --img-size 96 --batch 4 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import peft
import torch
from torch import nn

import vpeft
from vpeft.analysis import output_loss, saved_activation_bytes, train_step_flops
from vpeft.cli.common import build_backbone

ROLE_PATHS = {"proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2", "qkv": "attn.qkv"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per model (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    return parser.parse_args()


def ours(base: nn.Module, targets: tuple[str, ...], args: argparse.Namespace) -> nn.Module:
    pm = vpeft.apply(
        copy.deepcopy(base), "lora", num_classes=args.num_classes, rank=args.rank,
        alpha=float(args.rank), targets=targets,
    )  # fmt: skip
    return pm.to(args.device)


def hf(base: nn.Module, roles: tuple[str, ...], args: argparse.Namespace) -> nn.Module:
    model = copy.deepcopy(base)
    model.reset_classifier(args.num_classes)
    paths = "|".join(ROLE_PATHS[r].replace(".", r"\.") for r in roles)
    config = peft.LoraConfig(
        r=args.rank,
        lora_alpha=args.rank,
        lora_dropout=0.0,
        target_modules=rf"blocks\.\d+\.({paths})",
        modules_to_save=["head"],
    )
    return peft.get_peft_model(model, config).to(args.device)


def copy_ours_into_hf(mine: vpeft.PeftModel, theirs: nn.Module, roles: tuple[str, ...]) -> None:
    """Give PEFT's LoRA matrices and head the values of ours (B made non-zero first)."""
    torch.manual_seed(1)
    inner = theirs.base_model.model
    with torch.no_grad():
        for block, spec in zip(inner.blocks, mine.spec.blocks, strict=True):
            slots = spec.matrices()
            for role in roles:
                branch = slots[role].module.parallel[f"lora_{role}"]
                branch.lora_B.normal_(0, 0.02)
                layer = block.get_submodule(ROLE_PATHS[role])
                layer.lora_A["default"].weight.copy_(branch.lora_A)
                layer.lora_B["default"].weight.copy_(branch.lora_B)
        head = theirs.base_model.model.head.modules_to_save["default"]
        head.load_state_dict(mine.head.state_dict())


def _sync(x: torch.Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def timed_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> float:
    _sync(x)
    start = time.perf_counter()
    output_loss(model(x)).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(x)
    return time.perf_counter() - start


def compare(
    label: str, models: dict[str, nn.Module], x: torch.Tensor, rounds: int
) -> dict[str, dict[str, float]]:
    """Interleaved timing + FLOPs + saved bytes for each named model."""
    figures: dict[str, dict[str, float]] = {}
    optims: dict[str, torch.optim.Optimizer] = {}
    for name, model in models.items():
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        step = train_step_flops(model, x)
        model.zero_grad(set_to_none=True)
        figures[name] = {
            "trainable": sum(p.numel() for p in trainable),
            "step_gflops": step.train_step / 1e9,
            "saved_mib": saved_activation_bytes(model, x) / 2**20,
        }
        optims[name] = torch.optim.AdamW(trainable, lr=1e-4)
        timed_step(model, optims[name], x)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(timed_step(model, optims[name], x))
    for name in models:
        figures[name]["step_s"] = statistics.median(times[name])
    print(f"\n{label}")
    print(f"{'':<26} {'trainable':>10} {'step GFLOPs':>12} {'saved MiB':>10} {'step s':>8}")
    for name, f in figures.items():
        print(
            f"{name:<26} {int(f['trainable']):>10,} {f['step_gflops']:>12.3f} "
            f"{f['saved_mib']:>10.2f} {f['step_s']:>8.4f}"
        )
    return figures


def ratio_line(figs: dict[str, dict[str, float]], a: str, b: str) -> None:
    fa, fb = figs[a], figs[b]
    keys: dict[str, Callable[[dict[str, float]], float]] = {
        "time": lambda f: f["step_s"],
        "saved memory": lambda f: f["saved_mib"],
        "FLOPs": lambda f: f["step_gflops"],
    }
    parts = [f"{k} {get(fa) / get(fb):.3f}×" for k, get in keys.items()]
    print(f"ratio {a} / {b}: " + ", ".join(parts))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_backbone(args.backbone, img_size=args.img_size)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=args.device)
    print(
        f"backbone {args.backbone}, batch {args.batch} × {args.img_size}², rank {args.rank}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, peft {peft.__version__}, "
        f"device {torch.cuda.get_device_name(x.device) if x.is_cuda else 'cpu'}"
    )

    roles = ("proj", "fc1", "fc2")
    mine, theirs = ours(base, roles, args), hf(base, roles, args)
    mine.eval()
    theirs.eval()
    with torch.no_grad():
        at_init = mine(x)
        copy_ours_into_hf(mine, theirs, roles)
        moved = (mine(x) - at_init).abs().max().item()
        gap = (mine(x) - theirs(x)).abs().max().item()
    print(
        f"equivalence check: with the same non-zero LoRA weights (which move the logits by up to "
        f"{moved:.2e}), max |logit difference| between the two = {gap:.2e}"
    )
    if gap > 1e-4 * max(moved, 1.0) or moved == 0.0:
        raise SystemExit("the two LoRA models differ; the comparison would be meaningless")
    figs = compare(
        "equivalent setup: LoRA on proj, fc1, fc2 of every block (+ head)",
        {"vpeft lora": mine, "hf peft lora": theirs},
        x,
        args.rounds,
    )
    ratio_line(figs, "vpeft lora", "hf peft lora")

    figs = compare(
        "informational: attention LoRA as each library offers it (+ head)",
        {
            "vpeft lora on q, v": ours(base, ("q", "v"), args),
            "hf peft lora on fused qkv": hf(base, ("qkv",), args),
        },
        x,
        args.rounds,
    )
    ratio_line(figs, "vpeft lora on q, v", "hf peft lora on fused qkv")


if __name__ == "__main__":
    main()
