"""A tiny, fully seeded training run, importable by tests and runnable as a subprocess:

    python -m tests.train.tiny_run OUT [--epochs E] [--resume] [--dropout P] [--dataset] ...

Used by the resume-after-SIGKILL test (with `--dataset`: items drawn through a map-style dataset
whose augmentation uses numpy's and Python's global RNGs, and LoRA dropout using torch's, so
every RNG the checkpoint restores matters) and by the torchrun test.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset

import vpeft
from tests.helpers import IMG, tiny_vit
from vpeft.train import TrainConfig, TrainResult, train

NUM_CLASSES = 3


def tensors(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is the channel with the largest mean brightness (learnable)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    images = torch.randn(n, 3, IMG, IMG, generator=g) * 0.5
    images += torch.randn(n, 3, 1, 1, generator=g) * 0.3  # per-image colour cast: label noise
    images[torch.arange(n), labels] += 0.5
    return images, labels


class NoisyDataset(Dataset):
    """Items with augmentation drawn from numpy's and Python's global RNGs."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        noise = torch.from_numpy(np.random.normal(0.0, 0.1, size=(3, IMG, IMG)).astype("float32"))
        image = self.images[i] + noise
        if random.random() < 0.5:
            image = image.flip(-1)
        return image, int(self.labels[i])


def splits(n_train: int = 96) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"train": tensors(n_train, 1), "val": tensors(32, 2), "test": tensors(48, 3)}


def model(dropout: float = 0.0) -> vpeft.PeftModel:
    return vpeft.apply(tiny_vit(seed=0), "lora", num_classes=NUM_CLASSES, dropout=dropout)


def base_config(**kw: object) -> TrainConfig:
    cfg = TrainConfig(
        epochs=3, batch_size=16, lr=5e-3, warmup_epochs=1, min_lr=1e-5, progress=False,
        device="cpu",
    )  # fmt: skip
    return replace(cfg, **kw)


def run(
    config: TrainConfig,
    n_train: int = 96,
    dropout: float = 0.0,
    dataset: bool = False,
    resume: bool = False,
) -> tuple[vpeft.PeftModel, TrainResult]:
    data = splits(n_train)
    pm = model(dropout)
    train_data = NoisyDataset(*data["train"]) if dataset else data["train"]
    result = train(pm, train_data, data["val"], data["test"], config, resume=resume)
    return pm, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-train", type=int, default=96)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--dataset", action="store_true")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = base_config(
        epochs=args.epochs, batch_size=args.batch_size, grad_accum_steps=args.accum,
        out_dir=args.out, device="cpu",
    )  # fmt: skip
    run(config, args.n_train, args.dropout, args.dataset, args.resume)


if __name__ == "__main__":
    main()
