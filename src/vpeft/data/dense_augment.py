"""Joint geometric augmentation of an image and its dense labels (spec/polyhistor.md,
"Training protocol"): random horizontal flip, random scale in [0.75, 1.25], random rotation in
[−20°, 20°] (both about the image centre, keeping the frame, as the multi-task codebases' scale-
and-rotate step does), then resize to ``size``. One sampling grid serves every field:

- ``pixel_values`` (C×H×W float): bilinear, 0 outside the source image;
- label maps (``semseg``, ``parts``, ``saliency``; H×W integer): nearest, ``ignore_index``
  outside the source image;
- ``normals`` (3×H×W, camera frame x right, y up, z to the viewer; zero = invalid): nearest
  (so invalid zeros never blend into valid vectors), zero outside, and the vectors themselves
  transformed: a flip negates x, a counter-clockwise rotation by θ of the picture rotates
  (x, y) by +θ. Scaling does not change normals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vpeft.errors import ConfigError

LABEL_FIELDS: tuple[str, ...] = ("semseg", "parts", "saliency")


@dataclass
class DenseAugment:
    """``augment(sample, generator)`` → a new sample dict (fields absent are skipped).

    ``train=False`` only resizes. ``size``: output (H, W) or one int for a square."""

    size: int | Sequence[int] = 512
    train: bool = True
    flip: bool = True
    scale: tuple[float, float] = (0.75, 1.25)
    degrees: float = 20.0
    ignore_index: int = 255

    def __post_init__(self) -> None:
        h, w = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
        if h < 1 or w < 1 or not 0 < self.scale[0] <= self.scale[1] or self.degrees < 0:
            raise ConfigError(
                f"DenseAugment: size must be positive, 0 < scale[0] <= scale[1] and degrees "
                f">= 0; got size={self.size}, scale={self.scale}, degrees={self.degrees}"
            )
        self.out_size = (int(h), int(w))

    def __call__(
        self, sample: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        if not self.train:
            return self.apply(sample, flip=False, scale=1.0, angle=0.0)
        u = torch.rand(3, generator=generator).tolist()
        return self.apply(
            sample,
            flip=self.flip and u[0] < 0.5,
            scale=self.scale[0] + (self.scale[1] - self.scale[0]) * u[1],
            angle=self.degrees * (2 * u[2] - 1),
        )

    def apply(
        self, sample: dict[str, torch.Tensor], flip: bool, scale: float, angle: float
    ) -> dict[str, torch.Tensor]:
        """Deterministic transform: flip, then zoom by ``scale`` and rotate the picture
        counter-clockwise by ``angle`` degrees about the centre, then resize.

        Output pixel p (centred pixel coordinates, y down) samples the source at
        ``p_src = Flip · R(θ)⁻¹ · p / scale`` with ``R(θ) = [[cos, sin], [−sin, cos]]``."""
        image = sample["pixel_values"]
        h, w = image.shape[-2:]
        oh, ow = self.out_size
        t = math.radians(angle)
        c, s = math.cos(t), math.sin(t)
        ys, xs = torch.meshgrid(
            (torch.arange(oh, dtype=torch.float64) + 0.5) / oh * 2 - 1,
            (torch.arange(ow, dtype=torch.float64) + 0.5) / ow * 2 - 1,
            indexing="ij",
        )
        x, y = xs * w / 2, ys * h / 2  # output pixel, centred, in source-pixel units
        sx = (c * x - s * y) / scale  # R(θ)⁻¹ = [[cos, −sin], [sin, cos]]
        sy = (s * x + c * y) / scale
        if flip:
            sx = -sx
        grid = torch.stack([sx / (w / 2), sy / (h / 2)], -1).unsqueeze(0).float()

        def warp(x: torch.Tensor, mode: str) -> torch.Tensor:
            return F.grid_sample(
                x[None], grid, mode=mode, padding_mode="zeros", align_corners=False
            )[0]

        out = dict(sample)
        out["pixel_values"] = warp(image.float(), "bilinear")
        inside = warp(torch.ones(1, h, w), "nearest")[0] > 0.5
        for key in LABEL_FIELDS:
            if key in sample:
                lab = warp(sample[key][None].float(), "nearest")[0]  # exact below 2**24
                lab = torch.where(inside, lab, torch.full_like(lab, self.ignore_index))
                out[key] = lab.round().to(sample[key].dtype)
        if "normals" in sample:
            n = warp(sample["normals"].float(), "nearest")
            nx = -n[0] if flip else n[0]
            ny = n[1]
            out["normals"] = torch.stack([c * nx - s * ny, s * nx + c * ny, n[2]])
        return out
