"""Classify images with named adapters: decode, preprocess as each adapter was trained (the
preprocessing recorded in its file), run one mixed-adapter batch, top-k labels and scores."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.transforms import DataConfig, data_config_for
from ..errors import ConfigError, VpeftError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class ImageError(VpeftError):
    """The input is not an image we can decode."""


def decode_image(data: bytes | str | Path) -> torch.Tensor:
    """An RGB float tensor (3, H, W) in [0, 1] from image bytes or a file path."""
    from PIL import Image, UnidentifiedImageError

    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else Path(data)
        with Image.open(source) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"not a readable image ({type(err).__name__}: {err})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def image_files(sources: Sequence[str | Path]) -> list[Path]:
    """The image files named by `sources` (files, or folders searched recursively), sorted."""
    out: list[Path] = []
    for s in map(Path, sources):
        if s.is_dir():
            out += sorted(p for p in s.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif s.is_file():
            out.append(s)
        else:
            raise ConfigError(f"no such image file or folder: {s}")
    if not out:
        raise ConfigError(
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {list(map(str, sources))}"
        )
    return out


def data_config(pm: Any, name: str) -> DataConfig:
    """The preprocessing adapter `name` was trained with (else the backbone's own)."""
    from ..adapters import describe_adapter

    recorded = describe_adapter(pm, name).get("preprocessing") or {}
    default = data_config_for(pm.model)
    size = recorded.get("input_size") or default.input_size
    size = tuple(size[-2:])
    return DataConfig(
        size,  # type: ignore[arg-type]
        tuple(recorded.get("mean") or default.mean),  # type: ignore[arg-type]
        tuple(recorded.get("std") or default.std),  # type: ignore[arg-type]
        recorded.get("interpolation") or default.interpolation,
    )


@dataclass
class Prediction:
    label: str
    score: float
    index: int

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


class Predictor:
    """Top-k predictions of a named-adapter model; requests for any adapters share batches."""

    def __init__(self, pm: Any) -> None:
        self.pm = pm.eval()
        self.transforms = {n: data_config(pm, n).transform() for n in pm.adapters}
        self.labels = {n: self._labels(n) for n in pm.adapters}

    def _labels(self, name: str) -> list[str] | None:
        from ..adapters import describe_adapter

        return describe_adapter(self.pm, name).get("classes")

    def describe(self) -> list[dict[str, Any]]:
        from ..adapters import describe_adapter

        return [describe_adapter(self.pm, n) for n in self.pm.adapters]

    def prepare(self, name: str, image: torch.Tensor) -> torch.Tensor:
        if name not in self.transforms:
            raise ConfigError(f"unknown adapter {name!r}; adapters: {list(self.transforms)}")
        return self.transforms[name](image)

    @torch.inference_mode()
    def predict(
        self, requests: Sequence[tuple[str, torch.Tensor]], top_k: int = 5
    ) -> list[list[Prediction]]:
        """`requests`: (adapter, decoded image); one mixed batch per input size."""
        prepared = [self.prepare(n, img) for n, img in requests]
        results: list[list[Prediction]] = [[] for _ in requests]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(prepared):
            by_size.setdefault(tuple(x.shape), []).append(i)
        for rows in by_size.values():
            batch = torch.stack([prepared[i] for i in rows])
            names = [requests[i][0] for i in rows]
            outputs = self.pm(batch, adapter_names=names)
            for i, name, logits in zip(rows, names, outputs, strict=True):
                results[i] = self._top_k(name, logits, top_k)
        return results

    def _top_k(self, name: str, logits: torch.Tensor, k: int) -> list[Prediction]:
        probs = logits.float().softmax(-1)
        scores, index = probs.topk(min(k, probs.numel()))
        labels = self.labels[name]
        return [
            Prediction(labels[j] if labels and j < len(labels) else str(j), float(s), j)
            for s, j in zip(scores.tolist(), index.tolist(), strict=True)
        ]
