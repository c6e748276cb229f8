"""A procedural, seeded suite of small image tasks shaped like VTAB-1k, generated offline.

One source task (``synth-source``, 64 classes, 30k training images) is meant for pretraining a
tiny ViT; the target tasks follow the VTAB-1k protocol (``train800``, ``val200``, their union
``train800val200`` and a held-out ``test`` split) and fall into three groups:

* natural: the source's domain with new content (novel shapes, textures, real handwritten digits);
* specialized: another imaging modality (X-ray-like and thermal-camera-like renderings);
* structured: geometry (counting, position, orientation, distance, 3-D azimuth).

Images are 32x32 RGB uint8. A task is generated in a second or two and cached as an ``.npz``
file under ``$VPEFT_CACHE/synthetic/`` (default ``~/.cache/vpeft/synthetic/``); the file name
holds :data:`GENERATOR_VERSION` and the seed, so a cache made by another generator is never read.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vpeft.atomic import atomic_path
from vpeft.data import _render as R
from vpeft.data import _scenes as S
from vpeft.data.arrays import ArrayImageDataset, Transform
from vpeft.errors import DatasetError

#: Bump whenever any renderer changes its output; old cache files are then ignored.
GENERATOR_VERSION = 2
IMAGE_SIZE = 32
SOURCE_TASK: str = "synth-source"

Renderer = Callable[[np.random.Generator, np.ndarray, str], np.ndarray]

TARGET_SPLITS = {"train800": 800, "val200": 200, "train800val200": 1000}
SOURCE_SPLITS = {"train": 30_000, "val": 2_000}
_CHUNK = 1000  # images rendered per call (bounds memory; part of the seeding scheme)


@dataclass(frozen=True)
class TaskInfo:
    """What a synthetic task is: its group (``"source"`` for the pretraining task, else
    ``"natural"``, ``"specialized"`` or ``"structured"``), classes and split sizes."""

    name: str
    group: str
    num_classes: int
    splits: dict[str, int]
    description: str
    classes: tuple[str, ...] = field(default=())
    #: Whether a horizontal flip keeps the label (false for digits, position, orientation...).
    flip_safe: bool = True


@dataclass(frozen=True)
class _Task:
    info: TaskInfo
    render: Renderer
    #: Sizes of the consecutive train-side parts, each label-balanced (e.g. train800 then val200).
    parts: tuple[int, ...]
    test_size: int

    @property
    def layout(self) -> dict[str, tuple[str, slice]]:
        """Split name -> (pool, slice of that pool)."""
        if self.info.group == "source":
            n_train = self.parts[0]
            return {
                "train": ("trainval", slice(0, n_train)),
                "val": ("trainval", slice(n_train, n_train + self.parts[1])),
                "test": ("test", slice(0, self.test_size)),
            }
        return {
            "train800": ("trainval", slice(0, 800)),
            "val200": ("trainval", slice(800, 1000)),
            "train800val200": ("trainval", slice(0, 1000)),
            "test": ("test", slice(0, self.test_size)),
        }


def _bins(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


def _target(
    name: str,
    group: str,
    render: Renderer,
    classes: tuple[str, ...],
    description: str,
    test_size: int = 2000,
    flip_safe: bool = True,
) -> _Task:
    splits = {**TARGET_SPLITS, "test": test_size}
    info = TaskInfo(name, group, len(classes), splits, description, classes, flip_safe)
    return _Task(info, render, (800, 200), test_size)


def _registry() -> dict[str, _Task]:
    source_classes = tuple(f"{s}-{t}-{c}" for s, t, c in S.SOURCE_CLASSES)
    source = _Task(
        TaskInfo(
            SOURCE_TASK, "source", len(source_classes), {**SOURCE_SPLITS, "test": 2000},
            "pretraining: shape x texture x warm/cool colour of the main object, with random "
            "pose, background and distractors", source_classes,
        ),
        S.render_source, (SOURCE_SPLITS["train"], SOURCE_SPLITS["val"]), 2000,
    )  # fmt: skip
    shapes = tuple(R.SOURCE_SHAPES)
    targets = [
        _target("synth-objects", "natural", S.render_objects, tuple(R.NOVEL_SHAPES),
                "ten object shapes absent from the source, any colour, source textures"),
        _target("synth-textures", "natural", S.render_textures, S.TEXTURE_CLASSES,
                "full-frame textures with random colours, scale, rotation and lighting"),
        _target("synth-digits", "natural", S.render_digits, _bins("digit", 10),
                "scikit-learn's real handwritten digits, upscaled, transformed and coloured; test "
                "images come from digits never used for train/val", test_size=1000,
                flip_safe=False),
        _target("synth-xray", "specialized", S.render_xray, shapes,
                "source shapes as blurred, noisy grey densities over bone-like clutter"),
        _target("synth-thermal", "specialized", S.render_thermal, shapes,
                "source shapes as warm bodies through a blurry thermal camera colour map"),
        _target("synth-count", "structured", S.render_count,
                tuple(str(i) for i in range(1, 7)), "number of objects, 1 to 6"),
        _target("synth-position", "structured", S.render_position,
                _bins("x-bin", S.POSITION_BINS), "horizontal position bin of one object",
                flip_safe=False),
        _target("synth-orientation", "structured", S.render_orientation,
                _bins("angle-bin", S.ORIENTATION_BINS),
                "orientation bin (180 degrees) of an elongated object", flip_safe=False),
        _target("synth-distance", "structured", S.render_distance,
                _bins("distance-bin", S.DISTANCE_BINS),
                "distance bin of an object standing on a ground plane (perspective cues)"),
        _target("synth-azimuth", "structured", S.render_azimuth,
                _bins("azimuth-bin", S.AZIMUTH_BINS),
                "azimuth bin (360 degrees) of a wireframe box with a marked front face",
                flip_safe=False),
    ]  # fmt: skip
    return {t.info.name: t for t in [source, *targets]}


_TASKS = _registry()

#: Target task name -> group ("natural" | "specialized" | "structured").
TARGET_TASKS: dict[str, str] = {
    name: t.info.group for name, t in _TASKS.items() if name != SOURCE_TASK
}


def _task(name: str) -> _Task:
    try:
        return _TASKS[name]
    except KeyError:
        valid = ", ".join(_TASKS)
        raise DatasetError(f"unknown synthetic task {name!r}; valid tasks: {valid}") from None


def task_info(name: str) -> TaskInfo:
    """Description of one task (source or target)."""
    return _task(name).info


def all_tasks() -> list[str]:
    """The source task followed by every target task."""
    return list(_TASKS)


# --------------------------------------------------------------------------- generation


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _seed_sequence(name: str, seed: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([_check_seed(seed), zlib.crc32(name.encode()), GENERATOR_VERSION])


def balanced_labels(
    rng: np.random.Generator, size: int, num_classes: int, offset: int = 0
) -> np.ndarray:
    """``size`` labels in random order, each class ``size // num_classes`` times or once more.

    Consecutive parts drawn with ``offset`` = the sizes drawn before (train800, then val200) take
    consecutive stretches of one cycle through the classes, so their union is balanced too.
    """
    cycle = (offset + np.arange(size)) % num_classes
    return rng.permutation(cycle).astype(np.int64)


def _render_pool(
    task: _Task, labels: np.ndarray, role: str, seq: np.random.SeedSequence
) -> np.ndarray:
    """Render images for ``labels`` chunk by chunk, each chunk with its own child generator."""
    starts = range(0, labels.shape[0], _CHUNK)
    children = seq.spawn(len(starts))
    out = [
        task.render(np.random.default_rng(child), labels[s : s + _CHUNK], role)
        for s, child in zip(starts, children, strict=True)
    ]
    return np.concatenate(out) if out else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)


def _duplicates(images: np.ndarray) -> np.ndarray:
    """Indices of images that exactly repeat an earlier image."""
    flat = np.ascontiguousarray(images).reshape(images.shape[0], -1)
    keys = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    return np.setdiff1d(np.arange(images.shape[0]), first)


def _rerender_duplicates(
    task: _Task, pools: dict[str, np.ndarray], seq: np.random.SeedSequence
) -> None:
    """Replace exact repeats (within or across pools) by fresh renders of the same labels."""
    roles = ("trainval", "test")
    for attempt in range(5):
        images = np.concatenate([pools[f"{r}_x"] for r in roles])
        dup = _duplicates(images)
        if dup.size == 0:
            return
        rng = np.random.default_rng(seq.spawn(1)[0])
        offset = 0
        for role in roles:
            n = pools[f"{role}_x"].shape[0]
            mine = dup[(dup >= offset) & (dup < offset + n)] - offset
            if mine.size:
                pools[f"{role}_x"][mine] = task.render(rng, pools[f"{role}_y"][mine], role)
            offset += n
        if attempt == 4:
            raise DatasetError(f"task {task.info.name!r}: could not make all images distinct")


def generate_task(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Render a task without touching the cache: ``trainval_x/_y`` and ``test_x/_y`` arrays."""
    task = _task(name)
    seq = _seed_sequence(name, seed)
    label_seq, train_seq, test_seq, fix_seq = seq.spawn(4)
    label_rng = np.random.default_rng(label_seq)
    c = task.info.num_classes
    offsets = np.cumsum((0, *task.parts[:-1]))
    train_y = np.concatenate(
        [balanced_labels(label_rng, n, c, int(o)) for n, o in zip(task.parts, offsets, strict=True)]
    )
    test_y = balanced_labels(label_rng, task.test_size, c)
    pools = {
        "trainval_x": _render_pool(task, train_y, "trainval", train_seq),
        "trainval_y": train_y,
        "test_x": _render_pool(task, test_y, "test", test_seq),
        "test_y": test_y,
    }
    _rerender_duplicates(task, pools, fix_seq)
    return pools


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$VPEFT_CACHE/synthetic`` if the variable is set, else ``~/.cache/vpeft/synthetic``."""
    root = os.environ.get("VPEFT_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "vpeft"
    return base / "synthetic"


def cache_path(name: str, seed: int = 0, cache_dir: str | Path | None = None) -> Path:
    """Where the cached arrays of ``name`` for ``seed`` live (the file may not exist yet)."""
    _task(name)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return folder / f"{name}-g{GENERATOR_VERSION}-s{_check_seed(seed)}.npz"


def _meta(name: str, seed: int) -> dict[str, np.ndarray]:
    return {
        "meta_task": np.array(name),
        "meta_seed": np.array(int(seed), dtype=np.int64),
        "meta_version": np.array(GENERATOR_VERSION, dtype=np.int64),
    }


def _write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _read_cache(path: Path, task: _Task, seed: int) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` when the file is missing, unreadable or not for this task."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if (
                str(npz["meta_task"]) != task.info.name
                or int(npz["meta_seed"]) != seed
                or int(npz["meta_version"]) != GENERATOR_VERSION
            ):
                return None
            arrays = {k: npz[k] for k in ("trainval_x", "trainval_y", "test_x", "test_y")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    expected = (sum(task.parts), task.test_size)
    if (arrays["trainval_y"].shape[0], arrays["test_y"].shape[0]) != expected:
        return None
    return arrays


def load_task(
    name: str, seed: int = 0, cache_dir: str | Path | None = None
) -> dict[str, np.ndarray]:
    """All arrays of a task, from the cache when valid, else generated and cached."""
    task = _task(name)
    path = cache_path(name, seed, cache_dir)
    arrays = _read_cache(path, task, int(seed))
    if arrays is None:
        _cache_io(path, lambda: path.parent.mkdir(parents=True, exist_ok=True))  # fail early
        arrays = generate_task(name, seed)
        _cache_io(path, lambda: _write_atomic(path, {**arrays, **_meta(name, seed)}))
    return arrays


def _cache_io(path: Path, action: Callable[[], object]) -> None:
    try:
        action()
    except OSError as exc:
        raise DatasetError(
            f"cannot write the synthetic-data cache {path} ({exc}); point $VPEFT_CACHE or "
            "cache_dir at a writable folder"
        ) from None


def load_split(
    name: str,
    split: str,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    transform: Transform | None = None,
) -> ArrayImageDataset:
    """One split of a synthetic task as an :class:`ArrayImageDataset`.

    Target tasks have ``train800``, ``val200``, ``train800val200`` and ``test``; the source task
    has ``train``, ``val`` and ``test``.
    """
    task = _task(name)
    layout = task.layout
    if split not in layout:
        raise DatasetError(
            f"unknown split {split!r} for synthetic task {name!r}; valid splits: "
            f"{', '.join(layout)}"
        )
    pool, part = layout[split]
    arrays = load_task(name, seed, cache_dir)
    return ArrayImageDataset(
        arrays[f"{pool}_x"][part],
        arrays[f"{pool}_y"][part],
        task.info.num_classes,
        transform=transform,
        classes=task.info.classes,
        name=f"{name}/{split}",
    )


def generate_all(cache_dir: str | Path | None = None, seed: int = 0) -> None:
    """Generate (or validate the cache of) every task for ``seed``."""
    for name in _TASKS:
        load_task(name, seed, cache_dir)
