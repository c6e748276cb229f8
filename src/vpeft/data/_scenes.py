"""Scene generators of the synthetic tasks: one ``render_*`` function per task.

Every renderer has the signature ``render(rng, labels, role) -> uint8 (n, 32, 32, 3)``: it draws
one image per requested label so that labels can be balanced by the caller. ``role`` is
``"trainval"`` or ``"test"`` and only matters for tasks built from a finite pool of real images
(digits), whose train/val and test images come from disjoint source images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vpeft.data import _render as R
from vpeft.data._render import F32, Array, col

SIZE = 32
TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class Pose:
    """Per-image placement of one object: centre, rotation (radians) and radius (pixels)."""

    cx: Array
    cy: Array
    angle: Array
    radius: Array


def random_pose(
    rng: np.random.Generator, n: int, radius: tuple[float, float], margin: float = 0.8
) -> Pose:
    """Random rotation, a radius in ``radius`` and a centre keeping ``margin * radius`` inside."""
    r = rng.uniform(*radius, n).astype(F32)
    lo, hi = margin * r, SIZE - margin * r
    return Pose(
        cx=rng.uniform(lo, hi).astype(F32),
        cy=rng.uniform(lo, hi).astype(F32),
        angle=rng.uniform(0, TWO_PI, n).astype(F32),
        radius=r,
    )


def shape_alpha(names: tuple[str, ...], ids: Array, pose: Pose) -> Array:
    """Anti-aliased coverage ``(n, H, W)`` of each image's shape at its pose."""
    u, v = R.object_frame(SIZE, pose.cx, pose.cy, pose.angle)
    r = col(pose.radius)
    return R.coverage(R.shape_distance(names, ids, u / r, v / r) * r)


def textured_fill(
    rng: np.random.Generator, names: tuple[str, ...], ids: Array, pose: Pose, colour: Array
) -> Array:
    """Per-pixel colours ``(n, H, W, 3)``: ``colour`` patterned by texture ``names[ids]``."""
    u, v = R.object_frame(SIZE, pose.cx, pose.cy, pose.angle)
    weight = R.texture_weight(names, ids, u, v, rng)
    return R.mix(colour, shade(colour), weight)


def shade(colour: Array) -> Array:
    """A second colour that stands out from ``colour``: darker if it is light, else lighter."""
    light = R.luminance(colour)[:, None] > 0.45
    return np.where(light, colour * 0.35, colour * 0.35 + 0.6).astype(F32)


def mean_colour(image: Array) -> Array:
    return image.mean(axis=(1, 2))


def add_distractor(rng: np.random.Generator, image: Array, p: float = 0.5) -> Array:
    """With probability ``p`` add one small plain object of a random source shape."""
    n = image.shape[0]
    shapes = R.SOURCE_SHAPES
    pose = random_pose(rng, n, (2.5, 4.0))
    alpha = shape_alpha(shapes, rng.integers(0, len(shapes), n), pose)
    alpha *= col(rng.random(n) < p)
    return R.paint(image, alpha, R.random_colours(rng, n, sat=(0.3, 1.0)))


def finish(rng: np.random.Generator, image: Array, noise: tuple[float, float]) -> Array:
    """Add pixel noise of a random strength and quantise to uint8."""
    sigma = rng.uniform(*noise, image.shape[0])
    return R.to_uint8(R.add_noise(rng, image, sigma))


def nuisance(rng: np.random.Generator, labels: Array, options: int) -> Array:
    """A random choice in ``range(options)`` per image, for factors that are not the label."""
    return rng.integers(0, options, labels.shape[0])


# --------------------------------------------------------------------------- coloured objects


def coloured_object_scene(
    rng: np.random.Generator,
    shape_names: tuple[str, ...],
    shape_ids: Array,
    texture_ids: Array,
    hues: Array | None = None,
    radius: tuple[float, float] = (7.0, 12.0),
) -> Array:
    """One textured object (plus maybe a distractor) on a varied background, float images."""
    n = shape_ids.shape[0]
    image = add_distractor(rng, R.background(rng, n, SIZE), p=0.3)
    pose = random_pose(rng, n, radius)
    colour = R.contrasting_colours(rng, mean_colour(image), hues)
    fill = textured_fill(rng, R.SOURCE_TEXTURES, texture_ids, pose, colour)
    return R.paint(image, shape_alpha(shape_names, shape_ids, pose), fill)


SOURCE_CLASSES = [
    (shape, texture, tone)
    for shape in R.SOURCE_SHAPES
    for texture in R.SOURCE_TEXTURES
    for tone in ("warm", "cool")
]


def tone_hues(rng: np.random.Generator, warm: Array) -> Array:
    """Hues of the warm (red to yellow) or cool (cyan to violet) family."""
    return np.where(warm, rng.uniform(-0.06, 0.16, warm.size), rng.uniform(0.46, 0.74, warm.size))


def render_source(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Source task: class = (shape, texture, warm/cool colour family), 64 classes."""
    shape_ids = labels // 8
    texture_ids = (labels // 2) % 4
    hues = tone_hues(rng, labels % 2 == 0)
    image = coloured_object_scene(rng, R.SOURCE_SHAPES, shape_ids, texture_ids, hues)
    return finish(rng, image, (0.0, 0.03))


def render_objects(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Natural: ten shapes the source never shows, any colour and source texture."""
    texture_ids = nuisance(rng, labels, len(R.SOURCE_TEXTURES))
    image = coloured_object_scene(rng, R.NOVEL_SHAPES, labels, texture_ids)
    return finish(rng, image, (0.0, 0.04))


TEXTURE_CLASSES = (
    "stripes", "checker", "dots", "grid", "waves", "zigzag", "rings", "crosshatch", "bricks",
    "blotches",
)  # fmt: skip


def render_textures(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Natural: full-frame textures with random colours, orientation, scale and lighting."""
    n = labels.shape[0]
    u, v = R.object_frame(
        SIZE, rng.uniform(0, SIZE, n), rng.uniform(0, SIZE, n), rng.uniform(0, TWO_PI, n)
    )
    zoom = col(rng.uniform(0.8, 1.25, n))
    weight = R.texture_weight(TEXTURE_CLASSES, labels, u * zoom, v * zoom, rng)
    c1 = R.random_colours(rng, n)
    c2 = R.contrasting_colours(rng, c1, min_contrast=0.15)
    image = R.mix(c1, c2, weight)
    light = R.value_noise(rng, n, SIZE, cells=2) * col(rng.uniform(0.0, 0.5, n))
    image = image * (1.0 - light[..., None])
    return finish(rng, image, (0.01, 0.06))


# --------------------------------------------------------------------------- digits


@lru_cache(maxsize=1)
def _digit_bank() -> tuple[Array, Array]:
    """scikit-learn's 1797 real 8x8 handwritten digits as floats in [0, 1], with labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(F32), bunch.target.astype(np.int64)


def digit_pool(role: str) -> Array:
    """Indices of the real digits reserved for ``role``: a fixed, stratified half each."""
    _, targets = _digit_bank()
    split_rng = np.random.default_rng(8_8)  # fixed: the pools must not move with the task seed
    test = np.zeros(targets.size, dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(targets == c)
        test[split_rng.permutation(idx)[: idx.size // 2]] = True
    return np.flatnonzero(test if role == "test" else ~test)


def pick_digits(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """One real digit index per label, cycling through the role's pool of each class."""
    _, targets = _digit_bank()
    pool = digit_pool(role)
    chosen = np.empty(labels.shape[0], dtype=np.int64)
    for c in np.unique(labels):
        slots = np.flatnonzero(labels == c)
        members = rng.permutation(pool[targets[pool] == c])
        chosen[slots] = np.resize(members, slots.size)
    return chosen


def render_digits(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Natural: real handwritten digits, scaled, sheared, rotated and coloured on backgrounds."""
    images, _ = _digit_bank()
    n = labels.shape[0]
    glyphs = images[pick_digits(rng, labels, role)]
    scale = rng.uniform(2.5, 3.5, n)  # output pixels per digit pixel
    half = 4.0 * scale * 0.8
    pose = Pose(
        cx=rng.uniform(half, SIZE - half).astype(F32),
        cy=rng.uniform(half, SIZE - half).astype(F32),
        angle=rng.uniform(-0.2, 0.2, n).astype(F32),
        radius=scale.astype(F32),
    )
    u, v = R.object_frame(SIZE, pose.cx, pose.cy, pose.angle)
    u = u + col(rng.uniform(-0.15, 0.15, n)) * v  # shear
    ink = R.bilinear(glyphs, v / col(scale) + 4.0, u / col(scale) + 4.0, outside=0.0)
    ink = np.clip(ink * col(rng.uniform(1.0, 1.6, n)), 0.0, 1.0)
    image = R.background(rng, n, SIZE)
    colour = R.contrasting_colours(rng, mean_colour(image), min_contrast=0.3)
    return finish(rng, R.paint(image, ink, colour), (0.0, 0.04))


# --------------------------------------------------------------------------- specialized


def render_xray(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Specialized: source shapes as grey X-ray-like densities, with clutter, blur and noise."""
    n = labels.shape[0]
    density = R.value_noise(rng, n, SIZE, cells=3) * col(rng.uniform(0.1, 0.3, n))
    for _ in range(2):  # faint elongated "bones" in the way
        pose = random_pose(rng, n, (7.0, 14.0), margin=0.3)
        bone = shape_alpha(R.ELONGATED_SHAPES, rng.integers(0, 3, n), pose)
        density += bone * col(rng.uniform(0.1, 0.35, n))
    pose = random_pose(rng, n, (6.0, 11.0))
    solid = shape_alpha(R.SOURCE_SHAPES, labels, pose)
    u, v = R.object_frame(SIZE, pose.cx, pose.cy, pose.angle)
    grain = R.texture_weight(R.SOURCE_TEXTURES, rng.integers(0, 4, n), u, v, rng)
    density += solid * col(rng.uniform(0.3, 0.6, n)) * (1.0 - 0.35 * grain)
    grey = 1.0 - np.exp(-1.6 * density)  # bright where dense, as on a radiograph
    grey = R.blur(grey, rng.uniform(0.4, 1.0, n))
    image = np.repeat(grey[..., None], 3, axis=-1) * np.array([0.92, 0.97, 1.0], dtype=F32)
    return finish(rng, image, (0.02, 0.07))


IRONBOW = np.array(
    [[0.0, 0.0, 0.05], [0.3, 0.0, 0.45], [0.75, 0.1, 0.35], [0.95, 0.45, 0.0], [1.0, 0.85, 0.2],
     [1.0, 1.0, 0.9]],
    dtype=F32,
)  # fmt: skip


def render_thermal(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Specialized: source shapes as warm bodies seen by a low-resolution thermal camera."""
    n = labels.shape[0]
    heat = 0.1 + R.value_noise(rng, n, SIZE, cells=3) * col(rng.uniform(0.1, 0.35, n))
    for _ in range(2):  # warm clutter
        pose = random_pose(rng, n, (2.0, 4.5))
        blob = shape_alpha(("circle",), np.zeros(n, np.int64), pose)
        heat += blob * col(rng.uniform(0.0, 0.45, n))
    pose = random_pose(rng, n, (6.0, 11.0))
    body = shape_alpha(R.SOURCE_SHAPES, labels, pose)
    u, v = _unit_frame(pose)
    core = np.clip(1.0 - 0.45 * np.sqrt(u * u + v * v), 0.4, 1.0)
    heat += body * core * col(rng.uniform(0.35, 0.7, n))
    heat = R.blur(heat, rng.uniform(0.9, 1.6, n))
    heat = R.add_noise(rng, heat, rng.uniform(0.01, 0.04, n))
    return finish(rng, R.colormap(heat, IRONBOW), (0.0, 0.02))


def _unit_frame(pose: Pose) -> tuple[Array, Array]:
    u, v = R.object_frame(SIZE, pose.cx, pose.cy, pose.angle)
    return u / col(pose.radius), v / col(pose.radius)


# --------------------------------------------------------------------------- structured


def plain_object(
    rng: np.random.Generator, image: Array, pose: Pose, shapes: tuple[str, ...] = R.SOURCE_SHAPES
) -> Array:
    """Paint one plain object of a random shape, contrasting with the image's mean colour."""
    n = image.shape[0]
    alpha = shape_alpha(shapes, rng.integers(0, len(shapes), n), pose)
    colour = R.contrasting_colours(rng, mean_colour(image), min_contrast=0.3)
    return R.paint(image, alpha, colour)


def place_apart(rng: np.random.Generator, radii: Array, tries: int = 40) -> tuple[Array, Array]:
    """Centres ``(n, k)`` for ``k`` objects per image whose discs do not overlap.

    Each object is re-drawn up to ``tries`` times; one that still clashes is put at the freest of
    a few candidate spots and shrunk to fit there (``radii`` is updated in place).
    """
    k = radii.shape[1]
    cx = rng.uniform(radii, SIZE - radii).astype(F32)
    cy = rng.uniform(radii, SIZE - radii).astype(F32)
    for j in range(1, k):
        for _ in range(tries):
            clash = _clearance(cx[:, j], cy[:, j], cx[:, :j], cy[:, :j], radii[:, :j]) < radii[:, j]
            if not clash.any():
                break
            r = radii[clash, j]
            cx[clash, j] = rng.uniform(r, SIZE - r)
            cy[clash, j] = rng.uniform(r, SIZE - r)
        if clash.any():
            _squeeze_in(rng, cx, cy, radii, j, np.flatnonzero(clash))
    return cx, cy


def _clearance(x: Array, y: Array, cx: Array, cy: Array, radii: Array) -> Array:
    """Largest radius (less a 1-pixel gap) a disc at ``(x, y)`` can take without touching the
    discs ``(cx, cy, radii)`` of shape ``(n, j)``; ``x`` and ``y`` are ``(n,)`` or ``(n, m)``."""
    shape = x.shape
    x, y = x.reshape(shape[0], -1), y.reshape(shape[0], -1)
    gap = np.hypot(x[..., None] - cx[:, None, :], y[..., None] - cy[:, None, :])
    room = (gap - radii[:, None, :]).min(axis=-1) - 1.0
    return room.reshape(shape)


def _squeeze_in(
    rng: np.random.Generator, cx: Array, cy: Array, radii: Array, j: int, rows: Array
) -> None:
    xs = rng.uniform(2.0, SIZE - 2.0, (rows.size, 64)).astype(F32)
    ys = rng.uniform(2.0, SIZE - 2.0, (rows.size, 64)).astype(F32)
    room = _clearance(xs, ys, cx[rows, :j], cy[rows, :j], radii[rows, :j])
    room = np.minimum(room, np.minimum.reduce([xs, ys, SIZE - xs, SIZE - ys]))
    best = room.argmax(axis=1)
    pick = np.arange(rows.size)
    cx[rows, j], cy[rows, j] = xs[pick, best], ys[pick, best]
    radii[rows, j] = np.clip(np.minimum(radii[rows, j], room[pick, best]), 1.5, None)


def render_count(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Structured: how many objects (1 to 6) are in the picture; class = count - 1."""
    n, k = labels.shape[0], 6
    radii = rng.uniform(2.5, 4.5, (n, k)).astype(F32)
    cx, cy = place_apart(rng, radii)
    image = R.background(rng, n, SIZE)
    for j in range(k):
        pose = Pose(cx[:, j], cy[:, j], rng.uniform(0, TWO_PI, n).astype(F32), radii[:, j])
        drawn = plain_object(rng, image, pose)
        present = (labels >= j).astype(F32)[:, None, None, None]
        image = image * (1 - present) + drawn * present
    return finish(rng, image, (0.0, 0.04))


POSITION_BINS = 6
POSITION_RANGE = (5.0, 27.0)


def render_position(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Structured: horizontal position bin (6 bins) of the single object."""
    n = labels.shape[0]
    lo, hi = POSITION_RANGE
    width = (hi - lo) / POSITION_BINS
    radius = rng.uniform(3.5, 6.5, n).astype(F32)
    pose = Pose(
        cx=(lo + (labels + rng.random(n)) * width).astype(F32),
        cy=rng.uniform(radius, SIZE - radius).astype(F32),
        angle=rng.uniform(0, TWO_PI, n).astype(F32),
        radius=radius,
    )
    image = plain_object(rng, R.background(rng, n, SIZE, textured=False), pose)
    return finish(rng, image, (0.0, 0.04))


ORIENTATION_BINS = 8


def render_orientation(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Structured: orientation bin (8 bins over 180 degrees) of one elongated object."""
    n = labels.shape[0]
    angle = (labels + rng.random(n)) * (np.pi / ORIENTATION_BINS)
    radius = rng.uniform(7.0, 12.0, n).astype(F32)
    pose = Pose(
        cx=rng.uniform(10, 22, n).astype(F32),
        cy=rng.uniform(10, 22, n).astype(F32),
        angle=angle.astype(F32),
        radius=radius,
    )
    image = plain_object(rng, R.background(rng, n, SIZE), pose, R.ELONGATED_SHAPES)
    return finish(rng, add_distractor(rng, image), (0.0, 0.04))


DISTANCE_BINS = 6
DISTANCE_RANGE = (2.0, 10.0)


def ground_scene(rng: np.random.Generator, n: int, horizon: Array) -> Array:
    """Sky above a furrowed ground plane that recedes towards a horizon row per image."""
    _, y = R.pixel_grid(SIZE)
    y = np.broadcast_to(y, (n, SIZE, SIZE))
    top = R.hsv_to_rgb(rng.uniform(0.5, 0.7, n), rng.uniform(0.1, 0.6, n), rng.uniform(0.6, 1.0, n))
    low = R.hsv_to_rgb(rng.uniform(0.5, 0.7, n), rng.uniform(0.0, 0.3, n), rng.uniform(0.7, 1.0, n))
    sky = R.mix(top, low, y / SIZE)
    depth = np.maximum(y - col(horizon), 0.5)  # rows below the horizon
    furrows = np.clip(0.5 + np.sin(TWO_PI * (25.0 / depth + col(rng.random(n)))), 0.0, 1.0)
    soil = R.hsv_to_rgb(
        rng.uniform(0.05, 0.35, n), rng.uniform(0.2, 0.7, n), rng.uniform(0.25, 0.6, n)
    )
    ground = R.mix(soil, soil * col(rng.uniform(0.75, 0.95, n))[..., 0], furrows)
    below = R.coverage(col(horizon) - y)[..., None]
    return sky * (1 - below) + ground * below


def render_distance(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Structured: distance bin (6 geometric bins) of an object standing on a ground plane."""
    n = labels.shape[0]
    lo, hi = np.log(DISTANCE_RANGE[0]), np.log(DISTANCE_RANGE[1])
    dist = np.exp(lo + (labels + rng.random(n)) * (hi - lo) / DISTANCE_BINS)
    horizon = rng.uniform(8.0, 14.0, n)
    focal, cam_height = 16.0, 1.2
    base = horizon + focal * cam_height / dist  # screen row where the object touches the ground
    radius = np.maximum(focal * rng.uniform(0.7, 1.1, n) / dist, 0.8)
    image = ground_scene(rng, n, horizon)
    pose = Pose(
        cx=rng.uniform(6, 26, n).astype(F32),
        cy=(base - radius).astype(F32),
        angle=rng.normal(0.0, 0.2, n).astype(F32),
        radius=radius.astype(F32),
    )
    image = plain_object(rng, image, pose, ("square", "circle", "triangle", "pentagon"))
    return finish(rng, image, (0.0, 0.04))


AZIMUTH_BINS = 8
_BOX_EDGES = np.array(
    [(0, 1), (1, 3), (3, 2), (2, 0), (4, 5), (5, 7), (7, 6), (6, 4), (0, 4), (1, 5), (2, 6),
     (3, 7)]
)  # fmt: skip
_FRONT_EDGES = np.array([0, 1, 2, 3])  # the face at local z = +depth: corners 0..3
_FRONT_FACE = np.array([0, 1, 3, 2])  # its corners in order around the face


def box_corners(dims: Array) -> Array:
    """Corners ``(n, 8, 3)`` of boxes with half-sizes ``dims`` ``(n, 3)``; corners 0-3 at +z."""
    sx = np.array([-1, 1, -1, 1, -1, 1, -1, 1], dtype=F32)
    sy = np.array([-1, -1, 1, 1, -1, -1, 1, 1], dtype=F32)
    sz = np.array([1, 1, 1, 1, -1, -1, -1, -1], dtype=F32)
    return np.stack([sx, sy, sz], axis=-1)[None] * dims[:, None, :]


def project(points: Array, azimuth: Array, elevation: Array, distance: Array) -> Array:
    """Perspective projection of ``(n, m, 3)`` points turned by azimuth/elevation to pixels."""
    ca, sa = np.cos(azimuth)[:, None], np.sin(azimuth)[:, None]
    x = ca * points[..., 0] + sa * points[..., 2]
    z = -sa * points[..., 0] + ca * points[..., 2]
    ce, se = np.cos(elevation)[:, None], np.sin(elevation)[:, None]
    y = ce * points[..., 1] - se * z
    z = se * points[..., 1] + ce * z
    focal = 28.0
    depth = distance[:, None] - z
    return np.stack([x * focal / depth, y * focal / depth], axis=-1)


def render_azimuth(rng: np.random.Generator, labels: Array, role: str) -> Array:
    """Structured: azimuth bin (8 bins over 360 degrees) of a wireframe box whose front face is
    tinted."""
    n = labels.shape[0]
    azimuth = (labels + rng.random(n)) * (TWO_PI / AZIMUTH_BINS)
    dims = rng.uniform(0.5, 1.0, (n, 3)).astype(F32)
    screen = project(
        box_corners(dims), azimuth, rng.uniform(0.25, 0.6, n), rng.uniform(3.2, 4.5, n)
    )
    screen += np.stack([rng.uniform(13, 19, n), rng.uniform(13, 19, n)], -1)[:, None, :]
    edges = screen[:, _BOX_EDGES]  # (n, 12, 2, 2)
    width = col(rng.uniform(0.5, 0.9, n))
    back = np.setdiff1d(np.arange(12), _FRONT_EDGES)
    image = R.background(rng, n, SIZE, textured=False)
    frame_c = R.contrasting_colours(rng, mean_colour(image), min_contrast=0.3)
    front_c = R.contrasting_colours(rng, frame_c, min_contrast=0.25)
    face = R.convex_coverage(screen[:, _FRONT_FACE], SIZE)
    image = R.paint(image, face * col(rng.uniform(0.3, 0.5, n)), front_c)
    for group, colour in ((back, frame_c), (_FRONT_EDGES, front_c)):
        dist = R.segment_distance(SIZE, edges[:, group, 0], edges[:, group, 1])
        image = R.paint(image, R.coverage(dist - width), colour)
    return finish(rng, image, (0.0, 0.04))
