"""ADE20K (SceneParsing, the ``ADEChallengeData2016`` release) for single-task segmentation
(spec/spt.md, "ADE20K mIoU"; the SPT / VPT setting).

Layout read (the official zip unpacked; ``root`` may be the ``ADEChallengeData2016`` folder or
its parent)::

    ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_*.png

Labels: the PNG holds 0 (“other”, not scored) and 1..150; as mmseg's ``reduce_zero_label``,
label ``l`` becomes ``l − 1`` (0..149) and 0 becomes ``ignore_index`` (255). Values above 150
are malformed (`DatasetError`).

Geometry (`Ade20kTransform`), a documented simplification of mmseg's pipeline:

- evaluation: resize the **short side** to ``size`` (bilinear image, nearest labels), then a
  **centre crop** of ``size`` (single scale; the SPT/VPT protocol uses 512×512 crops on
  ViT-B/L, while mmseg scores the whole resized image with a sliding window);
- training: random resize of the short side to ``size·r``, ``r ~ U[ratio_range]`` (default
  [1.0, 2.0], as mmseg's 0.5–2.0 of a 2048×512 scale keeps the short side ≥ the crop), a
  random ``size`` crop (pixels outside the image: 0, labels: ignore) and a random horizontal
  flip. No photometric distortion.

Items are dicts: ``pixel_values`` (3, H, W) float in [0, 1] (normalised by the caller, as the
other dense readers) and ``semseg`` (H, W) int64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vpeft.errors import ConfigError, DatasetError

NUM_CLASSES = 150
IGNORE_INDEX = 255
SPLITS: tuple[str, ...] = ("training", "validation")
#: accepted aliases of the release's split names
_ALIASES = {"train": "training", "val": "validation", "test": "validation"}


def reduce_zero_label(label: np.ndarray, path: Path | str = "") -> np.ndarray:
    """0 → 255 (ignore), l → l − 1 for 1..150; values > 150 raise `DatasetError`."""
    if label.size and int(label.max()) > NUM_CLASSES:
        raise DatasetError(
            f"{path}: ADE20K labels must be 0..{NUM_CLASSES}, found {int(label.max())}"
        )
    out = label.astype(np.int64) - 1
    out[label == 0] = IGNORE_INDEX
    return out


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


@dataclass
class Ade20kTransform:
    """Joint resize + crop (+ flip) of ``(image (3,H,W) float, label (H,W) int64)``."""

    size: int | Sequence[int] = 512
    train: bool = False
    ratio_range: tuple[float, float] = (1.0, 2.0)
    flip: bool = True
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        lo, hi = self.ratio_range
        if not 0 < lo <= hi:
            raise ConfigError(f"ratio_range must satisfy 0 < lo <= hi, got {self.ratio_range}")

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ch, cw = _size2(self.size)
        h, w = image.shape[-2:]
        ratio = 1.0
        if self.train:
            lo, hi = self.ratio_range
            ratio = lo + (hi - lo) * float(torch.rand((), generator=generator))
        short = max(ch, cw) * ratio
        scale = short / min(h, w)
        nh, nw = max(round(h * scale), 1), max(round(w * scale), 1)
        image = F.interpolate(image[None], (nh, nw), mode="bilinear", align_corners=False)[0]
        label = F.interpolate(label[None, None].float(), (nh, nw), mode="nearest")[0, 0].long()
        # pad (image 0, label ignore) when the resized image is smaller than the crop
        ph, pw = max(ch - nh, 0), max(cw - nw, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            label = F.pad(label, (0, pw, 0, ph), value=self.ignore_index)
            nh, nw = nh + ph, nw + pw
        if self.train:
            top = int(torch.randint(0, nh - ch + 1, (), generator=generator))
            left = int(torch.randint(0, nw - cw + 1, (), generator=generator))
        else:
            top, left = (nh - ch) // 2, (nw - cw) // 2
        image = image[:, top : top + ch, left : left + cw]
        label = label[top : top + ch, left : left + cw]
        if self.train and self.flip and float(torch.rand((), generator=generator)) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        return image.contiguous(), label.contiguous()


def _root(root: str | Path) -> Path:
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    if not (root / "images").is_dir() or not (root / "annotations").is_dir():
        raise DatasetError(
            f"{root} is not an ADE20K release: expected ADEChallengeData2016/images/ and "
            "annotations/ (unpack ADEChallengeData2016.zip there)"
        )
    return root


class Ade20kDataset(Dataset):
    """One split (``training`` / ``validation``; ``train`` / ``val`` accepted) of ADE20K.

    ``transform``: an `Ade20kTransform` (default: evaluation geometry at ``size``, or none
    when ``size`` is None — items at their native size). Every image must have its annotation
    and vice versa (`DatasetError` naming the file otherwise); unreadable or mis-sized files
    raise `DatasetError` naming the file when read."""

    num_classes = NUM_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str = "validation",
        size: int | Sequence[int] | None = 512,
        train: bool = False,
        transform: Ade20kTransform | None = None,
        limit: int | None = None,
    ) -> None:
        split = _ALIASES.get(split, split)
        if split not in SPLITS:
            raise ConfigError(f"ADE20K split must be one of {list(SPLITS)}, got {split!r}")
        self.root = _root(root)
        self.split = split
        img_dir = self.root / "images" / split
        ann_dir = self.root / "annotations" / split
        for d in (img_dir, ann_dir):
            if not d.is_dir():
                raise DatasetError(f"ADE20K {split}: missing folder {d}")
        images = {p.stem: p for p in img_dir.iterdir() if p.suffix.lower() == ".jpg"}
        labels = {p.stem: p for p in ann_dir.iterdir() if p.suffix.lower() == ".png"}
        for stem in sorted(set(images) ^ set(labels)):
            missing = ann_dir / f"{stem}.png" if stem in images else img_dir / f"{stem}.jpg"
            raise DatasetError(f"ADE20K {split}: missing file {missing}")
        if not images:
            raise DatasetError(f"ADE20K {split}: no images in {img_dir}")
        self.ids = sorted(images)[:limit] if limit else sorted(images)
        self.images, self.labels = images, labels
        if transform is None and size is not None:
            transform = Ade20kTransform(size, train=train)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The native-size (image float [0,1] (3,H,W), label int64 (H,W) with 255 ignore)."""
        from PIL import Image

        stem = self.ids[index]
        img_path, ann_path = self.images[stem], self.labels[stem]
        try:
            with Image.open(img_path) as im:
                image = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as err:
            raise DatasetError(f"cannot read ADE20K image {img_path}: {err}") from None
        try:
            with Image.open(ann_path) as im:
                if im.mode not in ("L", "P", "I", "I;16"):
                    raise DatasetError(
                        f"ADE20K annotation {ann_path} must be a single-channel PNG, got mode "
                        f"{im.mode}"
                    )
                label = np.asarray(im)
        except (OSError, ValueError, SyntaxError) as err:
            raise DatasetError(f"cannot read ADE20K annotation {ann_path}: {err}") from None
        if label.shape != image.shape[:2]:
            raise DatasetError(
                f"ADE20K annotation {ann_path} is {label.shape[1]}×{label.shape[0]}, its image "
                f"{img_path.name} is {image.shape[1]}×{image.shape[0]}"
            )
        pixels = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0
        return pixels, torch.from_numpy(reduce_zero_label(label, ann_path))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, label = self.read(index)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return {"pixel_values": image, "semseg": label}


def write_miniature(
    root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (40, 52)
) -> Path:
    """Write a tiny ADE20K-layout dataset (for tests and demos): per split, images of
    ``size`` (H, W) with a few rectangles whose labels are in 0..150 (0 included). Returns the
    ``ADEChallengeData2016`` folder."""
    from PIL import Image

    counts = counts or {"training": 4, "validation": 2}
    base = Path(root) / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    h, w = size
    for split, n in counts.items():
        (base / "images" / split).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = np.zeros((h, w), np.uint8)
            image = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
            for cls in (1, 2, 3, int(rng.integers(4, 151))):
                y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
                label[y : y + 12, x : x + 16] = cls
                image[y : y + 12, x : x + 16] = (cls * 53 % 256, cls * 97 % 256, cls * 31 % 256)
            stem = f"ADE_{split[:5]}_{i:08d}"
            Image.fromarray(image).save(base / "images" / split / f"{stem}.jpg", quality=95)
            Image.fromarray(label).save(base / "annotations" / split / f"{stem}.png")
    return base
