"""Fetching batches: whole-split tensors (fast path) or any map-style `Dataset`.

Training and evaluation accept either ``(images, labels)`` tensors — e.g. from
``ArrayImageDataset.as_tensors(transform)``, which avoids per-item overhead on small images — or a
``torch.utils.data.Dataset`` yielding ``(image, label)`` items, read through a `DataLoader` with
worker processes when ``num_workers > 0``. Index order always comes from `sampling`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from ..errors import DatasetError

Batch = tuple[torch.Tensor, torch.Tensor]
Data = Dataset | tuple[torch.Tensor, torch.Tensor]


class TensorSource:
    """Images and labels already stacked as tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise DatasetError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def max_label(self) -> int:
        return int(self.labels.max()) if len(self.labels) else -1

    def batches(self, index_lists: Sequence[torch.Tensor], **_: Any) -> Iterator[Batch | None]:
        for idx in index_lists:
            yield (self.images[idx], self.labels[idx]) if len(idx) else None


def _collate(items: list[Any]) -> Any:
    return default_collate(items) if items else None


class DatasetSource:
    """A map-style dataset of ``(image, label)`` items."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def max_label(self) -> int:
        classes = getattr(self.dataset, "num_classes", None)
        return int(classes) - 1 if classes is not None else -1

    def batches(
        self, index_lists: Sequence[torch.Tensor], num_workers: int = 0, seed: int = 0
    ) -> Iterator[Batch | None]:
        lists = [idx.tolist() for idx in index_lists]
        if num_workers == 0:
            for idx in lists:
                yield _collate([self.dataset[i] for i in idx])
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=lists,
            num_workers=num_workers,
            collate_fn=_collate,
            generator=torch.Generator().manual_seed(seed),  # seeds the workers' RNGs
        )
        for batch in loader:
            if batch is None or isinstance(batch, dict):
                yield batch
            else:
                yield (batch[0], torch.as_tensor(batch[1]))


Source = TensorSource | DatasetSource


def as_source(data: Data) -> Source:
    """Wrap `data` (tensors pair, `TensorDataset` or `Dataset`) for batching."""
    if isinstance(data, tuple | list) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        return TensorSource(data[0], data[1])
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return TensorSource(*data.tensors)
    if isinstance(data, Dataset):
        return DatasetSource(data)
    raise DatasetError(
        f"training/evaluation data must be a Dataset or an (images, labels) tensor pair, got "
        f"{type(data).__name__}"
    )


def check_labels(source: Source, num_classes: int, what: str) -> None:
    """Raise `DatasetError` when the data is empty or has more classes than the model's head."""
    if len(source) == 0:
        raise DatasetError(f"the {what} data is empty")
    top = source.max_label()
    if top >= num_classes:
        raise DatasetError(
            f"the {what} data has labels up to {top} but the model's head has {num_classes} "
            "classes; build the model with num_classes matching the dataset"
        )
