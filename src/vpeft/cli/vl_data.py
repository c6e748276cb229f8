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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

PARTS: tuple[str, ...] = ("vqa", "nlvr2", "retrieval", "clip-base", "clip-new")
KIND = "vl-synthetic"


@dataclass
class VLData:
    """The task to train and its datasets by role (``train`` / ``val`` / ``test``)."""

    task: Any
    splits: dict[str, Any]
    names: dict[str, str]


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
        RetrievalTask,
        VqaTask,
        ZeroShotClassificationTask,
    )

    if part not in PARTS:
        raise ConfigError(f"--data {KIND}:{part}: unknown part; parts: {', '.join(PARTS)}")
    family = _family(model)
    two_tower = family == "hf-clip"
    norm = dict(mean=CLIP_MEAN, std=CLIP_STD) if two_tower else dict(mean=VILT_MEAN, std=VILT_STD)
    text = dict(tokenizer=_tokenizer(model), seed=seed)
    if part.startswith("clip"):
        if not two_tower:
            raise ConfigError(f"--data {KIND}:{part} needs a two-tower CLIP backbone, not {family}")
        test_split = "test_new" if part == "clip-new" else "test_base"
        names = {"train": "train", "val": "val", "test": test_split}
        splits = {r: S.classes_split(names[r], seed) for r in roles}
        task = ZeroShotClassificationTask("clip", class_names=S.base_classes())
        return VLData(task, splits, names)
    if two_tower and part != "retrieval":
        raise ConfigError(
            f"--data {KIND}:{part} needs a single-stream VL backbone (ViLT); CLIP takes "
            "retrieval, clip-base and clip-new"
        )
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
    evaluated = [splits[r] for r in roles if r != "train"]
    sizes = {(d.num_images, d.num_texts) for d in evaluated}
    if len(sizes) > 1:
        raise ConfigError(
            "the ITM recall state is sized by one gallery; evaluate val and test of equal size"
        )
    num_images, num_texts = next(iter(sizes)) if sizes else (0, 0)
    task = RetrievalTask("retrieval", num_images=num_images, num_texts=num_texts)
    return VLData(task, splits, names)


def evaluation_task(part: str, task: Any) -> Any:
    """The task as evaluated on ``part``: ``clip-new`` scores the new classes' names."""
    if part == "clip-new":
        from ..data.vl import new_classes

        return task.with_classes(new_classes())
    return task


def results(history_record: dict[str, Any], split: str) -> dict[str, float]:
    """``{task/metric: value}`` of one split from a training record."""
    prefix = f"{split}/"
    return {k[len(prefix) :]: v for k, v in history_record.items() if k.startswith(prefix)}
