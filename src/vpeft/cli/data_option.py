"""The ``--data KIND:ROOT_OR_TASK`` option shared by `vpeft train` and `vpeft eval`.

``synthetic:synth-count`` names a procedural task; ``vtab:/data/vtab-1k/cifar``,
``fgvc:/data/fgvc/cub`` and ``folder:/data/my-images`` name folders read by `vpeft.data`;
``vl-synthetic:vqa`` (nlvr2, retrieval, clip-base, clip-new) the procedural VL suite, and
``vqa-v2:DIR``, ``nlvr2:DIR``, ``flickr30k:DIR``, ``clip-base:DIR`` / ``clip-new:DIR`` the
standard VL layouts on disk (`vpeft.cli.vl_data`).
Splits follow VTAB-1k: ``train800``, ``val200``, ``train800val200`` and ``test``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ConfigError, DatasetError

if TYPE_CHECKING:  # data code (torch, timm) loads when a command reads data, not for --help
    from ..data.transforms import DataConfig
    from ..train.inputs import Data

KINDS: tuple[str, ...] = (
    "synthetic",
    "vtab",
    "fgvc",
    "folder",
    "dense-synthetic",
    "pascal-mt",
    "ade20k",
    "vl-synthetic",
    "vqa-v2",
    "nlvr2",
    "flickr30k",
    "clip-base",
    "clip-new",
)
#: kinds whose ROOT names a generated task, not a folder
GENERATED_KINDS: tuple[str, ...] = ("synthetic", "dense-synthetic", "vl-synthetic")
#: Whole splits are pre-transformed into one tensor when they take at most this many bytes.
TENSOR_BYTES_LIMIT = 2 * 1024**3

DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        "-d",
        help="KIND:ROOT_OR_TASK, KIND one of synthetic, vtab, fgvc, folder, dense-synthetic, "
        "pascal-mt, ade20k, vl-synthetic and the VL layouts below (e.g. synthetic:synth-count, "
        "vtab:/data/vtab-1k/cifar, "
        "dense-synthetic:default or dense-synthetic:seed=0,limit=200, pascal-mt:/data/PASCAL_MT, "
        "ade20k:/data/ADEChallengeData2016 (single task semseg, SETR-PUP decoder), "
        "vl-synthetic:vqa with a VL backbone; parts vqa, nlvr2, retrieval, clip-base, clip-new; "
        "on disk: vqa-v2:DIR, nlvr2:DIR, flickr30k:DIR (Karpathy json), clip-base:DIR / "
        "clip-new:DIR (class folders + classnames.txt)).",
    ),
]


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value."""

    kind: str
    root: str

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        kind, sep, root = text.partition(":")
        if not sep or not root:
            raise ConfigError(
                f"--data expects KIND:ROOT_OR_TASK (e.g. synthetic:synth-count), got {text!r}"
            )
        if kind not in KINDS:
            raise ConfigError(f"--data kind {kind!r} is unknown; choose one of {list(KINDS)}")
        if kind not in GENERATED_KINDS and not Path(root).is_dir():
            raise DatasetError(
                f"--data {text}: the dataset folder {root} does not exist; download and "
                "unpack the dataset there (see the README) or correct the path"
            )
        return cls(kind, root)


def backbone_data_config(model: Any) -> DataConfig:
    """Resize / normalisation for `model`: its pretrained config, at the input size the built
    model actually takes (``--img-size`` changes the patch embedding, not ``pretrained_cfg``)."""
    from ..data.transforms import data_config_for

    dcfg = data_config_for(model)
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if built is not None and tuple(built) != tuple(dcfg.input_size):
        dcfg = replace(dcfg, input_size=(int(built[0]), int(built[1])))
    return dcfg


#: ``--train-split`` / ``--val-split`` / ``--test-split`` value that picks the names by layout.
AUTO_SPLIT = "auto"
_VTAB_NAMES = {"train": "train800", "val": "val200", "test": "test"}


def resolve_split(spec: DataSpec, role: str, given: str) -> str | None:
    """The split name for `role` (train / val / test); ``none`` skips it, ``auto`` picks:
    for ``folder:`` data whose root has a ``train/`` folder, ``train`` / ``val`` / ``test``
    (a missing ``val/`` is skipped); otherwise VTAB-1k's ``train800`` / ``val200`` / ``test``."""
    if given.lower() == "none":
        return None
    if given != AUTO_SPLIT:
        return given
    root = Path(spec.root)
    if spec.kind == "folder" and (root / "train").is_dir() and not (root / "train800").is_dir():
        if role == "val" and not (root / "val").is_dir():
            return None
        return role
    return _VTAB_NAMES[role]


def load_split(spec: DataSpec, split: str, transform: Any, classes: list[str] | None = None) -> Any:
    """One split of the dataset, with `transform` applied to its images. For ``folder:`` data,
    `classes` (the training split's or an adapter's names) fixes the label indices."""
    from .. import data

    build = getattr(data, "build_dataset", None)
    if build is None:
        raise DatasetError("this vpeft installation has no dataset readers (vpeft.data)")
    extra = {"classes": classes} if classes is not None and spec.kind == "folder" else {}
    return build(spec.kind, spec.root, split, transform=transform, **extra)


def class_names_of(dataset: Any) -> list[str] | None:
    """The dataset's class names in label order (None when it has none)."""
    names = getattr(dataset, "classes", None)
    return [str(c) for c in names] if names else None


def check_classes_match(dataset: Any, trained: list[str] | None, what: str) -> None:
    """Raise `DatasetError` when `dataset` has classes the adapter (`trained`) does not know."""
    if trained is None:
        return
    count = int(getattr(dataset, "num_classes", 0) or 0)
    names = class_names_of(dataset) or []
    unknown = [n for n in names if n not in trained] if names else []
    if unknown or count > len(trained):
        shown = ", ".join(unknown[:5]) or f"{count} classes"
        raise DatasetError(
            f"{what} has classes the adapter was not trained on ({shown}); the adapter's classes: "
            f"{', '.join(trained[:20])}"
        )


def training_input(dataset: Any, input_size: tuple[int, int]) -> Data:
    """The whole split as transformed tensors when it is small enough, else the dataset."""
    h, w = input_size
    as_tensors = getattr(dataset, "as_tensors", None)
    if callable(as_tensors) and len(dataset) * 3 * h * w * 4 <= TENSOR_BYTES_LIMIT:
        return as_tensors()
    return dataset


def flip_keeps_labels(spec: DataSpec) -> bool:
    """Whether a horizontal mirror keeps this data's labels: known for the synthetic tasks
    (e.g. not for position or orientation); assumed for on-disk datasets."""
    if spec.kind != "synthetic" or not spec.root:
        return True
    from ..data import synthetic

    return synthetic.task_info(spec.root).flip_safe


def num_classes_of(dataset: Any, spec: DataSpec) -> int:
    """The class count a dataset declares."""
    classes = getattr(dataset, "num_classes", None)
    if not classes:
        raise DatasetError(f"dataset {spec.kind}:{spec.root} does not declare its class count")
    return int(classes)
