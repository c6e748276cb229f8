"""Reader for the PASCAL-Context multi-task release (semantic segmentation, human parts,
saliency, surface normals) in the layout of the multi-task community's ``PASCAL_MT`` folder
(ASTMT / MTI-Net / ATRC / Multi-Task-Learning-PyTorch):

    root/ImageSets/Context/{train,val}.txt   image ids, one per line
    root/JPEGImages/<id>.jpg                 RGB image
    root/semseg/pascal-context/<id>.png      21 classes, 0 = background, 255 = unlabelled
                                             (``semseg/VOC12/<id>.png`` is preferred if present,
                                             as those loaders do)
    root/human_parts/<id>.mat                PASCAL-Part annotation: ``anno.objects`` with fields
                                             ``class_ind`` (15 = person), ``mask``, ``parts``
                                             (``part_name``, ``mask``)
    root/sal_distill/<id>.png                distilled saliency, grey 0–255 (> 127.5 = salient)
    root/normals_distill/<id>.png            distilled normals, RGB c ↦ 2c/255 − 1

Human parts are grouped into 6 classes + background as those loaders do: 1 head (hair, head,
ears, eyebrows, eyes, mouth, nose), 2 torso (torso, neck), 3 upper arms, 4 lower arms (incl.
hands), 5 upper legs, 6 lower legs (incl. feet); images without annotated people are all
background. Saliency is binarised at 0.5. Normals: every pixel whose decoded vector is non-zero
is valid; the community additionally keeps only pixels of Context classes shared with NYUD
(needing ``pascal-context/trainval/<id>.mat`` and ``json/{nyu,context}_classes.json``) — pass
``normals_class_mask=True`` to apply it (the files are then required).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vpeft.errors import DatasetError

TASKS: tuple[str, ...] = ("semseg", "parts", "saliency", "normals")
HUMAN_CLASS_INDEX = 15
#: PASCAL-Part person part name -> part class (1..6)
HUMAN_PART_CLASS: dict[str, int] = {
    **dict.fromkeys(
        ["hair", "head", "lear", "rear", "lebrow", "rebrow", "leye", "reye", "mouth", "nose"], 1
    ),
    **dict.fromkeys(["torso", "neck"], 2),
    **dict.fromkeys(["luarm", "ruarm"], 3),
    **dict.fromkeys(["llarm", "rlarm", "lhand", "rhand"], 4),
    **dict.fromkeys(["luleg", "ruleg"], 5),
    **dict.fromkeys(["llleg", "rlleg", "lfoot", "rfoot"], 6),
}


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy is a dependency of scikit-learn
        raise DatasetError(f"reading {path} needs scipy; install it (pip install scipy)") from None
    try:
        return loadmat(path)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DatasetError(f"cannot read MATLAB file {path} ({exc}); re-extract it") from None


def _field(record: Any, name: str, path: Path) -> Any:
    try:
        return record[name]
    except (ValueError, KeyError, IndexError, TypeError):
        raise DatasetError(
            f"{path}: PASCAL-Part annotation lacks the field {name!r}; expected anno.objects with "
            "class_ind, mask and parts (part_name, mask)"
        ) from None


def read_human_parts(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The 7-label human-part map (H×W uint8) of one PASCAL-Part ``.mat`` file."""
    mat = _loadmat(path)
    if "anno" not in mat:
        raise DatasetError(f"{path}: no 'anno' variable; is this a PASCAL-Part annotation?")
    objects = np.asarray(_field(mat["anno"][0, 0], "objects", path)).reshape(-1)
    target = np.zeros(shape, np.uint8)
    for obj in objects:
        if int(np.asarray(_field(obj, "class_ind", path)).reshape(-1)[0]) != HUMAN_CLASS_INDEX:
            continue
        parts = np.asarray(_field(obj, "parts", path)).reshape(-1)
        for part in parts:
            name = str(np.asarray(_field(part, "part_name", path)).reshape(-1)[0])
            if name not in HUMAN_PART_CLASS:
                raise DatasetError(f"{path}: unknown person part {name!r}")
            mask = np.asarray(_field(part, "mask", path)).astype(bool)
            if mask.shape != shape:
                raise DatasetError(f"{path}: part mask {mask.shape} but image {shape}")
            target[mask] = HUMAN_PART_CLASS[name]
    return target


def _read_image(path: Path, mode: str | None = None) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"missing file {path}; check the PASCAL-Context (PASCAL_MT) layout")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode) if mode else im).copy()
    except OSError as exc:
        raise DatasetError(f"cannot decode image {path} ({exc}); re-extract the dataset") from None


class PascalContextMT(Dataset):
    """One split of PASCAL-Context multi-task. Items: ``{"pixel_values": float 3×H×W in [0,1],
    "semseg"/"parts"/"saliency": long H×W, "normals": float 3×H×W}`` (only the requested
    ``tasks``), passed through ``transform`` (e.g. `DenseAugment`) when given."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = TASKS,
        transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
        normals_class_mask: bool = False,
    ) -> None:
        self.root = Path(root).expanduser()
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise DatasetError(
                f"unknown PASCAL-Context tasks {sorted(unknown)}; choose from {TASKS}"
            )
        self.tasks = tuple(tasks)
        self.transform = transform
        listing = self.root / "ImageSets" / "Context" / f"{split}.txt"
        if not listing.is_file():
            raise DatasetError(
                f"missing split file {listing}; root must be the PASCAL_MT folder of the "
                "multi-task release (with ImageSets/Context/{train,val}.txt)"
            )
        self.ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise DatasetError(f"split file {listing} lists no images")
        self.normals_classes: set[int] | None = None
        if normals_class_mask and "normals" in self.tasks:
            self.normals_classes = self._normals_classes()
        for i in self.ids:  # fail at construction, naming the first missing file
            for path in self._paths(i).values():
                if not path.is_file():
                    raise DatasetError(
                        f"missing file {path} for image {i!r} of split {split!r}; check the "
                        "PASCAL-Context (PASCAL_MT) layout"
                    )

    def _normals_classes(self) -> set[int]:
        files = [self.root / "json" / f for f in ("nyu_classes.json", "context_classes.json")]
        for f in files:
            if not f.is_file():
                raise DatasetError(f"normals_class_mask=True needs {f}; or pass False")
        nyu = json.loads(files[0].read_text())
        context = json.loads(files[1].read_text())
        keep = {int(context[c]) for c in nyu if c in context and c != "unknown"}
        if "tvmonitor" in context:
            keep.add(int(context["tvmonitor"]))  # as the community loaders add it
        return keep

    def _paths(self, i: str) -> dict[str, Path]:
        r = self.root
        paths = {"image": r / "JPEGImages" / f"{i}.jpg"}
        if "semseg" in self.tasks:
            voc = r / "semseg" / "VOC12" / f"{i}.png"
            paths["semseg"] = voc if voc.is_file() else r / "semseg" / "pascal-context" / f"{i}.png"
        if "parts" in self.tasks:
            paths["parts"] = r / "human_parts" / f"{i}.mat"
        if "saliency" in self.tasks:
            paths["saliency"] = r / "sal_distill" / f"{i}.png"
        if "normals" in self.tasks:
            paths["normals"] = r / "normals_distill" / f"{i}.png"
            if self.normals_classes is not None:
                paths["context"] = r / "pascal-context" / "trainval" / f"{i}.mat"
        return paths

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = self.ids[index]
        paths = self._paths(i)
        image = _read_image(paths["image"], "RGB")
        shape = image.shape[:2]
        out = {"pixel_values": torch.from_numpy(image).permute(2, 0, 1).float() / 255.0}

        def check(name: str, arr: np.ndarray) -> np.ndarray:
            if arr.shape[:2] != shape:
                raise DatasetError(
                    f"{paths[name]}: label size {arr.shape[:2]} differs from image {shape}"
                )
            return arr

        if "semseg" in self.tasks:
            out["semseg"] = torch.from_numpy(
                check("semseg", _read_image(paths["semseg"])).astype(np.int64)
            )
        if "parts" in self.tasks:
            out["parts"] = torch.from_numpy(
                read_human_parts(paths["parts"], shape).astype(np.int64)
            )
        if "saliency" in self.tasks:
            sal = check("saliency", _read_image(paths["saliency"], "L"))
            out["saliency"] = torch.from_numpy((sal > 127.5).astype(np.int64))
        if "normals" in self.tasks:
            raw = check("normals", _read_image(paths["normals"], "RGB")).astype(np.float32)
            normals = 2.0 * raw / 255.0 - 1.0
            if self.normals_classes is not None:
                labels = _loadmat(paths["context"]).get("LabelMap")
                if labels is None or labels.shape != shape:
                    raise DatasetError(f"{paths['context']}: no LabelMap of size {shape}")
                normals[~np.isin(labels, list(self.normals_classes))] = 0.0
            out["normals"] = torch.from_numpy(normals).permute(2, 0, 1).contiguous()
        return self.transform(out) if self.transform is not None else out
