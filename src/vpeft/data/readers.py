"""Readers for image datasets kept on disk in the layouts people commonly have.

* :class:`VTAB1kDataset`: VTAB-1k list files (``train800.txt`` ... ``test.txt``).
* :class:`FGVCDataset`: fine-grained sets with VPT-style ``{split}.json`` files.
* :class:`ImageFolderDataset`: ``<root>/<split>/<class_name>/<image>``.

Items are ``(image, label)`` with ``image`` a float32 ``(3, H, W)`` tensor in ``[0, 1]`` passed
through ``transform`` (e.g. :func:`vpeft.data.transforms.make_transform`). Layout problems raise
:class:`~vpeft.errors.DatasetError` naming the file or line and the layout that was expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from vpeft.data.arrays import ArrayImageDataset, Transform
from vpeft.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

VTAB1K_SPLITS = ("train800", "val200", "train800val200", "test")
VTAB1K_LAYOUT = (
    "expected layout: <root>/<task>/ holding train800.txt, val200.txt, train800val200.txt and "
    "test.txt, each line 'relative/path/to/image.jpg <integer label>' with paths relative to the "
    "task folder"
)

FGVC_SPLITS = ("train", "val", "trainval", "test")
#: Where each fine-grained dataset keeps its images, relative to its root ("" = the root itself).
FGVC_IMAGE_DIRS = {
    "cub": "images",
    "nabirds": "images",
    "flowers": "jpg",
    "dogs": "Images",
    "cars": "",
}
_DEFAULT_DIRS = ", ".join(f"{name}={folder or '.'}" for name, folder in FGVC_IMAGE_DIRS.items())
FGVC_LAYOUT = (
    "expected layout: <root>/ holding train.json, val.json and test.json, each a JSON object "
    '{"relative/image/path.jpg": <integer label>, ...}, with the images under '
    f"<root>/<image_dir>/ (image_dir defaults: {_DEFAULT_DIRS})"
)

FOLDER_LAYOUT = (
    "expected layout: <root>/<split>/<class_name>/<image file> (classes are taken from the "
    f"folders of <root>/train; image extensions: {' '.join(IMAGE_EXTENSIONS)})"
)

_MISSING_SHOWN = 3  # missing files quoted in an error message


#: PIL modes of single-channel images deeper than 8 bits (PIL's RGB conversion saturates them).
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _deep_to_unit(img: Image.Image) -> np.ndarray:
    """A 16-bit / 32-bit integer or float single-channel image as float32 in ``[0, 1]``.

    Integer images are divided by the largest value of their bit depth (65535 for 16-bit; for
    32-bit ``I`` images, by 65535 when every value fits 16 bits, else by 2**32 - 1), so
    intensities stay comparable across images. Float images already in ``[0, 1]`` are kept;
    others are rescaled by their own min..max (a constant image becomes 0).
    """
    array = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        lo, hi = float(array.min()), float(array.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise DatasetError("float image holds NaN or infinite values")
        if lo < 0.0 or hi > 1.0:
            array = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    elif img.mode == "I":
        array = array / (65535.0 if array.max() <= 65535 and array.min() >= 0 else 2**32 - 1)
        array = np.clip(array, 0.0, 1.0)
    else:
        array = array / 65535.0
    return array.astype(np.float32)


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as an RGB float32 tensor ``(3, H, W)`` in ``[0, 1]``.

    8-bit images are divided by 255; deeper single-channel images (16-bit PNG / TIFF, 32-bit
    integer or float TIFF) are rescaled by their range (see `_deep_to_unit`) and repeated over
    the three channels, instead of being saturated to white by an RGB conversion.
    """
    try:
        with Image.open(path) as img:
            if img.mode in _DEEP_MODES:
                grey = torch.from_numpy(_deep_to_unit(img))
                return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"image file {path} does not exist") from None
    except DatasetError as exc:
        raise DatasetError(f"cannot read image file {path}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image file {path}: {exc}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageListDataset(Dataset):
    """A list of ``(image path, label)`` pairs read lazily from disk (base of the readers)."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        num_classes: int,
        classes: Sequence[str] | None = None,
        transform: Transform | None = None,
        name: str = "",
    ) -> None:
        self.samples = list(samples)
        self.num_classes = int(num_classes)
        self.classes = (
            list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        )
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = load_image(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(name={self.name!r}, n={len(self)}, num_classes={self.num_classes})"

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def class_counts(self) -> np.ndarray:
        return np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=self.num_classes)

    def as_tensors(self, transform: Transform | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image, read once and transformed (default: the dataset's transform), stacked as
        ``(images (N, 3, H, W), labels int64 (N,))``. The transform must give one size for all."""
        transform = self.transform if transform is None else transform
        images = []
        for path, _ in self.samples:
            image = load_image(path)
            images.append(transform(image) if transform is not None else image)
        sizes = {tuple(img.shape) for img in images}
        if len(sizes) > 1:
            raise DatasetError(
                f"dataset {self.name!r}: images come in {len(sizes)} sizes; pass a transform that "
                "resizes them (e.g. vpeft.data.make_transform(size)) to stack them"
            )
        labels = torch.tensor(self.targets, dtype=torch.int64)
        return (torch.stack(images) if images else torch.empty(0, 3, 0, 0)), labels

    def to_arrays(self, size: int | tuple[int, int]) -> ArrayImageDataset:
        """Load every image, resized (bicubic) to ``size``, into an :class:`ArrayImageDataset`."""
        h, w = (size, size) if isinstance(size, int) else size
        images = np.empty((len(self), h, w, 3), dtype=np.uint8)
        for i, (path, _) in enumerate(self.samples):
            unit = load_image(path).permute(1, 2, 0).mul(255.0).round().clamp(0, 255)
            rgb = Image.fromarray(unit.to(torch.uint8).numpy(), "RGB")
            images[i] = np.asarray(rgb.resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8)
        labels = np.asarray(self.targets, dtype=np.int64)
        return ArrayImageDataset(
            images, labels, self.num_classes, self.transform, self.classes, self.name
        )


def _check_dir(folder: Path, what: str, layout: str) -> None:
    if not folder.is_dir():
        raise DatasetError(f"{what} {folder} does not exist or is not a folder; {layout}")


def _check_split(split: str, valid: Sequence[str], what: str) -> None:
    if split not in valid:
        raise DatasetError(f"unknown {what} split {split!r}; valid splits: {', '.join(valid)}")


def _check_files_exist(samples: Iterable[tuple[Path, int]], source: str, layout: str) -> None:
    missing = [str(p) for p, _ in samples if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:_MISSING_SHOWN])
        more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
        raise DatasetError(
            f"{len(missing)} image file(s) listed in {source} are missing: {shown}{more}; {layout}"
        )


def _check_not_empty(samples: Sequence[object], source: str, layout: str) -> None:
    if not samples:
        raise DatasetError(f"split {source} holds no images; {layout}")


# --------------------------------------------------------------------------- VTAB-1k


#: Largest class label a list file may hold (the class count becomes the largest label + 1;
#: ImageNet-21k has 21,843 classes): a bigger one is a damaged line, not a head to build.
MAX_LABEL = 2**20 - 1


def parse_vtab_list(list_file: Path, folder: Path) -> list[tuple[Path, int]]:
    """Parse a VTAB-1k list file: one ``relative/path label`` per line (blank lines skipped).

    Paths are relative to `folder` and must stay inside it; labels are ASCII integers in
    0..`MAX_LABEL`. Anything else is a `DatasetError` naming the file and line."""
    samples = []
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{list_file} is not UTF-8 text ({err}); {VTAB1K_LAYOUT}") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        label = parts[1] if len(parts) == 2 else ""
        if not (label.isascii() and label.isdigit()) or int(label) > MAX_LABEL:
            raise DatasetError(
                f"{list_file}:{number}: malformed line {raw[:200]!r}: expected 'relative/path.jpg "
                f"<integer label 0..{MAX_LABEL}>'; {VTAB1K_LAYOUT}"
            )
        relative = Path(os.path.normpath(parts[0]))  # lexical: symlinked images stay allowed
        if "\0" in parts[0] or relative.is_absolute() or relative.parts[:1] == ("..",):
            raise DatasetError(
                f"{list_file}:{number}: path {parts[0][:200]!r} is outside the task folder "
                f"{folder} (absolute or through '..'); list paths relative to it"
            )
        samples.append((folder / relative, int(label)))
    return samples


class VTAB1kDataset(ImageListDataset):
    """One split of a VTAB-1k task stored as list files.

    ``root`` is the task folder, or the folder of all tasks when ``task`` names one of them. The
    class count is the largest label over every list file present, plus one, so all splits agree.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        task: str | None = None,
    ) -> None:
        folder = Path(root).expanduser() / task if task else Path(root).expanduser()
        _check_split(split, VTAB1K_SPLITS, "VTAB-1k")
        _check_dir(folder, "VTAB-1k task folder", VTAB1K_LAYOUT)
        list_file = folder / f"{split}.txt"
        if not list_file.is_file():
            raise DatasetError(f"VTAB-1k list file {list_file} is missing; {VTAB1K_LAYOUT}")
        samples = parse_vtab_list(list_file, folder)
        _check_not_empty(samples, str(list_file), VTAB1K_LAYOUT)
        _check_files_exist(samples, str(list_file), VTAB1K_LAYOUT)
        max_label = max(label for _, label in samples)
        for other in VTAB1K_SPLITS:
            other_file = folder / f"{other}.txt"
            if other != split and other_file.is_file():
                labels = [label for _, label in parse_vtab_list(other_file, folder)]
                max_label = max([max_label, *labels])
        super().__init__(samples, max_label + 1, None, transform, f"{folder.name}/{split}")
        self.folder = folder


# --------------------------------------------------------------------------- FGVC (VPT json)


def _read_json_split(path: Path) -> dict[str, int]:
    if not path.is_file():
        raise DatasetError(f"FGVC split file {path} is missing; {FGVC_LAYOUT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"FGVC split file {path} is not valid JSON ({exc}); {FGVC_LAYOUT}"
        ) from None
    if not isinstance(data, dict):
        raise DatasetError(
            f"FGVC split file {path} holds a {type(data).__name__}, not an object mapping image "
            f"paths to labels; {FGVC_LAYOUT}"
        )
    for key, label in data.items():
        if isinstance(label, bool) or not isinstance(label, int):
            raise DatasetError(
                f"FGVC split file {path}: entry {key!r} has label {label!r}, expected an integer; "
                f"{FGVC_LAYOUT}"
            )
    return data


def _resolve_image_dir(
    root: Path, entries: Sequence[str], dataset: str | None, image_dir: str | None
) -> Path:
    """The folder that the json paths are relative to: ``image_dir`` if given, else the
    dataset's default, else ``images/`` or the root, whichever holds the first listed image."""
    if image_dir is not None:
        return root / image_dir
    candidates = [FGVC_IMAGE_DIRS[dataset]] if dataset else []
    candidates += [c for c in ("images", "") if c not in candidates]
    probe = entries[0] if entries else None
    for candidate in candidates:
        if probe is not None and (root / candidate / probe).is_file():
            return root / candidate
    return root / candidates[0]


class FGVCDataset(ImageListDataset):
    """One split of a fine-grained dataset with VPT-style json split files.

    ``split`` is ``train``, ``val``, ``test`` or ``trainval`` (train and val together). Labels are
    remapped to ``0..C-1`` in sorted order of the labels found over all split files.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        dataset: str | None = None,
        transform: Transform | None = None,
        image_dir: str | None = None,
    ) -> None:
        root = Path(root).expanduser()
        if dataset is not None:
            dataset = dataset.lower()
            if dataset not in FGVC_IMAGE_DIRS:
                raise DatasetError(
                    f"unknown FGVC dataset {dataset!r}; known datasets: "
                    f"{', '.join(FGVC_IMAGE_DIRS)} (or pass image_dir and leave dataset unset)"
                )
        _check_split(split, FGVC_SPLITS, "FGVC")
        _check_dir(root, "FGVC dataset folder", FGVC_LAYOUT)
        wanted = ("train", "val") if split == "trainval" else (split,)
        entries: dict[str, int] = {}
        for part in wanted:
            entries.update(_read_json_split(root / f"{part}.json"))
        all_labels = set(entries.values())
        for other in ("train", "val", "test"):
            if other not in wanted and (root / f"{other}.json").is_file():
                all_labels.update(_read_json_split(root / f"{other}.json").values())
        remap = {label: i for i, label in enumerate(sorted(all_labels))}
        source = " + ".join(str(root / f"{p}.json") for p in wanted)
        _check_not_empty(list(entries), source, FGVC_LAYOUT)
        folder = _resolve_image_dir(root, list(entries), dataset, image_dir)
        samples = [(folder / rel, remap[label]) for rel, label in entries.items()]
        _check_files_exist(samples, source, FGVC_LAYOUT)
        super().__init__(samples, len(remap), [str(k) for k in sorted(remap)], transform,
                         f"{dataset or root.name}/{split}")  # fmt: skip
        self.image_dir = folder
        self.label_map = remap


# --------------------------------------------------------------------------- image folders


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path, extensions: Sequence[str]) -> list[Path]:
    exts = {e.lower() for e in extensions}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)


class ImageFolderDataset(ImageListDataset):
    """``<root>/<split>/<class_name>/<image>``.

    Label indices come from ``classes`` when given — the training split's class names, or an
    adapter's, so every split uses the same indices: a split may lack some classes, but a class
    folder unknown to ``classes`` is an error. Without ``classes`` they are the class folders of
    ``<root>/train`` when it exists, else of this split, in plain string order (``"10"`` before
    ``"9"``; no natural sort — the names are recorded in ``summary.json`` and adapter files, so
    nobody has to guess the order); then an empty class folder is an error.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        classes: Sequence[str] | None = None,
    ) -> None:
        root = Path(root).expanduser()
        _check_dir(root, "image folder root", FOLDER_LAYOUT)
        split_dir = root / split
        _check_dir(split_dir, f"split folder for {split!r}", FOLDER_LAYOUT)
        if classes is not None:
            reference, names = "the training classes", [str(c) for c in classes]
        else:
            ref_dir = root / "train" if (root / "train").is_dir() else split_dir
            reference, names = str(ref_dir), _class_folders(ref_dir)
            if not names:
                raise DatasetError(f"{ref_dir} has no class folders; {FOLDER_LAYOUT}")
            empty = [n for n in names if not _image_files(ref_dir / n, extensions)]
            if empty:
                raise DatasetError(
                    f"class folder(s) {', '.join(empty)} of {ref_dir} hold no images; add images "
                    f"or remove the folder(s); {FOLDER_LAYOUT}"
                )
        unknown = sorted(set(_class_folders(split_dir)) - set(names))
        if unknown:
            raise DatasetError(
                f"{split_dir} has class folder(s) {', '.join(unknown)} unknown to {reference} "
                f"({', '.join(names)}); a split may lack classes but not add new ones"
            )
        samples = [
            (path, index)
            for index, name in enumerate(names)
            if (split_dir / name).is_dir()
            for path in _image_files(split_dir / name, extensions)
        ]
        _check_not_empty(samples, str(split_dir), FOLDER_LAYOUT)
        super().__init__(samples, len(names), names, transform, f"{root.name}/{split}")
