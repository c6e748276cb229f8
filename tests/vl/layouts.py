"""Miniatures of the standard VL layouts (VQA v2, NLVR2, Flickr30k Karpathy, CLIP class folders
with names), written by the tests: tiny images and json, with the counts they hold."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: answers the miniature's questions have (multiple-choice answer of question q: ANSWERS[q % 4])
ANSWERS = ("yes", "no", "2", "red")
#: (images, questions per image) of the VQA miniature's splits
VQA_COUNTS = {"train2014": (4, 2), "val2014": (3, 2)}
#: statements of the NLVR2 miniature's splits
NLVR2_COUNTS = {"train": 4, "dev": 2, "test1": 3}
#: images per Karpathy split of the Flickr30k miniature (2 captions each)
FLICKR_COUNTS = {"train": 4, "val": 3, "test": 3}
FLICKR_CAPTIONS = 2
#: class folders and names of the CLIP miniature (sorted folders: base = first 2, new = last 2)
CLASSES = {"n01": "red circle", "n02": "blue square", "n03": "green star", "n04": "grey ring"}
#: images per class folder in each split
CLASS_COUNTS = {"train": 2, "val": 1, "test": 2}


def _image(path: Path, seed: int, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(path, format=fmt)


def human_answers(q: int) -> list[str]:
    """The 10 human answers of question ``q``: ``q % 5 + 1`` give the multiple-choice answer,
    the rest the next answer (soft scores 0.3 · 0.6 · 0.9 · 1 · 1 by count)."""
    main, other = ANSWERS[q % 4], ANSWERS[(q + 1) % 4]
    m = q % 5 + 1
    return [main] * m + [other] * (10 - m)


def write_vqa(root: Path) -> dict[str, int]:
    """``root`` in the VQA v2 layout; returns the question count per split."""
    root.mkdir(parents=True, exist_ok=True)
    counts, q = {}, 0
    for s, (split, (images, per_image)) in enumerate(VQA_COUNTS.items()):
        questions, annotations = [], []
        for i in range(images):
            image_id = 100 * (s + 1) + i
            _image(root / split / f"COCO_{split}_{image_id:012d}.jpg", image_id, "JPEG")
            for _ in range(per_image):
                words = ["is", "it", "red"] if q % 2 else ["how", "many", "circles"]
                questions.append(
                    {"image_id": image_id, "question": " ".join(words) + "?", "question_id": q}
                )
                people = human_answers(q)
                annotations.append(
                    {
                        "question_id": q,
                        "image_id": image_id,
                        "multiple_choice_answer": ANSWERS[q % 4],
                        "answers": [
                            {"answer": a, "answer_id": k + 1} for k, a in enumerate(people)
                        ],
                    }
                )
                q += 1
        (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(
            json.dumps({"questions": questions})
        )
        (root / f"v2_mscoco_{split}_annotations.json").write_text(
            json.dumps({"annotations": annotations})
        )
        counts[split] = len(questions)
    return counts


def write_nlvr2(root: Path) -> dict[str, int]:
    """``root`` in the NLVR2 layout (train images under ``images/train/<dir>/``, dev and test1
    under ``<split>/``); returns the statement count per split."""
    for s, (split, n) in enumerate(NLVR2_COUNTS.items()):
        lines = []
        for k in range(n):
            stem = f"{split}-{s}-{k}"
            entry = {
                "identifier": f"{stem}-0",
                "sentence": "there is a red circle",
                "label": "True" if k % 2 == 0 else "False",
            }
            folder = root / split
            if split == "train":
                entry["directory"] = k % 2
                folder = root / "images" / "train" / str(k % 2)
            for side in (0, 1):
                _image(folder / f"{stem}-img{side}.png", 1000 * s + 10 * k + side)
            lines.append(json.dumps(entry))
        (root / f"{split}.json").write_text("\n".join(lines) + "\n")
    return dict(NLVR2_COUNTS)


def write_flickr30k(root: Path) -> dict[str, tuple[int, int]]:
    """``root`` with ``dataset_flickr30k.json`` and ``flickr30k-images/``; returns
    ``(images, captions)`` per split."""
    images = []
    for split, n in FLICKR_COUNTS.items():
        for i in range(n):
            name = f"{split}{i}.jpg"
            _image(root / "flickr30k-images" / name, zlib.crc32(name.encode()) % 1000, "JPEG")
            captions = [
                {"raw": f"a red circle and {c + 1} blue squares"} for c in range(FLICKR_CAPTIONS)
            ]
            images.append({"filename": name, "split": split, "sentences": captions})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images}))
    return {s: (n, n * FLICKR_CAPTIONS) for s, n in FLICKR_COUNTS.items()}


def write_classes(root: Path) -> dict[str, int]:
    """``root`` with ``classnames.txt`` and ``train/ val/ test/<folder>/*.png``; returns images
    per class folder in each split."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("".join(f"{f} {n}\n" for f, n in CLASSES.items()))
    for split, n in CLASS_COUNTS.items():
        for c, folder in enumerate(CLASSES):
            for i in range(n):
                _image(root / split / folder / f"{i}.png", 100 * c + i + len(split))
    return dict(CLASS_COUNTS)
