"""``--data vl-synthetic:PART`` for `vpeft train` / `vpeft eval`: the procedural VL suite as
task + splits for a vision-language backbone.

===============  ==========================================================================
PART             task and splits (train / val / test)
===============  ==========================================================================
``vqa``          `VqaTask` (31 answers, VQA score); questions of the ``vqa`` part
``nlvr2``        `Nlvr2Task` (pair setting: ViLT once per image); the ``nlvr2`` part
``retrieval``    single-stream models (ViLT): `RetrievalTask` (ITM, one random negative per
                 caption) evaluated on every (image, caption) pair of val / test; two-tower
                 models (CLIP): `ContrastiveRetrievalTask` on (image, caption) pairs
``clip-base``    `ZeroShotClassificationTask` on the base classes: train (16 shots per class),
                 val, test_base
``clip-new``     the same training on the base classes; evaluation on ``test_new`` with the
                 new class names (CoCoOp's base-to-new protocol)
===============  ==========================================================================

Normalisation follows the backbone family (ViLT: 0.5 / 0.5, CLIP: CLIP's); texts go through
the backbone's tokenizer (the bundled suite tokenizer for the bundled models).

The standard on-disk layouts (`vpeft.data.vl.readers`) are kinds of their own, each giving the
task and splits of the part it stands for; images are resized to the backbone's
``image_size``, texts tokenized by the tokenizer found beside the backbone's weights (its
folder's ``tokenizer.json``; never the hub) and cut at its text positions (at most 40):

=====================  ==========  ======================================================
``--data``             as part     splits train / val / test
=====================  ==========  ======================================================
``vqa-v2:DIR``         ``vqa``     ``train2014`` / ``val2014`` / ``val2014`` (test-dev has
                                   no public answers); vocabulary: the 3,129 most frequent
                                   answers of train2014, targets the official soft scores
``nlvr2:DIR``          ``nlvr2``   ``train`` / ``dev`` / ``test1``
``flickr30k:DIR``      retrieval   Karpathy ``train`` / ``val`` / ``test``
``clip-base:DIR``      clip-base   class folders ``train`` / ``val`` / ``test`` with
                                   ``classnames.txt``, base half of the classes
``clip-new:DIR``       clip-new    the same training; ``test`` scored on the new half
=====================  ==========  ======================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

PARTS: tuple[str, ...] = ("vqa", "nlvr2", "retrieval", "clip-base", "clip-new")
KIND = "vl-synthetic"
#: on-disk kinds and the part each stands for
DISK_KINDS: dict[str, str] = {
    "vqa-v2": "vqa",
    "nlvr2": "nlvr2",
    "flickr30k": "retrieval",
    "clip-base": "clip-base",
    "clip-new": "clip-new",
}
#: every ``--data`` kind that builds a VL task
KINDS: tuple[str, ...] = (KIND, *DISK_KINDS)
#: split names (train, val, test) of each on-disk kind
DISK_SPLITS: dict[str, tuple[str, str, str]] = {
    "vqa-v2": ("train2014", "val2014", "val2014"),
    "nlvr2": ("train", "dev", "test1"),
    "flickr30k": ("train", "val", "test"),
    "clip-base": ("train", "val", "test"),
    "clip-new": ("train", "val", "test"),
}
MAX_TEXT_LENGTH = 40  # ViLT's text positions; CLIP's prompts are cut by the task


@dataclass
class VLData:
    """The task to train and its datasets by role (``train`` / ``val`` / ``test``);
    ``new_classes``: for base-to-new (``clip-new``), the class names ``test`` is scored with."""

    task: Any
    splits: dict[str, Any]
    names: dict[str, str]
    new_classes: tuple[str, ...] | None = None


def part_of(kind: str, root: str) -> str:
    """The part a ``--data KIND:ROOT`` stands for (``vl-synthetic:vqa`` and ``vqa-v2:DIR``:
    ``vqa``)."""
    return root if kind == KIND else DISK_KINDS[kind]


def new_half(kind: str, root: str) -> tuple[str, str]:
    """The ``(kind, root)`` whose test split holds the new classes of a base-to-new set."""
    return (KIND, "clip-new") if kind == KIND else ("clip-new", root)


def load_vl(kind: str, root: str, model: Any, roles: tuple[str, ...] = ("train", "val", "test"),
            seed: int = 0) -> VLData:  # fmt: skip
    """The task and the datasets of `roles` for ``--data KIND:ROOT`` on `model`."""
    if kind == KIND:
        return vl_data(root, model, roles, seed)
    from .vl_disk import disk_vl_data

    return disk_vl_data(kind, root, model, roles, seed)


def check_family(label: str, part: str, family: str) -> None:
    """`ConfigError` when `part` does not run on a backbone of `family`."""
    two_tower = family == "hf-clip"
    if part.startswith("clip") and not two_tower:
        raise ConfigError(f"--data {label} needs a two-tower CLIP backbone, not {family}")
    if two_tower and part not in ("retrieval", "clip-base", "clip-new"):
        raise ConfigError(
            f"--data {label} needs a single-stream VL backbone (ViLT); CLIP takes "
            "retrieval, clip-base and clip-new"
        )


def _family(model: Any) -> str:
    from ..backbones import describe

    return describe(model).family


def _tokenizer(model: Any) -> Any:
    from ..backbones.text import tokenizer_for

    try:
        return tokenizer_for(model)
    except ConfigError:
        return None  # the data side's default: the bundled suite tokenizer


def vl_data(part: str, model: Any, roles: tuple[str, ...] = ("train", "val", "test"),
            seed: int = 0) -> VLData:  # fmt: skip
    """The task and the datasets of `roles` for ``vl-synthetic:<part>`` on `model`."""
    from ..data.vl import synthetic as S
    from ..data.vl.datasets import CLIP_MEAN, CLIP_STD, VILT_MEAN, VILT_STD
    from ..tasks.vl import (
        ContrastiveRetrievalTask,
        Nlvr2Task,
        VqaTask,
        ZeroShotClassificationTask,
    )

    if part not in PARTS:
        raise ConfigError(f"--data {KIND}:{part}: unknown part; parts: {', '.join(PARTS)}")
    family = _family(model)
    two_tower = family == "hf-clip"
    check_family(f"{KIND}:{part}", part, family)
    norm = dict(mean=CLIP_MEAN, std=CLIP_STD) if two_tower else dict(mean=VILT_MEAN, std=VILT_STD)
    text = dict(tokenizer=_tokenizer(model), seed=seed)
    if part.startswith("clip"):
        test_split = "test_new" if part == "clip-new" else "test_base"
        names = {"train": "train", "val": "val", "test": test_split}
        splits = {r: S.classes_split(names[r], seed) for r in roles}
        task = ZeroShotClassificationTask("clip", class_names=S.base_classes())
        new = S.new_classes() if part == "clip-new" else None
        return VLData(task, splits, names, new)
    names = {"train": "train", "val": "val", "test": "test"}
    if part == "vqa":
        splits = {r: S.vqa_split(names[r], **text, **norm) for r in roles}
        return VLData(VqaTask("vqa", num_answers=len(splits[roles[0]].answers)), splits, names)
    if part == "nlvr2":
        splits = {r: S.nlvr2_split(names[r], **text, **norm) for r in roles}
        return VLData(Nlvr2Task("nlvr2"), splits, names)
    if two_tower:
        splits = {r: S.retrieval_split(names[r], "pairs", **text, **norm) for r in roles}
        gallery = splits.get("test") or splits[roles[-1]]
        task = ContrastiveRetrievalTask(
            "retrieval", num_images=gallery.num_images, num_texts=gallery.num_texts
        )
        return VLData(task, splits, names)
    splits = {
        r: S.retrieval_split(names[r], "itm" if r == "train" else "all", **text, **norm)
        for r in roles
    }
    return VLData(itm_task(splits, roles), splits, names)


def evaluation_task(vl: VLData, task: Any) -> Any:
    """The task as evaluated on ``vl``'s test split: base-to-new scores the new classes' names."""
    return task if vl.new_classes is None else task.with_classes(vl.new_classes)


def itm_task(splits: dict[str, Any], roles: tuple[str, ...]) -> Any:
    """`RetrievalTask` sized by the evaluated galleries (which must be of one size)."""
    from ..tasks.vl import RetrievalTask

    evaluated = [splits[r] for r in roles if r != "train"]
    sizes = {(d.num_images, d.num_texts) for d in evaluated}
    if len(sizes) > 1:
        raise ConfigError(
            "the ITM recall state is sized by one gallery; evaluate val and test of equal size "
            f"(got {sorted(sizes)} images, captions)"
        )
    num_images, num_texts = next(iter(sizes)) if sizes else (0, 0)
    return RetrievalTask("retrieval", num_images=num_images, num_texts=num_texts)


def results(history_record: dict[str, Any], split: str) -> dict[str, float]:
    """``{task/metric: value}`` of one split from a training record."""
    prefix = f"{split}/"
    return {k[len(prefix) :]: v for k, v in history_record.items() if k.startswith(prefix)}
