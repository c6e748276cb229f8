"""A procedural dense multi-task suite: rendered scenes with exact per-pixel labels.

Each 64×64 image (size configurable) shows 1–3 objects over a flat, textured background plane,
rendered orthographically from a height field and Lambert-shaded. Per pixel the generator knows
exactly which surface is visible (a z-buffer over the objects' heights) and writes

- ``semseg`` (long H×W): 0 background, 1 sphere, 2 upright cylinder, 3 tilted square plate;
- ``parts`` (long H×W): two parts per class, 0 background — sphere 1 upper / 2 lower half,
  cylinder 3 left / 4 right half, plate 5 above / 6 below its anti-diagonal (7 labels, as many
  as PASCAL-Context's human parts), so part pixels are always object pixels;
- ``saliency`` (long H×W): 1 on the visible pixels of the most prominent object (largest
  visible area), 0 elsewhere;
- ``normals`` (float 3×H×W): analytic unit normals in the camera frame (x right, y **up**, z
  towards the viewer): background (0, 0, 1); sphere of radius r centred at (cx, cy):
  ``(dx, −dy, √(r²−dx²−dy²)) / r`` with ``dx = col − cx``, ``dy = row − cy``; cylinder:
  ``(dx/r, 0, √(1−(dx/r)²))``; plate: its constant tilted normal ``(a, b, 1)/‖(a, b, 1)‖``.

Splits (different seed streams of the same generator): ``source`` (2,000 images, for
pretraining on the semantic classes), and the target splits ``train`` (800), ``val`` (200) and
``test`` (1,000). Generation is vectorised numpy (a few seconds for all splits); each split is
cached as ``.npz`` under ``$VPEFT_CACHE/dense_synthetic/`` via `vpeft.atomic` (normals stored as
float16 and re-normalised on load, so they are unit length to float32 precision).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vpeft.atomic import atomic_path
from vpeft.errors import DatasetError

#: Bump whenever the renderer's output changes; caches of other versions are ignored.
GENERATOR_VERSION = 1
CLASSES: tuple[str, ...] = ("background", "sphere", "cylinder", "plate")
PARTS: tuple[str, ...] = (
    "background",
    "sphere-upper",
    "sphere-lower",
    "cylinder-left",
    "cylinder-right",
    "plate-upper",
    "plate-lower",
)
SPLITS: dict[str, int] = {"source": 2000, "train": 800, "val": 200, "test": 1000}
_SPLIT_STREAM = {"source": 0, "train": 1, "val": 2, "test": 3}
_MAX_OBJECTS = 3


def render_scenes(n: int, seed: int, size: int = 64) -> dict[str, np.ndarray]:
    """Render ``n`` scenes: ``images`` (n,H,W,3) uint8, ``semseg``/``parts``/``saliency``
    (n,H,W) uint8 and ``normals`` (n,H,W,3) float32, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    axis = np.arange(size, dtype=np.float32) + np.float32(0.5)
    rows, cols = np.meshgrid(axis, axis, indexing="ij")
    height = np.zeros((n, size, size), np.float32)  # background plane at height 0
    semseg = np.zeros((n, size, size), np.uint8)
    parts = np.zeros((n, size, size), np.uint8)
    owner = np.full((n, size, size), -1, np.int8)  # visible object slot, -1 = background
    normals = np.zeros((n, size, size, 3), np.float32)
    normals[..., 2] = 1.0
    colours = np.zeros((n, _MAX_OBJECTS, 3))
    count = rng.integers(1, _MAX_OBJECTS + 1, n)
    for k in range(_MAX_OBJECTS):
        cls = rng.integers(1, len(CLASSES), n)
        cy, cx = (rng.uniform(0.2, 0.8, (2, n)) * size).astype(np.float32)
        r = (rng.uniform(0.12, 0.25, n) * size).astype(np.float32)
        half_h = r * rng.uniform(1.0, 1.6, n).astype(np.float32)
        tilt = rng.uniform(-0.8, 0.8, (n, 2)).astype(np.float32)
        base = rng.uniform(1.0, 10.0, n).astype(np.float32)
        colours[:, k] = rng.uniform(0.25, 1.0, (n, 3))
        dx = cols[None] - cx[:, None, None]
        dy = rows[None] - cy[:, None, None]
        rr = r[:, None, None]
        present = (k < count)[:, None, None]
        # sphere
        rho2 = (dx**2 + dy**2) / rr**2
        in_sph = rho2 < 1.0
        nz_sph = np.sqrt(np.clip(1.0 - rho2, 0.0, None))
        # upright cylinder (axis along the image's vertical)
        u = dx / rr
        in_cyl = (np.abs(u) < 1.0) & (np.abs(dy) < half_h[:, None, None])
        nz_cyl = np.sqrt(np.clip(1.0 - u**2, 0.0, None))
        # tilted square plate: plane z = base + r - a·dx_cam - b·dy_cam with normal (a, b, 1)
        a, b = tilt[:, 0, None, None], tilt[:, 1, None, None]
        in_pl = (np.abs(dx) < rr) & (np.abs(dy) < rr)
        c = cls[:, None, None]
        inside = present & np.where(c == 1, in_sph, np.where(c == 2, in_cyl, in_pl))
        h = base[:, None, None] + np.where(
            c == 1, rr * nz_sph, np.where(c == 2, rr * nz_cyl, rr - a * dx - b * (-dy))
        )
        nrm = np.stack(
            [
                np.where(c == 1, u, np.where(c == 2, u, a)),
                np.where(c == 1, -dy / rr, np.where(c == 2, np.float32(0), b)),
                np.where(c == 1, nz_sph, np.where(c == 2, nz_cyl, np.float32(1))),
            ],
            axis=-1,
        )
        nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
        part = np.where(
            c == 1,
            np.where(dy < 0, 1, 2),
            np.where(c == 2, np.where(dx < 0, 3, 4), np.where(dx + dy < 0, 5, 6)),
        )
        wins = inside & (h > height)
        height = np.where(wins, h, height)
        semseg = np.where(wins, c, semseg).astype(np.uint8)
        parts = np.where(wins, part, parts).astype(np.uint8)
        owner = np.where(wins, k, owner).astype(np.int8)
        normals = np.where(wins[..., None], nrm, normals)
    # saliency: the object slot with the largest visible area
    areas = np.stack([(owner == k).sum((1, 2)) for k in range(_MAX_OBJECTS)], 1)
    salient = areas.argmax(1)
    saliency = ((owner == salient[:, None, None]) & (owner >= 0)).astype(np.uint8)
    # shading: ambient + Lambert, a light from the viewer's side, textured background
    light = np.concatenate([rng.uniform(-0.5, 0.5, (n, 2)), np.ones((n, 1))], 1)
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    lambert = np.clip(np.einsum("nhwc,nc->nhw", normals, light), 0.0, 1.0)
    bg_colour = rng.uniform(0.1, 0.6, (n, 1, 1, 3))
    texture = 0.08 * rng.standard_normal((n, size, size, 1))
    obj_colour = np.take_along_axis(
        colours[:, None, None, :, :],
        np.clip(owner, 0, None)[..., None, None].astype(np.int64),
        axis=3,
    )[..., 0, :]
    albedo = np.where((owner >= 0)[..., None], obj_colour, bg_colour + texture)
    image = albedo * (0.35 + 0.65 * lambert[..., None])
    return {
        "images": np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8),
        "semseg": semseg,
        "parts": parts,
        "saliency": saliency,
        "normals": normals.astype(np.float32),
    }


def default_cache_dir() -> Path:
    """``$VPEFT_CACHE/dense_synthetic`` (default ``~/.cache/vpeft/dense_synthetic``)."""
    root = os.environ.get("VPEFT_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "vpeft"
    return base / "dense_synthetic"


def _split_seed(split: str, seed: int) -> int:
    if split not in SPLITS:
        raise DatasetError(f"unknown dense synthetic split {split!r}; choose from {list(SPLITS)}")
    if seed < 0:
        raise DatasetError(f"seed must be >= 0, got {seed}")
    return int(np.random.SeedSequence([seed, _SPLIT_STREAM[split], 0xD5]).generate_state(1)[0])


_KEYS = ("images", "semseg", "parts", "saliency", "normals")


def load_arrays(
    split: str, seed: int = 0, size: int = 64, cache_dir: str | Path | None = None
) -> dict[str, np.ndarray]:
    """The arrays of ``split`` from the cache when valid, else rendered and cached atomically."""
    split_seed = _split_seed(split, seed)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / f"{split}-g{GENERATOR_VERSION}-s{seed}-px{size}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                if int(npz["meta_version"]) == GENERATOR_VERSION and int(npz["meta_seed"]) == seed:
                    arrays = {k: npz[k] for k in _KEYS}
                    if arrays["images"].shape == (SPLITS[split], size, size, 3):
                        return arrays
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            pass  # unreadable or foreign cache: re-render and overwrite it
    arrays = render_scenes(SPLITS[split], split_seed, size)
    arrays["normals"] = arrays["normals"].astype(np.float16)
    meta = {"meta_version": np.array(GENERATOR_VERSION), "meta_seed": np.array(seed)}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays, **meta)
    except OSError as exc:
        raise DatasetError(
            f"cannot write the dense synthetic cache {path} ({exc}); point $VPEFT_CACHE or "
            "cache_dir at a writable folder"
        ) from None
    return arrays


class DenseSyntheticDataset(Dataset):
    """Map-style dataset of one split. Items: ``{"pixel_values": float 3×H×W in [0, 1],
    "semseg": long H×W, "parts": long H×W, "saliency": long H×W, "normals": float 3×H×W}``."""

    num_classes = len(CLASSES)
    num_parts = len(PARTS)

    def __init__(
        self,
        split: str,
        seed: int = 0,
        size: int = 64,
        cache_dir: str | Path | None = None,
        limit: int | None = None,
    ) -> None:
        arrays = load_arrays(split, seed, size, cache_dir)
        stop = len(arrays["images"]) if limit is None else min(limit, len(arrays["images"]))
        self.arrays = {k: v[:stop] for k, v in arrays.items()}

    def __len__(self) -> int:
        return len(self.arrays["images"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a = self.arrays
        normals = torch.from_numpy(a["normals"][index].astype(np.float32)).permute(2, 0, 1)
        return {
            "pixel_values": torch.from_numpy(a["images"][index]).permute(2, 0, 1).float() / 255.0,
            "semseg": torch.from_numpy(a["semseg"][index].astype(np.int64)),
            "parts": torch.from_numpy(a["parts"][index].astype(np.int64)),
            "saliency": torch.from_numpy(a["saliency"][index].astype(np.int64)),
            "normals": torch.nn.functional.normalize(normals, dim=0),
        }
