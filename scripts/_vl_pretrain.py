"""Shared parts of `pretrain_tiny_vilt.py` and `pretrain_tiny_clip.py`: the pretraining corpus
(captioned scenes of the VL suite, from seeds the benchmarks never use) and the
writing of a transformers folder (config.json + model.safetensors + tokenizer.json) with the
recipe beside it."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from vpeft.atomic import atomic_path, atomic_write_text
from vpeft.data.vl import load_tokenizer, synthetic
from vpeft.data.vl.tokenizer import bundled_tokenizer_path

#: The suite seeds the corpus is drawn from: not 0, the seed of every benchmark and test split.
PRETRAIN_SEEDS = (101, 102)
#: The held-out set the recorded accuracy is measured on (its val split).
HELD_OUT_SEED = 103


def captioned_scenes(
    seeds: tuple[int, ...], split: str, mean: tuple, std: tuple
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Normalised images ``(N, 3, 64, 64)``, captions and each caption's image index."""
    images, captions, owner = [], [], []
    offset = 0
    for seed in seeds:
        a = synthetic.load_part("retrieval", seed)
        x = torch.from_numpy(a[f"{split}_images"]).permute(0, 3, 1, 2).float() / 255.0
        images.append(
            (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        )
        captions += [str(c) for c in a[f"{split}_caption"]]
        owner.append(torch.from_numpy(a[f"{split}_caption_image"]) + offset)
        offset += len(x)
    return torch.cat(images), captions, torch.cat(owner)


def tokenize(texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    tok = load_tokenizer()
    out = tok(texts, padding="max_length", truncation=True, max_length=max_length,
              return_tensors="pt")  # fmt: skip
    return {k: out[k].long() for k in ("input_ids", "attention_mask")}


def trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut padding columns beyond the longest text of the batch."""
    length = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :length] for k, v in batch.items()}


def save_folder(
    folder: Path, config: Any, state: dict[str, torch.Tensor], recipe: dict[str, Any]
) -> None:
    """config.json (architectures = the base class, so plain ``from_pretrained`` of the base
    model and of its head classes both work), model.safetensors (backbone under the base
    model's prefix, pretraining heads beside it), tokenizer.json, and the recipe JSON next to
    the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    with atomic_path(folder / "model.safetensors") as tmp:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    shutil.copyfile(bundled_tokenizer_path(), folder / "tokenizer.json")
    atomic_write_text(folder.parent / f"{folder.name}.json", json.dumps(recipe, indent=2) + "\n")


def environment(start: float) -> dict[str, Any]:
    return {
        "device": platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "data_generator_version": synthetic.GENERATOR_VERSION,
        "train_seconds": round(time.time() - start, 1),
    }


def negative_images(owner: torch.Tensor, num_images: int, gen: torch.Generator) -> torch.Tensor:
    """For each caption, a random image other than its own."""
    shift = torch.randint(1, num_images, owner.shape, generator=gen)
    return (owner + shift) % num_images


def as_list(x: Any) -> list:
    return [float(v) for v in np.asarray(x).reshape(-1)]
