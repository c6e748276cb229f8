"""Scenes of the procedural visual-question suite: a few plain objects on a 3×3 grid.

A scene is up to `MAX_OBJECTS` objects, at most one per cell of a 3×3 grid, each with a shape,
a colour and a size; arrays ``shape``, ``colour``, ``size`` of shape ``(n, 9)`` hold the
attribute indices per cell (row-major from the top left) and ``-1`` for an empty cell. The grid
makes every spatial word exact ("the object at the top left" names one cell, never a judgement
call). Images are rendered with the rasteriser of the image suite (`vpeft.data._render`):
anti-aliased signed-distance shapes in flat, slightly jittered named colours over a dark neutral
background, with light pixel noise, as uint8 ``(n, S, S, 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vpeft.data import _render as R

F32 = np.float32
IMAGE_SIZE = 64
GRID = 3
CELLS = GRID * GRID
MAX_OBJECTS = 5

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")
SHAPE_PLURALS: tuple[str, ...] = ("circles", "squares", "triangles", "stars", "crosses", "hearts")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "cyan")
#: Base RGB of each colour name (each rendered object jitters it by at most ±0.06).
COLOUR_RGB = np.array(
    [[0.88, 0.12, 0.10], [0.12, 0.72, 0.18], [0.16, 0.32, 0.95], [0.95, 0.86, 0.12],
     [0.62, 0.20, 0.82], [0.10, 0.85, 0.88]],
    dtype=F32,
)  # fmt: skip
SIZES: tuple[str, ...] = ("small", "large")
#: Object radius range (pixels at 64×64, scaled with the image size) per size name.
SIZE_RADII: tuple[tuple[float, float], ...] = ((4.5, 5.5), (8.0, 9.0))
#: Cell names, row-major from the top left.
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
    "bottom right",
)  # fmt: skip


@dataclass(frozen=True)
class Scenes:
    """Attribute indices per grid cell, ``(n, 9)`` int64 each, ``-1`` where a cell is empty."""

    shape: np.ndarray
    colour: np.ndarray
    size: np.ndarray

    def __len__(self) -> int:
        return self.shape.shape[0]

    @property
    def occupied(self) -> np.ndarray:
        return self.shape >= 0

    def __getitem__(self, index: int | slice | np.ndarray) -> Scenes:
        return Scenes(self.shape[index], self.colour[index], self.size[index])

    def objects(self, i: int) -> list[tuple[int, int, int, int]]:
        """``(cell, shape, colour, size)`` of each object of scene ``i``, in cell order."""
        cells = np.flatnonzero(self.shape[i] >= 0)
        return [(int(c), int(self.shape[i, c]), int(self.colour[i, c]), int(self.size[i, c]))
                for c in cells]  # fmt: skip

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_{k}": getattr(self, k) for k in ("shape", "colour", "size")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> Scenes:
        return cls(*(arrays[f"{prefix}_{k}"] for k in ("shape", "colour", "size")))


def make_scenes(
    cells: list[list[tuple[int, int, int, int]]] | list[list[tuple[str, str, str, str]]],
) -> Scenes:
    """Scenes from explicit object lists ``(cell, shape, colour, size)`` given as indices or
    names (``("top left", "circle", "red", "small")``) — for hand-checked examples."""
    n = len(cells)
    out = [np.full((n, CELLS), -1, dtype=np.int64) for _ in range(3)]
    vocab = (POSITIONS, SHAPES, COLOURS, SIZES)
    for i, objects in enumerate(cells):
        for obj in objects:
            cell, *attrs = (v if isinstance(v, int | np.integer) else names.index(v)
                            for v, names in zip(obj, vocab, strict=True))  # fmt: skip
            for arr, value in zip(out, attrs, strict=True):
                arr[i, cell] = value
    return Scenes(*out)


def sample_scenes(
    rng: np.random.Generator, n: int, min_objects: int = 1, max_objects: int = MAX_OBJECTS
) -> Scenes:
    """``n`` random scenes: an object count uniform in ``[min_objects, max_objects]``, distinct
    random cells, uniform shape, colour and size."""
    count = rng.integers(min_objects, max_objects + 1, n)
    order = np.argsort(rng.random((n, CELLS)), axis=1)
    occupied = np.zeros((n, CELLS), dtype=bool)
    np.put_along_axis(occupied, order, np.arange(CELLS)[None, :] < count[:, None], axis=1)
    attrs = [rng.integers(0, k, (n, CELLS)) for k in (len(SHAPES), len(COLOURS), len(SIZES))]
    return Scenes(*(np.where(occupied, a, -1).astype(np.int64) for a in attrs))


def _background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Dark, nearly grey backgrounds with a soft gradient: every colour name stands out."""
    base = R.hsv_to_rgb(rng.random(n), rng.uniform(0.0, 0.12, n), rng.uniform(0.12, 0.35, n))
    other = np.clip(base + rng.uniform(-0.06, 0.06, (n, 1)).astype(F32), 0.0, 1.0)
    x, y = R.pixel_grid(size)
    a = rng.uniform(0, 2 * np.pi, n)
    g = (R.col(np.cos(a)) * (x - size / 2) + R.col(np.sin(a)) * (y - size / 2)) / size + 0.5
    return R.mix(base, other, np.clip(g, 0.0, 1.0).astype(F32))


_CHUNK = 256  # images rendered at once (keeps the float buffers in cache)


def render_scenes(
    rng: np.random.Generator, scenes: Scenes, size: int = IMAGE_SIZE, noise: float = 0.02
) -> np.ndarray:
    """Render ``scenes`` as uint8 ``(n, size, size, 3)``: each object centred in its cell with a
    small random offset that keeps it inside the cell, a random rotation and a radius drawn in
    its size's range. Rendered in chunks of `_CHUNK` scenes, in order, from one generator."""
    n = len(scenes)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        part = slice(start, min(start + _CHUNK, n))
        out[part] = _render_chunk(rng, scenes[part], size, noise)
    return out


def _render_chunk(rng: np.random.Generator, scenes: Scenes, size: int, noise: float) -> np.ndarray:
    n = len(scenes)
    image = _background(rng, n, size)
    cell = size / GRID
    scale = size / 64.0
    lo = np.array([r[0] for r in SIZE_RADII], dtype=F32) * scale
    hi = np.array([r[1] for r in SIZE_RADII], dtype=F32) * scale
    for c in range(CELLS):
        rows = np.flatnonzero(scenes.shape[:, c] >= 0)
        if rows.size == 0:
            continue
        k = rows.size
        sid = scenes.size[rows, c]
        radius = (lo[sid] + (hi[sid] - lo[sid]) * rng.random(k)).astype(F32)
        slack = np.maximum(cell / 2 - radius - 0.5, 0.0)
        cx = (c % GRID + 0.5) * cell + rng.uniform(-1, 1, k) * slack
        cy = (c // GRID + 0.5) * cell + rng.uniform(-1, 1, k) * slack
        # objects stay inside their cell, so only the cell's pixels (plus one) are rasterised
        x0, x1 = int(np.floor(c % GRID * cell)) - 1, int(np.ceil((c % GRID + 1) * cell)) + 1
        y0, y1 = int(np.floor(c // GRID * cell)) - 1, int(np.ceil((c // GRID + 1) * cell)) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
        xs = (np.arange(x0, x1, dtype=F32) + F32(0.5))[None, None, :]
        ys = (np.arange(y0, y1, dtype=F32) + F32(0.5))[None, :, None]
        u, v = R.rotate(xs - R.col(cx), ys - R.col(cy), rng.uniform(0, 2 * np.pi, k))
        r = R.col(radius)
        alpha = R.coverage(R.shape_distance(SHAPES, scenes.shape[rows, c], u / r, v / r) * r)
        colour = COLOUR_RGB[scenes.colour[rows, c]] + rng.uniform(-0.06, 0.06, (k, 3))
        window = image[rows, y0:y1, x0:x1]
        image[rows, y0:y1, x0:x1] = R.paint(window, alpha, np.clip(colour, 0, 1).astype(F32))
    image = R.add_noise(rng, image, np.full(n, noise, dtype=F32))
    return R.to_uint8(image)


def render_single_objects(
    rng: np.random.Generator, shape: np.ndarray, colour: np.ndarray, size: int = IMAGE_SIZE
) -> np.ndarray:
    """One object per image (the CLIP class images): the given shape and colour, a random
    radius between the small and the large range, anywhere that keeps it inside the frame."""
    n = shape.shape[0]
    image = _background(rng, n, size)
    scale = size / 64.0
    radius = rng.uniform(SIZE_RADII[0][0] * scale, 1.6 * SIZE_RADII[1][1] * scale, n).astype(F32)
    cx = rng.uniform(radius + 1, size - radius - 1).astype(F32)
    cy = rng.uniform(radius + 1, size - radius - 1).astype(F32)
    u, v = R.object_frame(size, cx, cy, rng.uniform(0, 2 * np.pi, n))
    r = R.col(radius)
    alpha = R.coverage(R.shape_distance(SHAPES, shape, u / r, v / r) * r)
    rgb = np.clip(COLOUR_RGB[colour] + rng.uniform(-0.06, 0.06, (n, 3)), 0, 1).astype(F32)
    image = R.paint(image, alpha, rgb)
    return R.to_uint8(R.add_noise(rng, image, np.full(n, 0.02, dtype=F32)))
