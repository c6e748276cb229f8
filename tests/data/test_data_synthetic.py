"""The synthetic suite: split sizes, balance, determinism, caching, disjointness, difficulty."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from vpeft.data import synthetic as syn
from vpeft.errors import DatasetError

TARGETS = list(syn.TARGET_TASKS)
TARGET_SPLITS = ("train800", "val200", "train800val200", "test")


def _flat_keys(images: np.ndarray) -> set[bytes]:
    return {img.tobytes() for img in images}


def test_registry_lists_groups_and_infos() -> None:
    assert len(TARGETS) >= 8
    assert set(syn.TARGET_TASKS.values()) == {"natural", "specialized", "structured"}
    assert syn.SOURCE_TASK not in syn.TARGET_TASKS
    for name in TARGETS:
        info = syn.task_info(name)
        assert info.name == name and info.group == syn.TARGET_TASKS[name]
        assert info.splits["train800"] == 800 and info.splits["val200"] == 200
        assert info.splits["train800val200"] == 1000 and info.splits["test"] >= 1000
        assert 2 <= info.num_classes == len(info.classes)
        assert info.description
    source = syn.task_info(syn.SOURCE_TASK)
    assert 32 <= source.num_classes <= 64
    assert source.splits["train"] >= 20_000 and set(source.splits) == {"train", "val", "test"}


def test_unknown_task_and_split_errors_list_valid_names() -> None:
    with pytest.raises(DatasetError, match=r"unknown synthetic task 'synth-nope'.*synth-count"):
        syn.load_split("synth-nope", "test")
    with pytest.raises(DatasetError, match=r"unknown split 'train'.*train800, val200"):
        syn.load_split("synth-count", "train")
    with pytest.raises(DatasetError, match=r"unknown split 'train800'.*train, val, test"):
        syn.load_split(syn.SOURCE_TASK, "train800")
    with pytest.raises(DatasetError, match="seed"):
        syn.load_split("synth-count", "test", seed=-1)


@pytest.mark.parametrize("name", TARGETS)
def test_target_splits_sizes_balance_and_disjointness(name: str) -> None:
    info = syn.task_info(name)
    splits = {s: syn.load_split(name, s) for s in TARGET_SPLITS}
    for split, ds in splits.items():
        assert len(ds) == info.splits[split]
        assert ds.images.shape[1:] == (32, 32, 3) and ds.images.dtype == np.uint8
        counts = ds.class_counts()
        assert counts.min() > 0, f"{name}/{split}: a class is missing"
        assert counts.max() - counts.min() <= 1, f"{name}/{split}: unbalanced {counts}"
    union = splits["train800val200"]
    assert np.array_equal(union.images[:800], splits["train800"].images)
    assert np.array_equal(union.images[800:], splits["val200"].images)
    train_keys, test_keys = _flat_keys(union.images), _flat_keys(splits["test"].images)
    assert len(train_keys) == 1000 and len(test_keys) == len(splits["test"])
    assert not train_keys & test_keys, f"{name}: images shared by train and test"


def test_source_task_splits() -> None:
    info = syn.task_info(syn.SOURCE_TASK)
    for split in ("train", "val", "test"):
        ds = syn.load_split(syn.SOURCE_TASK, split)
        assert len(ds) == info.splits[split]
        counts = ds.class_counts()
        assert counts.min() > 0 and counts.max() - counts.min() <= 1


def test_same_seed_same_arrays_other_seed_differs(tmp_path: Path) -> None:
    cached = syn.load_split("synth-position", "train800val200")
    fresh = syn.generate_task("synth-position", seed=0)
    assert np.array_equal(cached.images, fresh["trainval_x"])
    assert np.array_equal(cached.labels, fresh["trainval_y"])
    other = syn.load_split("synth-position", "train800val200", seed=1, cache_dir=tmp_path)
    assert not np.array_equal(cached.images, other.images)


def test_cache_hit_is_identical_faster_and_keyed_by_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = time.perf_counter()
    first = syn.load_split("synth-orientation", "test", cache_dir=tmp_path)
    generate_s = time.perf_counter() - start
    path = syn.cache_path("synth-orientation", 0, tmp_path)
    assert path.is_file() and f"g{syn.GENERATOR_VERSION}" in path.name and "s0" in path.name
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind
    start = time.perf_counter()
    second = syn.load_split("synth-orientation", "test", cache_dir=tmp_path)
    assert time.perf_counter() - start < generate_s
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels)
    monkeypatch.setattr(syn, "GENERATOR_VERSION", syn.GENERATOR_VERSION + 1)
    assert syn.cache_path("synth-orientation", 0, tmp_path) != path


def test_corrupt_or_foreign_cache_is_regenerated(tmp_path: Path) -> None:
    path = syn.cache_path("synth-position", 3, tmp_path)
    path.write_bytes(b"not a zip file")
    ds = syn.load_split("synth-position", "val200", seed=3, cache_dir=tmp_path)
    assert len(ds) == 200
    # A file holding another seed's arrays under this name is not trusted either.
    arrays = syn.load_task("synth-position", 3, tmp_path)
    np.savez(path, **arrays, **syn._meta("synth-position", 4))
    again = syn.load_split("synth-position", "val200", seed=3, cache_dir=tmp_path)
    assert np.array_equal(again.images, ds.images)
    with np.load(path) as npz:
        assert int(npz["meta_seed"]) == 3


def test_unwritable_cache_is_a_dataset_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DatasetError, match="cannot write the synthetic-data cache"):
        syn.load_split("synth-position", "val200", cache_dir=blocker / "cache")


def test_vpeft_cache_variable_sets_the_folder(synth_root: Path) -> None:
    assert syn.default_cache_dir() == synth_root / "synthetic"
    syn.load_split("synth-count", "val200")
    assert syn.cache_path("synth-count", 0).parent == synth_root / "synthetic"
    assert syn.cache_path("synth-count", 0).is_file()


def test_digit_test_images_come_from_other_digits() -> None:
    trainval, test = syn.S.digit_pool("trainval"), syn.S.digit_pool("test")
    assert not set(trainval) & set(test)
    assert len(trainval) + len(test) == 1797
    rng = np.random.default_rng(0)
    labels = np.arange(1000) % 10
    assert set(syn.S.pick_digits(rng, labels, "test")) <= set(test)


def _grey_features(images: np.ndarray, cells: int = 8) -> np.ndarray:
    """Mean grey level of ``cells`` x ``cells`` blocks: a deliberately weak, fast feature."""
    grey = images.astype(np.float32).mean(axis=-1) / 255.0
    n, h, w = grey.shape
    blocks = grey.reshape(n, cells, h // cells, cells, w // cells).mean(axis=(2, 4))
    return blocks.reshape(n, -1)


@pytest.mark.parametrize("name", ["synth-position", "synth-orientation", "synth-azimuth"])
def test_simple_features_beat_chance_but_not_the_task(name: str) -> None:
    train = syn.load_split(name, "train800val200")
    test = syn.load_split(name, "test")
    x_train, x_test = _grey_features(train.images), _grey_features(test.images)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(C=0.1, max_iter=500).fit((x_train - mu) / sd, train.labels)
    accuracy = clf.score((x_test - mu) / sd, test.labels)
    chance = 1.0 / train.num_classes
    assert chance * 1.3 < accuracy < 0.9, f"{name}: accuracy {accuracy:.3f}"


def _foreground(images: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Pixels whose luminance is far from the image's median luminance."""
    lum = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255
    median = np.median(lum.reshape(len(lum), -1), axis=1)[:, None, None]
    return np.abs(lum - median) > threshold


def test_position_labels_follow_the_object_centroid() -> None:
    ds = syn.load_split("synth-position", "test")
    mask = _foreground(ds.images)
    xs = np.arange(32) + 0.5
    centroid = (mask * xs).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
    lo, hi = syn.S.POSITION_RANGE
    predicted = np.clip(((centroid - lo) / (hi - lo) * syn.S.POSITION_BINS).astype(int), 0, 7)
    assert (predicted == ds.labels).mean() > 0.6
    assert (np.abs(predicted - ds.labels) <= 1).mean() > 0.9


def test_orientation_labels_follow_the_principal_axis() -> None:
    ds = syn.load_split("synth-orientation", "test")
    mask = _foreground(ds.images)
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float32)
    w = mask / np.maximum(mask.sum(axis=(1, 2), keepdims=True), 1)
    mx, my = (w * xs).sum(axis=(1, 2)), (w * ys).sum(axis=(1, 2))
    dx, dy = xs - mx[:, None, None], ys - my[:, None, None]
    cxx, cyy, cxy = (w * dx * dx).sum((1, 2)), (w * dy * dy).sum((1, 2)), (w * dx * dy).sum((1, 2))
    angle = np.mod(0.5 * np.arctan2(2 * cxy, cxx - cyy), np.pi)
    predicted = (angle / (np.pi / syn.S.ORIENTATION_BINS)).astype(int) % syn.S.ORIENTATION_BINS
    circular = np.minimum(np.abs(predicted - ds.labels), 8 - np.abs(predicted - ds.labels))
    assert (circular <= 1).mean() > 0.85


def test_counted_objects_never_overlap() -> None:
    rng = np.random.default_rng(0)
    radii = rng.uniform(2.5, 4.5, (2000, 6)).astype(np.float32)
    cx, cy = syn.S.place_apart(rng, radii)
    gap = np.hypot(cx[:, :, None] - cx[:, None], cy[:, :, None] - cy[:, None])
    gap -= radii[:, :, None] + radii[:, None]
    gap[:, np.arange(6), np.arange(6)] = np.inf
    assert gap.min() >= 0.99
    assert (cx - radii).min() >= 0 and (cx + radii).max() <= 32


def test_count_labels_follow_the_amount_of_foreground() -> None:
    ds = syn.load_split("synth-count", "test")
    area = _foreground(ds.images).sum(axis=(1, 2))
    means = [area[ds.labels == c].mean() for c in range(ds.num_classes)]
    assert all(a < b for a, b in itertools.pairwise(means)), means


def test_distance_labels_follow_apparent_size() -> None:
    ds = syn.load_split("synth-distance", "test")
    # Sky and ground change along rows only: the object is what departs from its row's median.
    pixels = ds.images.astype(np.float32) / 255
    row_median = np.median(pixels, axis=2, keepdims=True)
    area = (np.abs(pixels - row_median).max(axis=-1) > 0.15).sum(axis=(1, 2))
    per_bin = [area[ds.labels == b].mean() for b in range(ds.num_classes)]
    assert all(a > b for a, b in itertools.pairwise(per_bin)), per_bin
