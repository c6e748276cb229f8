"""Map-style datasets of vision-language samples, ready for the models: every item is a dict
of tensors (``pixel_values`` float ``(3, H, W)`` normalised, ``pixel_mask`` int64 ``(H, W)``,
``input_ids`` / ``attention_mask`` / ``token_type_ids`` int64 ``(L,)``) plus the target fields
the `vpeft.tasks.vl` tasks read. Texts are tokenized once, at construction.

Images come from an `ImageSource`: `ArrayImages` (uint8 arrays, the procedural suite) or
`FileImages` (paths, the readers; resized to a square ``image_size`` — ViLT's own processor
resizes the shorter side and pads, which ``pixel_mask`` would then mark; with one fixed size
the mask is all ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vpeft.data.readers import load_image
from vpeft.errors import DatasetError

from .tokenizer import encode, load_tokenizer

#: ViLT's image normalisation (mean = std = 0.5 per channel).
VILT_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
VILT_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
#: CLIP's image normalisation.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


class ImageSource:
    """Images by index as float ``(3, H, W)`` tensors in ``[0, 1]``."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __call__(self, index: int) -> torch.Tensor:
        raise NotImplementedError


class ArrayImages(ImageSource):
    """uint8 ``(N, H, W, 3)`` images held in memory."""

    def __init__(self, images: np.ndarray) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DatasetError(
                f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}"
            )
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __call__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div_(255.0)


class FileImages(ImageSource):
    """Image files read lazily and resized (bilinear, antialiased) to ``image_size`` squared."""

    def __init__(self, paths: Sequence[Path], image_size: int) -> None:
        self.paths = list(paths)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, index: int) -> torch.Tensor:
        image = load_image(self.paths[index])
        if tuple(image.shape[-2:]) != (self.image_size, self.image_size):
            image = F.interpolate(
                image[None],
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0]
        return image.clamp_(0.0, 1.0)


class _VLDataset(Dataset):
    """Shared parts: the image source, normalisation and the tokenized texts."""

    def __init__(
        self,
        images: ImageSource,
        texts: Sequence[str],
        tokenizer: Any,
        max_length: int,
        mean: Sequence[float],
        std: Sequence[float],
        name: str,
    ) -> None:
        self.images = images
        self.texts = list(texts)
        self.tokenizer = load_tokenizer() if tokenizer is None else tokenizer
        self.max_length = int(max_length)
        self.encoded = encode(self.tokenizer, self.texts, self.max_length) if self.texts else {}
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.name = name

    def _image(self, index: int) -> dict[str, torch.Tensor]:
        image = self.images(int(index))
        return {
            "pixel_values": (image - self.mean) / self.std,
            "pixel_mask": torch.ones(image.shape[-2:], dtype=torch.int64),
        }

    def _text(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[int(index)] for k, v in self.encoded.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)})"


class VqaDataset(_VLDataset):
    """Questions about images: item = image + question fields + ``vqa_targets`` (float
    ``(num_answers,)`` soft scores) + ``question_id``."""

    def __init__(
        self,
        images: ImageSource,
        image_index: Sequence[int],
        questions: Sequence[str],
        targets: np.ndarray,
        answers: Sequence[str],
        tokenizer: Any = None,
        max_length: int = 24,
        mean: Sequence[float] = VILT_MEAN,
        std: Sequence[float] = VILT_STD,
        question_ids: Sequence[int] | None = None,
        name: str = "vqa",
    ) -> None:
        super().__init__(images, questions, tokenizer, max_length, mean, std, name)
        self.image_index = np.asarray(image_index, dtype=np.int64)
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        self.answers = tuple(answers)
        if self.targets.shape != (len(self.texts), len(self.answers)):
            raise DatasetError(
                f"{name}: targets {tuple(self.targets.shape)} must be (questions="
                f"{len(self.texts)}, answers={len(self.answers)})"
            )
        ids = np.arange(len(self.texts)) if question_ids is None else np.asarray(question_ids)
        self.question_ids = torch.as_tensor(ids, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            **self._image(self.image_index[index]),
            **self._text(index),
            "vqa_targets": self.targets[index],
            "question_id": self.question_ids[index],
        }


class Nlvr2Dataset(_VLDataset):
    """Statements about image pairs: ``pixel_values`` ``(2, 3, H, W)``, ``pixel_mask``
    ``(2, H, W)`` (left image first), text fields, ``labels`` (1 = true)."""

    def __init__(
        self,
        images: ImageSource,
        pairs: np.ndarray,
        statements: Sequence[str],
        labels: Sequence[int],
        tokenizer: Any = None,
        max_length: int = 24,
        mean: Sequence[float] = VILT_MEAN,
        std: Sequence[float] = VILT_STD,
        name: str = "nlvr2",
    ) -> None:
        super().__init__(images, statements, tokenizer, max_length, mean, std, name)
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if not len(self.pairs) == len(self.texts) == len(self.labels):
            raise DatasetError(
                f"{name}: {len(self.pairs)} pairs, {len(self.texts)} statements "
                f"and {len(self.labels)} labels must agree"
            )

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        left, right = (self._image(i) for i in self.pairs[index])
        return {
            "pixel_values": torch.stack([left["pixel_values"], right["pixel_values"]]),
            "pixel_mask": torch.stack([left["pixel_mask"], right["pixel_mask"]]),
            **self._text(index),
            "labels": self.labels[index],
        }


RETRIEVAL_MODES = ("pairs", "itm", "all")


class RetrievalDataset(_VLDataset):
    """Captions of images, for retrieval. ``caption_image[t]`` is the image of caption ``t``.

    Modes (each item carries ``match = {"label", "image_id", "text_id"}``):

    - ``"pairs"``: one item per caption with its image (contrastive training, `EmbeddingRecall`
      evaluation);
    - ``"itm"``: per caption, the matching pair then ``negatives`` pairs with another image
      drawn at random (seeded by ``seed`` and the item index, so epochs repeat exactly);
    - ``"all"``: every (image, caption) pair, image-major (`PairScoreRecall` evaluation).
    """

    def __init__(
        self,
        images: ImageSource,
        caption_image: Sequence[int],
        captions: Sequence[str],
        mode: str = "pairs",
        negatives: int = 1,
        seed: int = 0,
        tokenizer: Any = None,
        max_length: int = 40,
        mean: Sequence[float] = VILT_MEAN,
        std: Sequence[float] = VILT_STD,
        name: str = "retrieval",
    ) -> None:
        if mode not in RETRIEVAL_MODES:
            raise DatasetError(f"unknown retrieval mode {mode!r}; modes: {RETRIEVAL_MODES}")
        super().__init__(images, captions, tokenizer, max_length, mean, std, name)
        self.caption_image = np.asarray(caption_image, dtype=np.int64)
        self.mode, self.negatives, self.seed = mode, int(negatives), int(seed)
        self.num_images, self.num_texts = len(images), len(self.texts)
        if mode == "itm" and (self.negatives < 1 or self.num_images < 2):
            raise DatasetError(f"{name}: 'itm' needs negatives >= 1 and at least two images")

    def __len__(self) -> int:
        if self.mode == "all":
            return self.num_images * self.num_texts
        return self.num_texts * (1 + self.negatives if self.mode == "itm" else 1)

    def pair(self, index: int) -> tuple[int, int]:
        """(image id, text id) of item ``index``."""
        if self.mode == "all":
            return index // self.num_texts, index % self.num_texts
        if self.mode == "pairs":
            return int(self.caption_image[index]), index
        text, slot = divmod(index, 1 + self.negatives)
        image = int(self.caption_image[text])
        if slot:
            rng = np.random.default_rng([self.seed, index])
            image = (image + 1 + int(rng.integers(self.num_images - 1))) % self.num_images
        return image, text

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, text = self.pair(int(index))
        label = int(self.caption_image[text] == image)
        match = {
            "label": torch.tensor(label),
            "image_id": torch.tensor(image),
            "text_id": torch.tensor(text),
        }
        return {**self._image(image), **self._text(text), "match": match}


class ClassImageDataset(_VLDataset):
    """Images with class labels for CLIP zero-shot / few-shot classification: ``pixel_values``
    (CLIP normalisation by default) and ``labels``; ``classes`` are the class names."""

    def __init__(
        self,
        images: ImageSource,
        labels: Sequence[int],
        classes: Sequence[str],
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        name: str = "classes",
    ) -> None:
        super().__init__(images, [], tokenizer=False, max_length=0, mean=mean, std=std, name=name)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.classes = tuple(classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self._image(index)["pixel_values"], "labels": self.labels[index]}
