"""A dense dataset's items with ``pixel_values`` normalised (the ``--data dense-synthetic:`` and
``pascal-mt:`` inputs of the command line)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class NormalisedDense(Dataset):
    """Items of a dense dataset with ``pixel_values`` normalised by the backbone's mean/std
    (after an optional joint augmentation, a fresh draw per access)."""

    def __init__(self, base: Any, mean: Any, std: Any, augment: Any = None) -> None:
        self.base = base
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = dict(self.base[index])
        if self.augment is not None:
            item = self.augment(item)
        item["pixel_values"] = (item["pixel_values"] - self.mean) / self.std
        return item
