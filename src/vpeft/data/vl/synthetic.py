"""The procedural visual-question suite: seeded, generated in seconds, cached on disk.

Four parts, each generated from its own seed stream and cached as one ``.npz`` (images as
uint8, texts as fixed-width unicode arrays, never pickles) under
``$VPEFT_CACHE/vl-synthetic/{part}-g{GENERATOR_VERSION}-s{seed}.npz``, written atomically:

- ``vqa``: scenes (`scenes.py`) with `QUESTIONS_PER_IMAGE` questions each, of distinct types,
  with exact answers from the fixed vocabulary `language.ANSWERS` (31 answers);
- ``nlvr2``: pairs of scenes with one statement each, labels balanced (half true);
- ``retrieval``: scenes with `language.CAPTIONS_PER_IMAGE` (5) captions each;
- ``classes``: one object per image, class = colour-shape name (36 classes, `CLASS_NAMES`),
  split base / new (18 / 18; every colour and shape occurs in both halves) as CoOp's
  base-to-new protocol: ``train`` (16 shots per base class), ``val`` (4 per base class),
  ``test_base`` and ``test_new`` (50 per class; new labels count from 0 in `new_classes()`).

Loaders return the datasets of `datasets.py`, tokenized by the bundled tokenizer unless one is
given. VQA targets are one-hot (score 1.0 on the exact answer) unless ``noise > 0``: then
``annotators`` simulated people each give the exact answer with probability ``1 - noise`` and
otherwise a random answer of the question's type, and targets are the official VQA soft
scores of their answers (`answers.soft_score`), as in VQA v2.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vpeft.atomic import atomic_path
from vpeft.errors import DatasetError

from . import language as L
from .answers import soft_targets
from .datasets import (
    CLIP_MEAN,
    CLIP_STD,
    VILT_MEAN,
    VILT_STD,
    ArrayImages,
    ClassImageDataset,
    Nlvr2Dataset,
    RetrievalDataset,
    VqaDataset,
)
from .scenes import COLOURS, SHAPES, Scenes, render_scenes, render_single_objects
from .scenes import sample_scenes as _sample

#: Bump when any generator changes its output; caches of other versions are ignored.
GENERATOR_VERSION = 1
QUESTIONS_PER_IMAGE = 3
PARTS: tuple[str, ...] = ("vqa", "nlvr2", "retrieval", "classes")
#: Split sizes: images (vqa, retrieval), pairs (nlvr2); classes: images per class.
SPLITS: dict[str, dict[str, int]] = {
    "vqa": {"train": 2000, "val": 200, "test": 500},
    "nlvr2": {"train": 2000, "val": 200, "test": 500},
    "retrieval": {"train": 1000, "val": 100, "test": 100},
    "classes": {"train": 16, "val": 4, "test_base": 50, "test_new": 50},
}
NUM_BASE = len(L.CLASS_NAMES) // 2 + len(L.CLASS_NAMES) % 2  # CoCoOp: ceil(n / 2)


def base_classes() -> tuple[str, ...]:
    """The base half of the colour-shape classes (CoCoOp: the first ``ceil(n/2)``)."""
    return L.CLASS_NAMES[:NUM_BASE]


def new_classes() -> tuple[str, ...]:
    """The new half (labels of ``test_new`` index this tuple)."""
    return L.CLASS_NAMES[NUM_BASE:]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _streams(part: str, seed: int, n: int) -> list[np.random.Generator]:
    seq = np.random.SeedSequence([_check_seed(seed), zlib.crc32(part.encode()), GENERATOR_VERSION])
    return [np.random.default_rng(s) for s in seq.spawn(n)]


def _balanced(rng: np.random.Generator, size: int, k: int) -> np.ndarray:
    return rng.permutation(np.arange(size) % k).astype(np.int64)


# --------------------------------------------------------------------------- generators


def _gen_vqa(split: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    scenes = _sample(rng, n)
    images = render_scenes(rng, scenes)
    q_image, questions, answers, qtypes = [], [], [], []
    for i in range(n):
        for t in rng.choice(len(L.QUESTION_TYPES), QUESTIONS_PER_IMAGE, replace=False):
            question, answer, qtype = L.ask(rng, scenes, i, L.QUESTION_TYPES[t])
            q_image.append(i)
            questions.append(question)
            answers.append(L.ANSWERS.index(answer))
            qtypes.append(L.QUESTION_TYPES.index(qtype))
    return {
        f"{split}_images": images,
        **scenes.arrays(f"{split}_scene"),
        f"{split}_q_image": np.array(q_image, np.int64),
        f"{split}_question": np.array(questions),
        f"{split}_answer": np.array(answers, np.int64),
        f"{split}_qtype": np.array(qtypes, np.int64),
    }


def _gen_nlvr2(split: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    scenes = _sample(rng, 2 * n)
    labels = _balanced(rng, n, 2)
    statements = []
    for i in range(n):
        text = L.state(rng, scenes, (2 * i, 2 * i + 1), bool(labels[i]))
        if not text:
            raise DatasetError(
                f"nlvr2/{split}: no statement of truth {bool(labels[i])} for "
                f"pair {i}; the generator needs a fix (please report)"
            )
        statements.append(text)
    return {
        f"{split}_images": render_scenes(rng, scenes),
        **scenes.arrays(f"{split}_scene"),
        f"{split}_statement": np.array(statements),
        f"{split}_label": labels,
    }


#: Retrieval scenes hold at most four objects so that every caption fits ViLT's 40 text tokens.
RETRIEVAL_MAX_OBJECTS = 4


def _gen_retrieval(split: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    scenes = _sample(rng, n, max_objects=RETRIEVAL_MAX_OBJECTS)
    captions = [c for i in range(n) for c in L.describe(rng, scenes, i)]
    owner = np.repeat(np.arange(n, dtype=np.int64), L.CAPTIONS_PER_IMAGE)
    return {
        f"{split}_images": render_scenes(rng, scenes),
        **scenes.arrays(f"{split}_scene"),
        f"{split}_caption": np.array(captions),
        f"{split}_caption_image": owner,
    }


def _gen_classes(split: str, per_class: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    names = new_classes() if split == "test_new" else base_classes()
    labels = _balanced(rng, per_class * len(names), len(names))
    colour = np.array([COLOURS.index(names[k].split()[0]) for k in labels], np.int64)
    shape = np.array([SHAPES.index(names[k].split()[1]) for k in labels], np.int64)
    return {f"{split}_images": render_single_objects(rng, shape, colour), f"{split}_label": labels}


_GENERATORS: dict[str, Callable[[str, int, np.random.Generator], dict[str, np.ndarray]]] = {
    "vqa": _gen_vqa,
    "nlvr2": _gen_nlvr2,
    "retrieval": _gen_retrieval,
    "classes": _gen_classes,
}


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise DatasetError(f"unknown part {part!r} of the VL suite; parts: {', '.join(PARTS)}")


def generate_part(part: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Generate every split of ``part`` without touching the cache."""
    _check_part(part)
    sizes = SPLITS[part]
    arrays: dict[str, np.ndarray] = {}
    for (split, n), rng in zip(sizes.items(), _streams(part, seed, len(sizes)), strict=True):
        arrays.update(_GENERATORS[part](split, n, rng))
    return arrays


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$VPEFT_CACHE/vl-synthetic`` (default ``~/.cache/vpeft/vl-synthetic``)."""
    root = os.environ.get("VPEFT_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "vpeft"
    return base / "vl-synthetic"


def cache_path(part: str, seed: int = 0, cache_dir: str | Path | None = None) -> Path:
    _check_part(part)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return folder / f"{part}-g{GENERATOR_VERSION}-s{_check_seed(seed)}.npz"


def _read_cache(path: Path, part: str, seed: int) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = (str(npz["meta_part"]), int(npz["meta_seed"]), int(npz["meta_version"]))
            if meta != (part, seed, GENERATOR_VERSION):
                return None
            return {k: npz[k] for k in npz.files if not k.startswith("meta_")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def load_part(part: str, seed: int = 0, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Every array of ``part``, from a valid cache file or generated (then cached atomically)."""
    path = cache_path(part, seed, cache_dir)
    arrays = _read_cache(path, part, int(seed))
    if arrays is not None:
        return arrays
    arrays = generate_part(part, seed)
    meta = {
        "meta_part": np.array(part),
        "meta_seed": np.array(int(seed), np.int64),
        "meta_version": np.array(GENERATOR_VERSION, np.int64),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays, **meta)
    except OSError as exc:
        raise DatasetError(
            f"cannot write the VL suite cache {path} ({exc}); point $VPEFT_CACHE "
            "or cache_dir at a writable folder"
        ) from None
    return arrays


def _split(part: str, split: str) -> None:
    if split not in SPLITS[part]:
        raise DatasetError(
            f"unknown split {split!r} of the VL suite's {part!r}; splits: {', '.join(SPLITS[part])}"
        )


def scenes_of(part: str, split: str, seed: int = 0, cache_dir: str | Path | None = None) -> Scenes:
    """The scene attributes behind the images of a split (for checks and analyses)."""
    _split(part, split)
    return Scenes.from_arrays(load_part(part, seed, cache_dir), f"{split}_scene")


# --------------------------------------------------------------------------- datasets


def vqa_targets(
    answers: np.ndarray,
    qtypes: np.ndarray,
    annotators: int = 10,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Soft-score targets ``(Q, len(ANSWERS))``: one-hot on the exact answer when ``noise`` is
    0, else the soft scores of ``annotators`` simulated people (see the module docstring)."""
    if not 0.0 <= noise < 1.0 or annotators < 1:
        raise DatasetError(f"need 0 <= noise < 1 and annotators >= 1, got {noise}, {annotators}")
    if noise == 0.0:
        out = np.zeros((len(answers), len(L.ANSWERS)), np.float32)
        out[np.arange(len(answers)), answers] = 1.0
        return out
    rng = np.random.default_rng([seed, annotators, int(noise * 1e6)])
    people = []
    for answer, t in zip(answers, qtypes, strict=True):
        options = L.ANSWERS_BY_TYPE[L.QUESTION_TYPES[t]]
        right = rng.random(annotators) >= noise
        wrong = rng.integers(0, len(options), annotators)
        people.append(
            [L.ANSWERS[answer] if ok else options[w] for ok, w in zip(right, wrong, strict=True)]
        )
    return soft_targets(people, L.ANSWERS)


def vqa_split(
    split: str,
    seed: int = 0,
    tokenizer: Any = None,
    max_length: int = 24,
    annotators: int = 10,
    noise: float = 0.0,
    cache_dir: str | Path | None = None,
    mean=VILT_MEAN,
    std=VILT_STD,
) -> VqaDataset:
    """A split (``train``, ``val``, ``test``) of the suite's VQA part."""
    _split("vqa", split)
    a = load_part("vqa", seed, cache_dir)
    targets = vqa_targets(a[f"{split}_answer"], a[f"{split}_qtype"], annotators, noise, seed)
    return VqaDataset(
        ArrayImages(a[f"{split}_images"]),
        a[f"{split}_q_image"],
        [str(q) for q in a[f"{split}_question"]],
        targets,
        L.ANSWERS,
        tokenizer,
        max_length,
        mean,
        std,
        name=f"vl-vqa/{split}",
    )


def nlvr2_split(
    split: str,
    seed: int = 0,
    tokenizer: Any = None,
    max_length: int = 24,
    cache_dir: str | Path | None = None,
    mean=VILT_MEAN,
    std=VILT_STD,
) -> Nlvr2Dataset:
    """A split of the suite's NLVR2-like part (image ``2i`` left, ``2i + 1`` right)."""
    _split("nlvr2", split)
    a = load_part("nlvr2", seed, cache_dir)
    n = len(a[f"{split}_label"])
    pairs = np.arange(2 * n, dtype=np.int64).reshape(n, 2)
    return Nlvr2Dataset(
        ArrayImages(a[f"{split}_images"]),
        pairs,
        [str(s) for s in a[f"{split}_statement"]],
        a[f"{split}_label"],
        tokenizer,
        max_length,
        mean,
        std,
        name=f"vl-nlvr2/{split}",
    )


def retrieval_split(
    split: str,
    mode: str = "pairs",
    negatives: int = 1,
    seed: int = 0,
    tokenizer: Any = None,
    max_length: int = 40,
    cache_dir: str | Path | None = None,
    mean=VILT_MEAN,
    std=VILT_STD,
) -> RetrievalDataset:
    """A split of the suite's retrieval part in one of the `RetrievalDataset` modes."""
    _split("retrieval", split)
    a = load_part("retrieval", seed, cache_dir)
    return RetrievalDataset(
        ArrayImages(a[f"{split}_images"]),
        a[f"{split}_caption_image"],
        [str(c) for c in a[f"{split}_caption"]],
        mode,
        negatives,
        seed,
        tokenizer,
        max_length,
        mean,
        std,
        name=f"vl-retrieval/{split}/{mode}",
    )


def classes_split(
    split: str, seed: int = 0, cache_dir: str | Path | None = None, mean=CLIP_MEAN, std=CLIP_STD
) -> ClassImageDataset:
    """A split of the colour-shape classes; ``test_new`` uses `new_classes()`, the others
    `base_classes()`."""
    _split("classes", split)
    a = load_part("classes", seed, cache_dir)
    names = new_classes() if split == "test_new" else base_classes()
    return ClassImageDataset(
        ArrayImages(a[f"{split}_images"]),
        a[f"{split}_label"],
        names,
        mean,
        std,
        name=f"vl-classes/{split}",
    )


def generate_all(seed: int = 0, cache_dir: str | Path | None = None) -> None:
    """Generate (or validate the cache of) every part for ``seed``."""
    for part in PARTS:
        load_part(part, seed, cache_dir)
