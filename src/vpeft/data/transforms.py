"""The evaluation protocol's image transforms: resize to the backbone's input size and normalise.

Transforms take float32 tensors in ``[0, 1]``, either one image ``(3, H, W)`` or a batch
``(N, 3, H, W)``, and declare ``batched = True`` so :meth:`ArrayImageDataset.as_tensors` can feed
them whole batches. Following VTAB-1k, evaluation uses no augmentation and no crop: images are
resized straight to the input size. :func:`make_transform` with ``augment=True`` adds a light,
per-image random resized crop and horizontal flip for training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vpeft.errors import DatasetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "area")


@dataclass(frozen=True)
class DataConfig:
    """What a backbone expects: input size ``(H, W)``, normalisation and resize interpolation."""

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"

    def transform(self, augment: bool = False, hflip: bool = True) -> Resize:
        """The transform for this configuration (see :func:`make_transform`)."""
        return make_transform(
            self.input_size, self.mean, self.std, self.interpolation, augment=augment, hflip=hflip
        )


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    values = tuple(int(s) for s in size)
    if len(values) == 3:  # timm's (C, H, W)
        values = values[1:]
    if len(values) != 2 or min(values) <= 0:
        raise DatasetError(f"image size must be an int or (H, W) of positive ints, got {size!r}")
    return values  # type: ignore[return-value]


def _check_interpolation(mode: str) -> str:
    if mode not in INTERPOLATIONS:
        raise DatasetError(
            f"unknown interpolation {mode!r}; valid interpolations: {', '.join(INTERPOLATIONS)}"
        )
    return mode


class Resize:
    """Resize (if needed) and normalise; no augmentation. Accepts ``(3, H, W)`` or batches."""

    batched = True

    def __init__(
        self,
        size: int | Sequence[int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bicubic",
    ) -> None:
        self.size = _pair(size)
        self.interpolation = _check_interpolation(interpolation)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise DatasetError(
                f"mean and std need three values each (std > 0), got {mean!r} and {std!r}"
            )
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation!r}, "
            f"mean={tuple(self.mean.flatten().tolist())}, std={tuple(self.std.flatten().tolist())})"
        )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        batch = image.unsqueeze(0) if image.dim() == 3 else image
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise DatasetError(
                "transforms expect float tensors (3, H, W) or (N, 3, H, W), got "
                f"{tuple(image.shape)}"
            )
        batch = self.resize(self.prepare(batch.float()))
        batch = (batch - self.mean.to(batch.device)) / self.std.to(batch.device)
        return batch[0] if image.dim() == 3 else batch

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """Hook for augmentation before resizing (identity here)."""
        return batch

    def resize(self, batch: torch.Tensor) -> torch.Tensor:
        if tuple(batch.shape[-2:]) == self.size:
            return batch
        mode = self.interpolation
        kwargs: dict[str, Any] = {}
        if mode in ("bilinear", "bicubic"):
            kwargs = {"align_corners": False, "antialias": True}
        out = F.interpolate(batch, size=self.size, mode=mode, **kwargs)
        return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


class RandomResizedCropFlip(Resize):
    """Light training augmentation: a random crop of ``scale`` of the area (aspect in ``ratio``),
    an optional horizontal flip (p = 0.5), then resize and normalise. Drawn per image."""

    def __init__(
        self,
        size: int | Sequence[int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bicubic",
        scale: tuple[float, float] = (0.6, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(size, mean, std, interpolation)
        self.scale, self.ratio, self.hflip, self.generator = scale, ratio, hflip, generator

    def _rand(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.generator)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        n = batch.shape[0]
        area = self._rand(n, *self.scale)
        log_ratio = torch.log(torch.tensor(self.ratio))
        aspect = torch.exp(self._rand(n, float(log_ratio[0]), float(log_ratio[1])))
        w = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the full width / height
        h = torch.sqrt(area / aspect).clamp(max=1.0)
        cx = (torch.rand(n, generator=self.generator) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, generator=self.generator) * 2 - 1) * (1 - h)
        flip = torch.ones(n)
        if self.hflip:
            flip = torch.where(torch.rand(n, generator=self.generator) < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        theta = theta.to(batch.device)
        grid = F.affine_grid(theta, [n, 3, *self.size], align_corners=False)
        mode = "bilinear" if self.interpolation in ("area", "bilinear") else self.interpolation
        out = F.grid_sample(batch, grid, mode=mode, padding_mode="border", align_corners=False)
        return out.clamp_(0.0, 1.0)


def make_transform(
    size: int | Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bicubic",
    augment: bool = False,
    hflip: bool = True,
) -> Resize:
    """Evaluation transform (resize + normalise), or with ``augment`` the light training one.

    ``hflip`` only matters with ``augment``; turn it off for tasks whose label a mirror changes
    (see ``TaskInfo.flip_safe``).
    """
    if augment:
        return RandomResizedCropFlip(size, mean, std, interpolation, hflip=hflip)
    return Resize(size, mean, std, interpolation)


def _cfg_dict(model: Any) -> Mapping[str, Any]:
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, Mapping) and cfg:
            return cfg
        if cfg is not None and hasattr(cfg, "__dict__"):
            return vars(cfg)
    return {}


def _model_img_size(model: Any) -> Any:
    patch_embed = getattr(model, "patch_embed", None)
    return getattr(patch_embed, "img_size", None)


def data_config_for(model: Any, default_size: int = 224) -> DataConfig:
    """Read ``input_size``, ``mean``, ``std`` and ``interpolation`` from a timm model's
    ``pretrained_cfg``, with defaults: ImageNet statistics and bicubic resizing.

    The input size is the one the model was built for (its patch embedding's ``img_size``, which
    ``timm.create_model(..., img_size=...)`` changes but ``pretrained_cfg`` does not), else the
    config's ``input_size``, else ``default_size``.
    """
    cfg = _cfg_dict(model)
    size = _model_img_size(model) or cfg.get("input_size") or default_size
    mean = tuple(float(m) for m in cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(float(s) for s in cfg.get("std") or IMAGENET_STD)
    interpolation = cfg.get("interpolation") or "bicubic"
    if interpolation not in INTERPOLATIONS:  # e.g. timm's "random" (a training-time choice)
        interpolation = "bicubic"
    if len(mean) == 1:
        mean = mean * 3
    if len(std) == 1:
        std = std * 3
    return DataConfig(_pair(size), mean, std, interpolation)  # type: ignore[arg-type]
