"""The on-disk VL kinds of ``--data`` (``vqa-v2:DIR``, ``nlvr2:DIR``, ``flickr30k:DIR``,
``clip-base:DIR``, ``clip-new:DIR``; table in `vpeft.cli.vl_data`): the readers of
`vpeft.data.vl.readers` at the backbone's image size, with the backbone's own tokenizer.

Each missing piece is an error naming it: the folder (`DataSpec.parse`), a json / class-names
file, image files, a split folder (the readers) and the tokenizer (`disk_tokenizer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .vl_data import DISK_KINDS, DISK_SPLITS, MAX_TEXT_LENGTH, VLData, check_family, itm_task


def image_size_of(model: Any) -> int:
    """The square input size of a transformers VL backbone (CLIP: its vision tower's)."""
    config = model.config
    vision = getattr(config, "vision_config", None) or config
    return int(vision.image_size)


def disk_tokenizer(model: Any, label: str) -> Any:
    """The backbone's tokenizer (`vpeft.backbones.text.tokenizer_for`), or a `DatasetError`
    naming the ``tokenizer.json`` that is missing."""
    from ..backbones.text import TOKENIZER_ATTR, tokenizer_for
    from ..errors import ConfigError

    try:
        return tokenizer_for(model)
    except ConfigError:
        pass
    given = getattr(model, TOKENIZER_ATTR, None)
    config = getattr(model, "config", None)
    folder = given or getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "")
    where = f"{Path(folder) / 'tokenizer.json'} is missing" if folder else "none was found"
    raise DatasetError(
        f"--data {label}: the texts need the backbone's tokenizer and {where}; load the backbone "
        "from a local transformers folder holding tokenizer.json beside config.json "
        "(--backbone DIR, or hf:<Class> --weights DIR); vpeft does not download tokenizers"
    )


def _splits(roles: tuple[str, ...], names: dict[str, str], read: Any) -> dict[str, Any]:
    """``read(split name)`` per role, each split read once (VQA v2's val and test share one)."""
    cache: dict[str, Any] = {}
    for role in roles:
        if names[role] not in cache:
            cache[names[role]] = read(names[role], role)
    return {role: cache[names[role]] for role in roles}


def disk_vl_data(kind: str, root: str, model: Any, roles: tuple[str, ...], seed: int = 0) -> VLData:
    """The task and datasets of `roles` for ``--data KIND:ROOT`` (an on-disk layout)."""
    from ..backbones import describe
    from ..backbones.text import text_positions
    from ..data.vl import readers as R
    from ..data.vl.datasets import CLIP_MEAN, CLIP_STD, VILT_MEAN, VILT_STD
    from ..tasks.vl import (
        ContrastiveRetrievalTask,
        Nlvr2Task,
        VqaTask,
        ZeroShotClassificationTask,
    )

    label = f"{kind}:{root}"
    part = DISK_KINDS[kind]
    family = describe(model).family
    check_family(label, part, family)
    two_tower = family == "hf-clip"
    names = dict(zip(("train", "val", "test"), DISK_SPLITS[kind], strict=True))
    size = image_size_of(model)
    norm = dict(mean=CLIP_MEAN, std=CLIP_STD) if two_tower else dict(mean=VILT_MEAN, std=VILT_STD)
    if part.startswith("clip"):
        disk_tokenizer(model, label)  # the class prompts are tokenized by the task
        folder_names = R.read_class_names(Path(root) / "classnames.txt")
        base, new = R.base_new_split(sorted(folder_names))
        if part == "clip-new" and not new:
            raise DatasetError(f"{Path(root) / 'classnames.txt'} lists one class: no new half")

        def classes(split: str, role: str) -> Any:
            half = "new" if part == "clip-new" and role == "test" else "base"
            return R.class_folder(root, split, half, image_size=size, **norm)

        splits = _splits(roles, names, classes)
        task = ZeroShotClassificationTask("clip", class_names=[folder_names[f] for f in base])
        new_names = tuple(folder_names[f] for f in new) if part == "clip-new" else None
        return VLData(task, splits, names, new_names)
    text = dict(
        tokenizer=disk_tokenizer(model, label),
        max_length=min(MAX_TEXT_LENGTH, text_positions(model)),
        image_size=size,
        **norm,
    )
    if part == "vqa":
        answers = R.vqa_v2_answers(root, split=names["train"])
        splits = _splits(roles, names, lambda s, _: R.vqa_v2(root, s, answers=answers, **text))
        return VLData(VqaTask("vqa", num_answers=len(answers)), splits, names)
    if part == "nlvr2":
        splits = _splits(roles, names, lambda s, _: R.nlvr2(root, s, **text))
        return VLData(Nlvr2Task("nlvr2"), splits, names)
    if two_tower:
        splits = _splits(roles, names, lambda s, _: R.flickr30k(root, s, "pairs", **text))
        gallery = splits.get("test") or splits[roles[-1]]
        task = ContrastiveRetrievalTask(
            "retrieval", num_images=gallery.num_images, num_texts=gallery.num_texts
        )
        return VLData(task, splits, names)

    def itm(split: str, role: str) -> Any:
        mode = "itm" if role == "train" else "all"
        return R.flickr30k(root, split, mode, seed=seed, **text)

    splits = _splits(roles, names, itm)
    return VLData(itm_task(splits, roles), splits, names)
