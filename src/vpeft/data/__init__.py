"""Datasets for vpeft: the offline synthetic VTAB-like suite and readers for on-disk layouts.

Use :func:`build_dataset` for any kind, or the modules directly:
:mod:`vpeft.data.synthetic` (generated tasks), :mod:`vpeft.data.readers` (VTAB-1k lists, FGVC
json splits, image folders), :mod:`vpeft.data.transforms` (resize + normalise protocol) and
:mod:`vpeft.data.arrays` (in-memory datasets with a whole-split tensor fast path).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from vpeft.data.arrays import ArrayImageDataset, Transform
from vpeft.data.readers import (
    FGVCDataset,
    ImageFolderDataset,
    ImageListDataset,
    VTAB1kDataset,
    load_image,
)
from vpeft.data.synthetic import (
    SOURCE_TASK,
    TARGET_TASKS,
    TaskInfo,
    generate_all,
    load_split,
    task_info,
)
from vpeft.data.transforms import DataConfig, data_config_for, make_transform
from vpeft.errors import DatasetError

#: Dataset kind -> the keyword options it takes.
DATASET_KINDS: dict[str, tuple[str, ...]] = {
    "synthetic": ("seed", "cache_dir"),
    "vtab": ("task",),
    "fgvc": ("dataset", "image_dir"),
    "folder": ("extensions", "classes"),
}

__all__ = [
    "DATASET_KINDS",
    "SOURCE_TASK",
    "TARGET_TASKS",
    "ArrayImageDataset",
    "DataConfig",
    "FGVCDataset",
    "ImageFolderDataset",
    "ImageListDataset",
    "TaskInfo",
    "VTAB1kDataset",
    "build_dataset",
    "data_config_for",
    "generate_all",
    "load_image",
    "load_split",
    "make_transform",
    "task_info",
]


def build_dataset(
    kind: str, root: str | None, split: str, transform: Transform | None = None, **kw: Any
) -> Dataset:
    """Build one split of a dataset.

    * ``synthetic``: ``root`` is the task name (e.g. ``"synth-count"``); ``kw``: ``seed``,
      ``cache_dir``.
    * ``vtab``: ``root`` is a VTAB-1k task folder, or the folder of all tasks with ``task=...``.
    * ``fgvc``: ``root`` holds ``{train,val,test}.json``; ``kw``: ``dataset``, ``image_dir``.
    * ``folder``: ``root/<split>/<class_name>/<image>``; ``kw``: ``extensions``, ``classes``.
    """
    if kind not in DATASET_KINDS:
        raise DatasetError(
            f"unknown dataset kind {kind!r}; valid kinds: {', '.join(DATASET_KINDS)}"
        )
    if root is None:
        what = "the synthetic task name" if kind == "synthetic" else "the dataset folder"
        raise DatasetError(f"dataset kind {kind!r} needs root: {what}")
    unknown = sorted(set(kw) - set(DATASET_KINDS[kind]))
    if unknown:
        allowed = ", ".join(DATASET_KINDS[kind]) or "none"
        raise DatasetError(
            f"dataset kind {kind!r} takes no option {', '.join(unknown)}; its options: {allowed}"
        )
    if kind == "synthetic":
        return load_split(root, split, transform=transform, **kw)
    if kind == "vtab":
        return VTAB1kDataset(root, split, transform=transform, **kw)
    if kind == "fgvc":
        return FGVCDataset(root, split, transform=transform, **kw)
    return ImageFolderDataset(root, split, transform=transform, **kw)
