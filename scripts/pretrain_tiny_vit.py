"""Pretrain the bundled tiny ViT (`vit-tiny-synth`) on the procedural source task.

Writes `src/vpeft/assets/vit_tiny_synth.safetensors` (backbone weights without the source head,
timm state-dict names) and `vit_tiny_synth.json` (recipe, source-task accuracy, timing).

    python scripts/pretrain_tiny_vit.py                 # CPU: slow (hours on 2 cores)
    python scripts/pretrain_tiny_vit.py --device cuda   # how the shipped file was produced

Recipe: supervised classification of `synth-source` (64 classes, 30k train images), AdamW,
cosine schedule with linear warm-up, label smoothing 0.1, random crop (pad 4) + flip.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from _pretrain_common import (
    adamw_on_matrices,
    cosine_lr,
    device_name,
    epoch_arguments,
    epoch_schedule,
    save_backbone,
    set_lr,
    write_recipe,
)

from vpeft.data import synthetic
from vpeft.zoo import bundled_backbone


def _normalise(images: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dy = torch.randint(0, 9, (n,), generator=gen, device=gen.device)
    dx = torch.randint(0, 9, (n,), generator=gen, device=gen.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(3, device=x.device).view(1, 3, 1, 1)
    out = padded[batch, chan, rows, cols]
    flip = torch.rand(n, generator=gen, device=gen.device) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), out.flip(-1), out)


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    model.eval()
    correct = sum(
        (model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum().item()
        for i in range(0, len(x), batch)
    )
    return correct / len(x)


def main() -> None:
    args = epoch_arguments(__doc__, epochs=60, batch_size=256, warmup_epochs=3)

    entry = bundled_backbone("vit-tiny-synth")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    train = synthetic.load_split(synthetic.SOURCE_TASK, "train", seed=args.seed)
    val = synthetic.load_split(synthetic.SOURCE_TASK, "val", seed=args.seed)
    x_train = _normalise(torch.from_numpy(train.images).to(device), entry.mean, entry.std)
    y_train = torch.from_numpy(train.labels).to(device)
    x_val = _normalise(torch.from_numpy(val.images).to(device), entry.mean, entry.std)
    y_val = torch.from_numpy(val.labels).to(device)

    model = entry.create(pretrained=False, num_classes=train.num_classes).to(device)
    opt = adamw_on_matrices(model.parameters(), args.lr, args.weight_decay)
    total, warmup = epoch_schedule(len(x_train), args.batch_size, args.epochs, args.warmup_epochs)

    gen = torch.Generator(device=device).manual_seed(args.seed)
    start, step = time.time(), 0
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen, device=device)
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            set_lr(opt, cosine_lr(step, total, warmup, args.lr))
            loss = F.cross_entropy(
                model(_augment(x_train[idx], gen)), y_train[idx], label_smoothing=0.1
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            acc = _accuracy(model, x_val, y_val, 1024)
            print(f"epoch {epoch + 1}: loss {loss.item():.3f} val top-1 {acc:.4f}", flush=True)
    seconds = time.time() - start
    val_acc = _accuracy(model, x_val, y_val, 1024)
    train_acc = _accuracy(model, x_train[:5000], y_train[:5000], 1024)

    model.reset_classifier(0)
    save_backbone(args.out, entry, model.state_dict())
    recipe = {
        "backbone": entry.name,
        "timm_name": entry.timm_name,
        "timm_kwargs": entry.kwargs,
        "source_task": synthetic.SOURCE_TASK,
        "source_classes": train.num_classes,
        "source_train_images": len(x_train),
        "data_generator_version": synthetic.GENERATOR_VERSION,
        "source_val_top1": round(val_acc, 4),
        "source_train_top1_first5000": round(train_acc, 4),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": "AdamW",
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup_epochs": args.warmup_epochs,
        "schedule": "cosine, per step",
        "label_smoothing": 0.1,
        "augmentation": "reflect-pad 4 random crop + horizontal flip",
        "mean": entry.mean,
        "std": entry.std,
        "seed": args.seed,
        "device": device_name(device),
        "torch": torch.__version__,
        "train_seconds": round(seconds, 1),
        "command": (
            f"python scripts/pretrain_tiny_vit.py --device {args.device} --epochs {args.epochs}"
        ),
    }
    write_recipe(args.out, entry, recipe)


if __name__ == "__main__":
    main()
