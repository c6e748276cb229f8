"""In-memory image datasets backed by uint8 numpy arrays."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vpeft.errors import DatasetError

Transform = Callable[[torch.Tensor], torch.Tensor]


class ArrayImageDataset(Dataset):
    """Images ``(N, H, W, 3)`` uint8 and labels ``(N,)`` int64 held in memory.

    Items are ``(image, label)`` where ``image`` is a float32 ``(3, H, W)`` tensor in ``[0, 1]``
    passed through ``transform`` when one is set. :meth:`as_tensors` returns a whole split at once,
    which avoids per-item overhead for small images.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        num_classes: int | None = None,
        transform: Transform | None = None,
        classes: Sequence[str] | None = None,
        name: str = "",
    ) -> None:
        images, labels = _check_arrays(images, labels, name)
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if labels.size else 0
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DatasetError(
                f"dataset {name!r}: labels must lie in [0, {num_classes}), found "
                f"[{labels.min()}, {labels.max()}]"
            )
        if classes is not None and len(classes) != num_classes:
            raise DatasetError(
                f"dataset {name!r}: {len(classes)} class names given for {num_classes} classes"
            )
        self.images = images
        self.labels = labels
        self.num_classes = int(num_classes)
        self.transform = transform
        self.classes = (
            list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        )
        self.name = name

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div_(255.0)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        h, w = self.images.shape[1:3]
        return (
            f"ArrayImageDataset(name={self.name!r}, n={len(self)}, size={h}x{w}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def targets(self) -> list[int]:
        """Labels as a plain list (the attribute torchvision datasets expose)."""
        return self.labels.tolist()

    def class_counts(self) -> np.ndarray:
        """Number of images of each class, shape ``(num_classes,)``."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def with_transform(self, transform: Transform | None) -> ArrayImageDataset:
        """The same images and labels (shared, not copied) with another transform."""
        return ArrayImageDataset(
            self.images, self.labels, self.num_classes, transform, self.classes, self.name
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayImageDataset:
        """A new dataset holding the selected items (class count and names kept)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayImageDataset(
            self.images[idx],
            self.labels[idx],
            self.num_classes,
            self.transform,
            self.classes,
            self.name,
        )

    def as_tensors(
        self, transform: Transform | None = None, batch_size: int = 1024
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as ``(images float32 (N, 3, H', W'), labels int64 (N,))``.

        ``transform`` (default: the dataset's own) is applied to batches of ``(B, 3, H, W)``
        tensors when it declares ``batched = True`` (as the transforms of
        :mod:`vpeft.data.transforms` do), otherwise to each image in turn.
        """
        transform = self.transform if transform is None else transform
        labels = torch.from_numpy(self.labels.copy())
        chunks = []
        for start in range(0, len(self), batch_size):
            batch = torch.from_numpy(self.images[start : start + batch_size].copy())
            batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
            if transform is not None:
                if getattr(transform, "batched", False):
                    batch = transform(batch)
                else:
                    batch = torch.stack([transform(x) for x in batch])
            chunks.append(batch.contiguous())
        if not chunks:
            h, w = self.images.shape[1:3]
            return torch.empty(0, 3, h, w), labels
        return torch.cat(chunks), labels


def _check_arrays(images: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, ...]:
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"dataset {name!r}: images must be a uint8 array of shape (N, H, W, 3), got "
            f"{images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"dataset {name!r}: labels must have shape ({images.shape[0]},) to match the images, "
            f"got {labels.shape}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"dataset {name!r}: labels must be integers, got {labels.dtype}")
    if not images.flags.writeable:
        images = images.copy()  # torch.from_numpy warns on read-only memory
    return np.ascontiguousarray(images), labels.astype(np.int64, copy=False)
