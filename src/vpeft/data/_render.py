"""A tiny batched rasteriser for the synthetic tasks.

Everything works on a whole batch of images at once: coordinates are float32 arrays of shape
``(n, H, W)`` in pixel units (pixel centres at ``i + 0.5``), masks are anti-aliased coverages in
``[0, 1]`` and images are float32 ``(n, H, W, 3)`` arrays in ``[0, 1]`` until :func:`to_uint8`.
Shapes are signed distance functions (negative inside) in an object's local frame where ``1`` is
the object's radius; textures map rotated pixel offsets to a mixing weight in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Array = np.ndarray
F32 = np.float32

# --------------------------------------------------------------------------- coordinates


def pixel_grid(size: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates ``(x, y)``, each of shape ``(1, size, size)``."""
    c = np.arange(size, dtype=F32) + F32(0.5)
    y, x = np.meshgrid(c, c, indexing="ij")
    return x[None], y[None]


def col(a: Array | float) -> Array:
    """Per-image parameters as ``(n, 1, 1)`` so they broadcast over pixels."""
    return np.asarray(a, dtype=F32).reshape(-1, 1, 1)


def rotate(dx: Array, dy: Array, angle: Array) -> tuple[Array, Array]:
    """Rotate offsets by ``-angle`` (i.e. into a frame turned by ``angle``)."""
    c, s = col(np.cos(angle)), col(np.sin(angle))
    return c * dx + s * dy, -s * dx + c * dy


def object_frame(size: int, cx: Array, cy: Array, angle: Array) -> tuple[Array, Array]:
    """Rotated pixel offsets from each object's centre, shape ``(n, size, size)``."""
    x, y = pixel_grid(size)
    return rotate(x - col(cx), y - col(cy), angle)


def coverage(dist_px: Array) -> Array:
    """Anti-aliased coverage from a signed distance in pixels."""
    return np.clip(F32(0.5) - dist_px, 0.0, 1.0)


# --------------------------------------------------------------------------- shapes (SDFs)


def _length(u: Array, v: Array) -> Array:
    return np.sqrt(u * u + v * v)


def sd_circle(u: Array, v: Array, r: float = 1.0) -> Array:
    return _length(u, v) - r


def sd_box(u: Array, v: Array, bx: float, by: float) -> Array:
    qx, qy = np.abs(u) - bx, np.abs(v) - by
    outside = _length(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def sd_polygon(u: Array, v: Array, sides: int, r: float = 1.0) -> Array:
    """Regular polygon with circumradius ``r`` (distance to the nearest edge line)."""
    sector = 2.0 * np.pi / sides
    theta = np.mod(np.arctan2(v, u) + np.pi / 2, sector) - sector / 2
    return _length(u, v) * np.cos(theta) - r * np.cos(np.pi / sides)


def sd_star(u: Array, v: Array, points: int, inner: float) -> Array:
    """Star with ``points`` tips at radius 1 and notches at radius ``inner`` (approximate SDF)."""
    sector = 2.0 * np.pi / points
    theta = np.abs(np.mod(np.arctan2(v, u) + np.pi / 2, sector) - sector / 2) / (sector / 2)
    radius = inner + (1.0 - inner) * (1.0 - theta)
    return (_length(u, v) - radius) * 0.6


def sd_rhombus(u: Array, v: Array, a: float, b: float) -> Array:
    return (np.abs(u) / a + np.abs(v) / b - 1.0) * (a * b / np.hypot(a, b))


def sd_ellipse(u: Array, v: Array, a: float, b: float) -> Array:
    k = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return (k - 1.0) * min(a, b)


def _union(*ds: Array) -> Array:
    return np.minimum.reduce(ds)


def _subtract(d: Array, cut: Array) -> Array:
    return np.maximum(d, -cut)


SdfFn = Callable[[Array, Array], Array]

SHAPES: dict[str, SdfFn] = {
    # Shapes of the source task.
    "circle": lambda u, v: sd_circle(u, v, 0.9),
    "triangle": lambda u, v: sd_polygon(u, v, 3),
    "square": lambda u, v: sd_box(u, v, 0.75, 0.75),
    "pentagon": lambda u, v: sd_polygon(u, v, 5),
    "hexagon": lambda u, v: sd_polygon(u, v, 6),
    "star": lambda u, v: sd_star(u, v, 5, 0.45),
    "cross": lambda u, v: _union(sd_box(u, v, 0.9, 0.3), sd_box(u, v, 0.3, 0.9)),
    "ring": lambda u, v: np.abs(_length(u, v) - 0.7) - 0.25,
    # Shapes that the source task never shows.
    "heart": lambda u, v: _union(
        sd_circle(u + 0.38, v + 0.25, 0.5),
        sd_circle(u - 0.38, v + 0.25, 0.5),
        sd_polygon(u, -(v - 0.05) * 1.0, 3, 0.95),
    ),
    "crescent": lambda u, v: _subtract(sd_circle(u, v, 0.95), sd_circle(u - 0.45, v, 0.75)),
    "arrow": lambda u, v: _union(sd_box(u + 0.3, v, 0.6, 0.18), sd_polygon(-(v), u - 0.35, 3, 0.6)),
    "ellipse": lambda u, v: sd_ellipse(u, v, 1.0, 0.5),
    "ell": lambda u, v: _union(sd_box(u + 0.55, v, 0.25, 0.9), sd_box(u, v - 0.65, 0.8, 0.25)),
    "star4": lambda u, v: sd_star(u, v, 4, 0.35),
    "rhombus": lambda u, v: sd_rhombus(u, v, 1.0, 0.55),
    "semicircle": lambda u, v: np.maximum(sd_circle(u, v - 0.35, 0.95), v - 0.35),
    "tee": lambda u, v: _union(sd_box(u, v + 0.65, 0.9, 0.25), sd_box(u, v, 0.25, 0.9)),
    "frame": lambda u, v: _subtract(sd_box(u, v, 0.85, 0.85), sd_box(u, v, 0.45, 0.45)),
    # Elongated bodies for orientation.
    "bar": lambda u, v: sd_box(u, v, 1.0, 0.28),
    "capsule": lambda u, v: _length(np.maximum(np.abs(u) - 0.72, 0.0), v) - 0.28,
    "spindle": lambda u, v: sd_ellipse(u, v, 1.0, 0.3),
}

SOURCE_SHAPES = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "ring")
NOVEL_SHAPES = (
    "heart", "crescent", "arrow", "ellipse", "ell", "star4", "rhombus", "semicircle", "tee",
    "frame",
)  # fmt: skip
ELONGATED_SHAPES = ("bar", "capsule", "spindle")


def shape_distance(names: tuple[str, ...], ids: Array, u: Array, v: Array) -> Array:
    """Signed distance (local units) of shape ``names[ids[i]]`` for each image ``i``."""
    d = np.empty_like(u)
    for k in np.unique(ids):
        m = ids == k
        d[m] = SHAPES[names[int(k)]](u[m], v[m])
    return d


# --------------------------------------------------------------------------- textures


def _square_wave(phase: Array, sharp: float = 1.6) -> Array:
    return np.clip(0.5 + sharp * np.sin(2.0 * np.pi * phase), 0.0, 1.0)


def _lattice(u: Array, v: Array, period: Array) -> tuple[Array, Array]:
    """Offsets (in pixels) from the nearest lattice point of spacing ``period``."""
    fu = (u / period - np.floor(u / period) - 0.5) * period
    fv = (v / period - np.floor(v / period) - 0.5) * period
    return fu, fv


def _periods(p: Array, lo: float, hi: float) -> Array:
    return col(lo + (hi - lo) * p)


TexFn = Callable[[Array, Array, Array, np.random.Generator], Array]


def tex_solid(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    return np.zeros_like(u)


def tex_stripes(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    return _square_wave(u / _periods(p[:, 0], 3.0, 6.0) + col(p[:, 1]))


def tex_checker(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    per = _periods(p[:, 0], 4.0, 8.0)
    s = np.sin(np.pi * u / per + col(p[:, 1]) * 6.28) * np.sin(np.pi * v / per)
    return np.clip(0.5 + 2.0 * s, 0.0, 1.0)


def tex_dots(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    per = _periods(p[:, 0], 3.5, 6.5)
    fu, fv = _lattice(u + col(p[:, 1]) * 10, v, per)
    return coverage(_length(fu, fv) - per * col(0.2 + 0.12 * p[:, 2]))


def tex_grid(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    per = _periods(p[:, 0], 4.0, 8.0)
    fu, fv = _lattice(u + col(p[:, 1]) * 10, v, per)
    edge = np.minimum(per / 2 - np.abs(fu), per / 2 - np.abs(fv))
    return coverage(edge - col(0.5 + 0.5 * p[:, 2]))


def tex_waves(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    bend = col(1.0 + 2.0 * p[:, 2]) * np.sin(2 * np.pi * v / _periods(p[:, 3], 7.0, 14.0))
    return _square_wave((u + bend) / _periods(p[:, 0], 3.5, 6.5) + col(p[:, 1]))


def tex_zigzag(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    lam = _periods(p[:, 3], 5.0, 10.0)
    tri = np.abs(v / lam - np.floor(v / lam) - 0.5) * 2.0 - 0.5
    bend = col(2.0 + 2.0 * p[:, 2]) * tri
    return _square_wave((u + bend) / _periods(p[:, 0], 3.5, 6.5) + col(p[:, 1]))


def tex_rings(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    r = _length(u + col(p[:, 2] * 16 - 8), v + col(p[:, 3] * 16 - 8))
    return _square_wave(r / _periods(p[:, 0], 3.5, 6.5) + col(p[:, 1]))


def tex_crosshatch(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    per = _periods(p[:, 0], 3.5, 6.5)
    a = _square_wave((u + v) * 0.7071 / per + col(p[:, 1]), 0.9)
    b = _square_wave((u - v) * 0.7071 / per, 0.9)
    return np.clip(a + b - 1.0, 0.0, 1.0) ** 0.5


def tex_bricks(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    h = _periods(p[:, 0], 4.0, 6.5)
    w = h * col(1.8 + 0.6 * p[:, 2])
    row = np.floor(v / h)
    fu = np.abs((u + 0.5 * w * (row % 2)) / w - np.floor((u + 0.5 * w * (row % 2)) / w) - 0.5)
    fv = np.abs(v / h - row - 0.5)
    edge = np.minimum((0.5 - fu) * w, (0.5 - fv) * h)
    return 1.0 - coverage(edge - 0.6)


def tex_blotches(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    field = value_noise(rng, u.shape[0], u.shape[1], cells=4)
    return np.clip((field - 0.5) * 4.0 + 0.5, 0.0, 1.0)


def tex_speckle(u: Array, v: Array, p: Array, rng: np.random.Generator) -> Array:
    field = value_noise(rng, u.shape[0], u.shape[1], cells=int(u.shape[1] // 2.5))
    return np.clip((field - 0.5) * 3.0 + 0.5, 0.0, 1.0)


TEXTURES: dict[str, TexFn] = {
    "solid": tex_solid,
    "stripes": tex_stripes,
    "checker": tex_checker,
    "dots": tex_dots,
    "grid": tex_grid,
    "waves": tex_waves,
    "zigzag": tex_zigzag,
    "rings": tex_rings,
    "crosshatch": tex_crosshatch,
    "bricks": tex_bricks,
    "blotches": tex_blotches,
    "speckle": tex_speckle,
}

SOURCE_TEXTURES = ("solid", "stripes", "checker", "dots")


def texture_weight(
    names: tuple[str, ...], ids: Array, u: Array, v: Array, rng: np.random.Generator
) -> Array:
    """Mixing weight in ``[0, 1]`` of texture ``names[ids[i]]`` at rotated pixel offsets."""
    params = rng.random((u.shape[0], 4), dtype=F32)
    t = np.empty_like(u)
    for k in np.unique(ids):
        m = ids == k
        t[m] = TEXTURES[names[int(k)]](u[m], v[m], params[m], rng)
    return t


# --------------------------------------------------------------------------- sampling helpers


def bilinear(grid: Array, ys: Array, xs: Array, outside: float | None = None) -> Array:
    """Sample ``grid`` ``(n, h, w)`` at float pixel coordinates ``(n, H, W)``.

    Coordinates follow the pixel-centre convention of the grid (cell ``i`` covers ``[i, i+1)``).
    Outside the grid the nearest edge value is used, or ``outside`` when given.
    """
    n, h, w = grid.shape
    gy, gx = ys - 0.5, xs - 0.5
    y0, x0 = np.floor(gy).astype(np.int64), np.floor(gx).astype(np.int64)
    wy, wx = (gy - y0).astype(F32), (gx - x0).astype(F32)
    if outside is not None:
        grid = np.pad(grid, ((0, 0), (2, 2), (2, 2)), constant_values=outside)
        y0, x0, h, w = y0 + 2, x0 + 2, h + 4, w + 4
    idx = np.arange(n).reshape(-1, 1, 1)

    def at(yy: Array, xx: Array) -> Array:
        return grid[idx, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]

    top = at(y0, x0) * (1 - wx) + at(y0, x0 + 1) * wx
    bottom = at(y0 + 1, x0) * (1 - wx) + at(y0 + 1, x0 + 1) * wx
    return (top * (1 - wy) + bottom * wy).astype(F32)


def value_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> Array:
    """Smooth random field in ``[0, 1]``: a ``cells``-by-``cells`` lattice, bilinearly upsampled."""
    lattice = rng.random((n, cells + 1, cells + 1), dtype=F32)
    x, y = pixel_grid(size)
    scale = cells / size
    xs = np.broadcast_to(x * scale + 0.5, (n, size, size))
    ys = np.broadcast_to(y * scale + 0.5, (n, size, size))
    return bilinear(lattice, ys, xs)


# --------------------------------------------------------------------------- colour


def hsv_to_rgb(h: Array, s: Array, v: Array) -> Array:
    """Vectorised HSV to RGB; inputs in ``[0, 1]`` of shape ``(n,)``, output ``(n, 3)``."""
    h6 = (np.asarray(h, dtype=F32) % 1.0) * 6.0
    k = np.stack([(5 + h6) % 6, (3 + h6) % 6, (1 + h6) % 6], axis=-1)
    amount = np.clip(np.minimum(k, 4 - k), 0.0, 1.0)
    s, v = np.asarray(s, dtype=F32)[:, None], np.asarray(v, dtype=F32)[:, None]
    return (v - v * s * amount).astype(F32)


def luminance(rgb: Array) -> Array:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=F32)


def random_colours(
    rng: np.random.Generator, n: int, sat: tuple[float, float] = (0.0, 1.0)
) -> Array:
    """Random colours of any hue, ``(n, 3)``."""
    return hsv_to_rgb(rng.random(n), rng.uniform(*sat, n), rng.uniform(0.1, 1.0, n))


def contrasting_colours(
    rng: np.random.Generator,
    reference: Array,
    hues: Array | None = None,
    min_contrast: float = 0.25,
) -> Array:
    """Saturated colours (optionally of given hues) whose luminance differs from ``reference``."""
    n = reference.shape[0]
    hues = rng.random(n) if hues is None else np.asarray(hues)
    ref = luminance(reference)
    out = np.empty((n, 3), dtype=F32)
    todo = np.arange(n)
    for _ in range(12):
        cand = hsv_to_rgb(
            hues[todo], rng.uniform(0.45, 1.0, todo.size), rng.uniform(0.2, 1.0, todo.size)
        )
        ok = np.abs(luminance(cand) - ref[todo]) >= min_contrast
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
        if todo.size == 0:
            return out
    # Last resort: push brightness to whichever extreme is farther from the reference.
    bright = ref[todo] < 0.5
    out[todo] = hsv_to_rgb(hues[todo], np.full(todo.size, 0.6), np.where(bright, 1.0, 0.15))
    return out


def colormap(values: Array, stops: Array) -> Array:
    """Piecewise-linear colour map: ``values`` in ``[0, 1]`` → ``(..., 3)`` through ``stops``."""
    pos = np.clip(values, 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(np.floor(pos).astype(np.int64), len(stops) - 2)
    t = (pos - i)[..., None]
    return (stops[i] * (1 - t) + stops[i + 1] * t).astype(F32)


# --------------------------------------------------------------------------- backgrounds


def background(rng: np.random.Generator, n: int, size: int, textured: bool = True) -> Array:
    """Varied backgrounds ``(n, size, size, 3)``: plain, gradient, smooth noise or (if
    ``textured``) a faint texture."""
    kind = rng.integers(0, 4 if textured else 3, n)
    base = random_colours(rng, n)
    other = np.clip(base + rng.normal(0.0, 0.18, (n, 3)).astype(F32), 0.0, 1.0)
    weight = np.zeros((n, size, size), dtype=F32)
    x, y = pixel_grid(size)
    m = kind == 1  # linear gradient in a random direction
    if m.any():
        a = rng.uniform(0, 2 * np.pi, m.sum())
        g = (col(np.cos(a)) * (x - size / 2) + col(np.sin(a)) * (y - size / 2)) / size + 0.5
        weight[m] = np.clip(g, 0.0, 1.0)
    m = kind == 2  # smooth blotchy noise
    if m.any():
        weight[m] = value_noise(rng, int(m.sum()), size, cells=3)
    m = kind == 3  # a faint texture
    if m.any():
        k = int(m.sum())
        names = ("stripes", "checker", "dots", "waves", "grid")
        u, v = object_frame(size, np.zeros(k), np.zeros(k), rng.uniform(0, np.pi, k))
        weight[m] = texture_weight(names, rng.integers(0, len(names), k), u, v, rng) * 0.4
    return mix(base, other, weight)


def mix(c1: Array, c2: Array, weight: Array) -> Array:
    """Blend per-image colours ``(n, 3)`` by a per-pixel weight ``(n, H, W)``."""
    w = weight[..., None]
    return (c1[:, None, None, :] * (1 - w) + c2[:, None, None, :] * w).astype(F32)


def paint(image: Array, alpha: Array, colour: Array) -> Array:
    """Composite ``colour`` (per image or per pixel) over ``image`` with coverage ``alpha``."""
    if colour.ndim == 2:
        colour = colour[:, None, None, :]
    a = alpha[..., None]
    return (image * (1 - a) + colour * a).astype(F32)


# --------------------------------------------------------------------------- lines


def segment_distance(size: int, starts: Array, ends: Array) -> Array:
    """Distance in pixels to the nearest of ``m`` segments per image; endpoints ``(n, m, 2)``."""
    x, y = pixel_grid(size)
    px, py = x[:, None], y[:, None]  # (1, 1, H, W)
    ax, ay = starts[..., 0, None, None], starts[..., 1, None, None]
    dx = (ends[..., 0] - starts[..., 0])[..., None, None]
    dy = (ends[..., 1] - starts[..., 1])[..., None, None]
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / np.maximum(dx * dx + dy * dy, 1e-6), 0, 1)
    d = _length(px - ax - t * dx, py - ay - t * dy)
    return d.min(axis=1).astype(F32)


def convex_coverage(corners: Array, size: int) -> Array:
    """Anti-aliased coverage ``(n, size, size)`` of convex polygons with corners ``(n, k, 2)``
    listed in order around the polygon (either direction)."""
    x, y = pixel_grid(size)
    nxt = np.roll(corners, -1, axis=1)
    ex, ey = nxt[..., 0] - corners[..., 0], nxt[..., 1] - corners[..., 1]
    area = (corners[..., 0] * nxt[..., 1] - nxt[..., 0] * corners[..., 1]).sum(axis=1)
    sign = np.where(area >= 0, 1.0, -1.0)[:, None]
    length = np.maximum(np.hypot(ex, ey), 1e-6)
    # Outward normals; the distance to the polygon is the largest distance to an edge line.
    nx, ny = (ey * sign / length)[..., None, None], (-ex * sign / length)[..., None, None]
    px, py = corners[..., 0, None, None], corners[..., 1, None, None]
    dist = ((x[:, None] - px) * nx + (y[:, None] - py) * ny).max(axis=1)
    return coverage(dist.astype(F32))


# --------------------------------------------------------------------------- degradations


def blur(image: Array, sigma: Array) -> Array:
    """Separable Gaussian blur with a per-image ``sigma`` (pixels); edges are reflected."""
    radius = 4
    offsets = np.arange(-radius, radius + 1, dtype=F32)
    s = np.maximum(np.asarray(sigma, dtype=F32), 1e-3)[:, None]
    kernel = np.exp(-0.5 * (offsets[None] / s) ** 2)
    kernel /= kernel.sum(axis=1, keepdims=True)
    extra = (1,) * (image.ndim - 3)
    for axis in (1, 2):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(image, pad, mode="reflect")
        out = np.zeros_like(image)
        for j in range(2 * radius + 1):
            window = np.take(padded, np.arange(j, j + image.shape[axis]), axis=axis)
            out += kernel[:, j].reshape(-1, 1, 1, *extra) * window
        image = out
    return image


def add_noise(rng: np.random.Generator, image: Array, sigma: Array) -> Array:
    """Add Gaussian pixel noise with a per-image standard deviation."""
    s = np.asarray(sigma, dtype=F32).reshape(-1, *(1,) * (image.ndim - 1))
    return image + rng.standard_normal(image.shape, dtype=F32) * s


def to_uint8(image: Array) -> Array:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
