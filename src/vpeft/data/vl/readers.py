"""Readers for the standard on-disk layouts of the VL benchmarks, returning the datasets of
`datasets.py`. Layout problems raise `DatasetError` naming the file and what was expected.

- VQA v2 (`vqa_v2`): ``<root>/v2_OpenEnded_mscoco_{split}_questions.json`` and
  ``<root>/v2_mscoco_{split}_annotations.json`` (absent for test splits), COCO images
  ``<root>/{image split}/COCO_{image split}_{image_id:012d}.jpg`` (test-dev2015 uses test2015's).
- NLVR2 (`nlvr2`): ``<root>/{train,dev,test1}.json`` (JSON lines with ``identifier``,
  ``sentence``, ``label`` "True"/"False" and, for train, ``directory``); the images of
  identifier ``{split}-{set}-{pair}-{sentence}`` are ``{split}-{set}-{pair}-img0.png`` /
  ``-img1.png`` (left, right), under ``<root>/images/{split}/{directory}/`` (train, as
  distributed) or ``<root>/{split}/`` (dev, test1); both places are searched, with or without
  the ``directory`` level.
- Flickr30k, Karpathy split (`flickr30k`): ``<root>/dataset_flickr30k.json`` with
  ``images[].filename``, ``split`` (train / val / test) and ``sentences[].raw``; images under
  ``<root>/flickr30k-images/`` (or ``image_dir``).
- Class folders with class names for CLIP (`class_folder`): ``<root>/<split>/<folder>/<image>``
  plus ``<root>/classnames.txt``, lines ``<folder> <class name words>`` (CoOp's ImageNet
  format); `base_new_split` halves the classes as CoCoOp (first ``ceil(n/2)`` = base).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vpeft.data.readers import ImageFolderDataset
from vpeft.errors import DatasetError

from .answers import normalize_answer, soft_targets, top_answers
from .datasets import (
    CLIP_MEAN,
    CLIP_STD,
    VILT_MEAN,
    VILT_STD,
    ClassImageDataset,
    FileImages,
    Nlvr2Dataset,
    RetrievalDataset,
    VqaDataset,
)

_SHOWN = 3


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{what} file {path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{what} file {path} is not valid JSON: {exc}") from None


def _field(entry: Any, key: str, source: Path, where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise DatasetError(f"{source}: {where} has no {key!r} field")
    return entry[key]


def _check_images(paths: Sequence[Path], source: str) -> None:
    missing = [str(p) for p in dict.fromkeys(paths) if not p.is_file()]
    if missing:
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        raise DatasetError(
            f"{len(missing)} image file(s) referenced by {source} are missing: "
            f"{', '.join(missing[:_SHOWN])}{more}"
        )


# --------------------------------------------------------------------------- VQA v2

VQA_TOP_K = 3129  # the usual answer-vocabulary size (bottom-up attention, ViLT)


def vqa_v2_answers(root: str | Path, top_k: int = VQA_TOP_K, split: str = "train2014") -> tuple:
    """The answer vocabulary: the ``top_k`` most frequent normalised ``multiple_choice_answer``
    of the ``split`` annotations (ties by text)."""
    path = Path(root).expanduser() / f"v2_mscoco_{split}_annotations.json"
    annotations = _field(_read_json(path, "VQA v2 annotations"), "annotations", path, "the file")
    return top_answers(
        (
            normalize_answer(_field(a, "multiple_choice_answer", path, "an annotation"))
            for a in annotations
        ),
        top_k,
    )


def vqa_v2(
    root: str | Path,
    split: str,
    answers: Sequence[str] | None = None,
    top_k: int = VQA_TOP_K,
    image_size: int = 384,
    tokenizer: Any = None,
    max_length: int = 40,
    image_dir: str | Path | None = None,
    mean: Sequence[float] = VILT_MEAN,
    std: Sequence[float] = VILT_STD,
) -> VqaDataset:
    """One split (``train2014``, ``val2014``, ``test-dev2015``, ``test2015``) of VQA v2.

    ``answers`` defaults to `vqa_v2_answers` of train2014 (pass the same vocabulary to every
    split). Targets: official soft scores of the normalised human answers (`answers.py`);
    all zero for questions whose answers are outside the vocabulary, and for test splits."""
    root = Path(root).expanduser()
    qpath = root / f"v2_OpenEnded_mscoco_{split}_questions.json"
    questions = _field(_read_json(qpath, "VQA v2 questions"), "questions", qpath, "the file")
    vocab = tuple(answers) if answers is not None else vqa_v2_answers(root, top_k)
    apath = root / f"v2_mscoco_{split}_annotations.json"
    human: dict[int, list[str]] = {}
    if apath.is_file() or not split.startswith("test"):
        annotations = _field(
            _read_json(apath, "VQA v2 annotations"), "annotations", apath, "the file"
        )
        for a in annotations:
            qid = _field(a, "question_id", apath, "an annotation")
            people = _field(a, "answers", apath, f"annotation of question {qid}")
            human[qid] = [
                normalize_answer(_field(p, "answer", apath, f"question {qid}")) for p in people
            ]
    image_split = "test2015" if split.startswith("test") else split
    folder = Path(image_dir).expanduser() if image_dir else root / image_split
    texts, qids, image_ids, people = [], [], [], []
    for q in questions:
        qid = _field(q, "question_id", qpath, "a question")
        texts.append(_field(q, "question", qpath, f"question {qid}"))
        image_ids.append(int(_field(q, "image_id", qpath, f"question {qid}")))
        qids.append(qid)
        if human and qid not in human:
            raise DatasetError(f"{apath} has no annotation for question {qid} of {qpath}")
        people.append(human.get(qid, []))
    unique = sorted(set(image_ids))
    paths = [folder / f"COCO_{image_split}_{i:012d}.jpg" for i in unique]
    _check_images(paths, str(qpath))
    position = {i: k for k, i in enumerate(unique)}
    return VqaDataset(
        FileImages(paths, image_size),
        [position[i] for i in image_ids],
        texts,
        soft_targets(people, vocab),
        vocab,
        tokenizer,
        max_length,
        mean,
        std,
        qids,
        name=f"vqa-v2/{split}",
    )


# --------------------------------------------------------------------------- NLVR2

NLVR2_SPLITS = ("train", "dev", "test1")


def _nlvr2_image(root: Path, split: str, directory: Any, stem: str, k: int) -> Path:
    name = f"{stem}-img{k}.png"
    folders = [root / "images" / split, root / split]
    if directory is not None:
        folders = [f / str(directory) for f in folders] + folders
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return folders[0] / name  # reported as missing


def nlvr2(
    root: str | Path,
    split: str,
    image_size: int = 384,
    tokenizer: Any = None,
    max_length: int = 40,
    mean: Sequence[float] = VILT_MEAN,
    std: Sequence[float] = VILT_STD,
) -> Nlvr2Dataset:
    """One split (``train``, ``dev``, ``test1``) of NLVR2; label 1 = the statement is true."""
    if split not in NLVR2_SPLITS:
        raise DatasetError(f"unknown NLVR2 split {split!r}; splits: {', '.join(NLVR2_SPLITS)}")
    root = Path(root).expanduser()
    path = root / f"{split}.json"
    if not path.is_file():
        raise DatasetError(
            f"NLVR2 annotation file {path} is missing (JSON lines, one example per line)"
        )
    paths, statements, labels = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ex = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not a JSON object: {exc}") from None
        where = f"line {number}"
        identifier = str(_field(ex, "identifier", path, where))
        label = str(_field(ex, "label", path, where)).lower()
        if label not in ("true", "false"):
            raise DatasetError(f"{path}:{number}: label must be 'True' or 'False', got {label!r}")
        stem = identifier.rsplit("-", 1)[0]
        paths += [_nlvr2_image(root, split, ex.get("directory"), stem, k) for k in (0, 1)]
        statements.append(str(_field(ex, "sentence", path, where)))
        labels.append(int(label == "true"))
    if not statements:
        raise DatasetError(f"NLVR2 annotation file {path} holds no examples")
    _check_images(paths, str(path))
    pairs = np.arange(len(paths), dtype=np.int64).reshape(-1, 2)
    return Nlvr2Dataset(
        FileImages(paths, image_size),
        pairs,
        statements,
        labels,
        tokenizer,
        max_length,
        mean,
        std,
        name=f"nlvr2/{split}",
    )


# --------------------------------------------------------------------------- Flickr30k


def flickr30k(
    root: str | Path,
    split: str,
    mode: str = "pairs",
    negatives: int = 1,
    seed: int = 0,
    image_size: int = 384,
    tokenizer: Any = None,
    max_length: int = 40,
    karpathy_file: str = "dataset_flickr30k.json",
    image_dir: str | Path | None = None,
    mean: Sequence[float] = VILT_MEAN,
    std: Sequence[float] = VILT_STD,
) -> RetrievalDataset:
    """One split (``train``, ``val``, ``test``) of Flickr30k in Karpathy's split, as a
    `RetrievalDataset` (image ids and caption ids count from 0 within the split)."""
    root = Path(root).expanduser()
    path = root / karpathy_file
    images = _field(_read_json(path, "Karpathy split"), "images", path, "the file")
    folder = Path(image_dir).expanduser() if image_dir else root / "flickr30k-images"
    paths, captions, owner = [], [], []
    for entry in images:
        name = _field(entry, "filename", path, "an image entry")
        if _field(entry, "split", path, f"image {name}") != split:
            continue
        sentences = _field(entry, "sentences", path, f"image {name}")
        owner += [len(paths)] * len(sentences)
        captions += [str(_field(s, "raw", path, f"a sentence of {name}")) for s in sentences]
        paths.append(folder / name)
    if not paths:
        raise DatasetError(f"{path} lists no image of split {split!r}")
    _check_images(paths, str(path))
    return RetrievalDataset(
        FileImages(paths, image_size),
        owner,
        captions,
        mode,
        negatives,
        seed,
        tokenizer,
        max_length,
        mean,
        std,
        name=f"flickr30k/{split}/{mode}",
    )


# --------------------------------------------------------------------------- class folders


def read_class_names(path: Path) -> dict[str, str]:
    """``folder -> class name`` from lines ``<folder> <class name words>``."""
    if not path.is_file():
        raise DatasetError(
            f"class-names file {path} is missing; expected lines "
            "'<folder> <class name>' (e.g. 'n01440764 tench')"
        )
    names: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(
                f"{path}:{number}: malformed line {raw!r}: expected '<folder> <class name>'"
            )
        names[parts[0]] = parts[1].strip()
    return names


def base_new_split(classes: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """CoCoOp's base-to-new split: the first ``ceil(n/2)`` classes are base, the rest new."""
    m = math.ceil(len(classes) / 2)
    return tuple(classes[:m]), tuple(classes[m:])


def class_folder(
    root: str | Path,
    split: str,
    classes: str = "all",
    classnames_file: str = "classnames.txt",
    image_size: int = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> ClassImageDataset:
    """An ImageNet-style class-folder split with class names for CLIP. ``classes``: ``"all"``,
    ``"base"`` or ``"new"`` (`base_new_split` over the folders in sorted order; labels count
    from 0 within the chosen half, as CoOp relabels them)."""
    root = Path(root).expanduser()
    folder_names = read_class_names(root / classnames_file)
    data = ImageFolderDataset(root, split, classes=sorted(folder_names))
    base, new = base_new_split(sorted(folder_names))
    chosen = {"all": tuple(sorted(folder_names)), "base": base, "new": new}.get(classes)
    if chosen is None:
        raise DatasetError(f"classes must be 'all', 'base' or 'new', got {classes!r}")
    index = {f: i for i, f in enumerate(chosen)}
    folders = data.classes
    samples = [(p, index[folders[y]]) for p, y in data.samples if folders[y] in index]
    if not samples:
        raise DatasetError(f"{root / split} holds no image of the {classes} classes")
    return ClassImageDataset(
        FileImages([p for p, _ in samples], image_size),
        [y for _, y in samples],
        [folder_names[f] for f in chosen],
        mean,
        std,
        name=f"{root.name}/{split}/{classes}",
    )
