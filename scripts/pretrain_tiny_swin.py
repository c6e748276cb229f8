"""Pretrain the bundled tiny Swin (`swin-tiny-synth`) on the procedural dense source task.

Writes `src/vpeft/assets/swin_tiny_synth.safetensors` (backbone weights, timm state-dict names,
no decoder) and `swin_tiny_synth.json` (recipe, source-task mIoU, timing).

    python scripts/pretrain_tiny_swin.py                 # CPU, about 7 minutes on 2 cores
    python scripts/pretrain_tiny_swin.py --device cuda --epochs 60

Recipe: semantic segmentation (4 classes) of the `source` split of `vpeft.data.dense_synthetic`
(2,000 rendered 64×64 scenes, a seed stream disjoint from the target splits) with a SegFormer
All-MLP decoder (E = 64) on the four stage outputs, every parameter trained; AdamW, cosine
schedule with linear warm-up, random horizontal flip (image and labels). Source mIoU is measured
on the target `val` split's semantic labels (same classes, unseen scenes).
"""

from __future__ import annotations

import time

import torch
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

import vpeft
from vpeft.data import dense_synthetic
from vpeft.tasks.dense import SegmentationTask
from vpeft.train.evaluate import evaluate_tasks
from vpeft.zoo import bundled_backbone


def _tensors(split: str, mean: tuple, std: tuple, device: torch.device) -> dict[str, torch.Tensor]:
    arrays = dense_synthetic.load_arrays(split)
    x = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    y = torch.from_numpy(arrays["semseg"].astype("int64"))
    return {"pixel_values": x.to(device), "semseg": y.to(device)}


def main() -> None:
    args = epoch_arguments(__doc__, epochs=8, batch_size=32, warmup_epochs=1)

    entry = bundled_backbone("swin-tiny-synth")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    train = _tensors("source", entry.mean, entry.std, device)
    val = _tensors("val", entry.mean, entry.std, device)
    task = SegmentationTask(
        "semseg", num_classes=len(dense_synthetic.CLASSES), target_field="semseg", embed_dim=64
    )
    pm = vpeft.apply(entry.create(pretrained=False), "full", tasks=[task]).to(device)
    opt = adamw_on_matrices(pm.trainable_parameters().values(), args.lr, args.weight_decay)
    n = len(train["pixel_values"])
    total, warmup = epoch_schedule(n, args.batch_size, args.epochs, args.warmup_epochs)

    gen = torch.Generator(device=device).manual_seed(args.seed)
    start, step = time.time(), 0
    for epoch in range(args.epochs):
        pm.train()
        order = torch.randperm(n, generator=gen, device=device)
        for i in range(0, n, args.batch_size):
            idx = order[i : i + args.batch_size]
            x, y = train["pixel_values"][idx], train["semseg"][idx]
            flip = torch.rand(len(idx), generator=gen, device=device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
            set_lr(opt, cosine_lr(step, total, warmup, args.lr))
            loss, count = task.loss(pm(x), y)
            opt.zero_grad(set_to_none=True)
            (loss / count).backward()
            opt.step()
            step += 1
        print(f"epoch {epoch + 1}: loss {(loss / count).item():.3f}", flush=True)
    seconds = time.time() - start
    scores = evaluate_tasks(pm, torch.utils.data.StackDataset(**val), 100, device)["semseg"]

    save_backbone(args.out, entry, pm.model.state_dict())
    recipe = {
        "backbone": entry.name,
        "timm_name": entry.timm_name,
        "timm_kwargs": entry.kwargs,
        "source_task": "dense-synthetic source split, semantic segmentation (4 classes)",
        "source_images": n,
        "data_generator_version": dense_synthetic.GENERATOR_VERSION,
        "source_val_miou": round(scores.values["miou"], 2),
        "source_val_pixel_acc": round(scores.values["pixel_acc"], 2),
        "decoder": "SegFormer All-MLP, E = 64 (discarded)",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": "AdamW",
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup_epochs": args.warmup_epochs,
        "schedule": "cosine, per step",
        "augmentation": "horizontal flip (image and labels)",
        "mean": entry.mean,
        "std": entry.std,
        "seed": args.seed,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "train_seconds": round(seconds, 1),
        "command": (
            f"python scripts/pretrain_tiny_swin.py --device {args.device} --epochs {args.epochs}"
        ),
    }
    write_recipe(args.out, entry, recipe)


if __name__ == "__main__":
    main()
