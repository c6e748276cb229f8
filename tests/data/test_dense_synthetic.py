"""The procedural dense suite: determinism, exact labels, analytic normals, cache."""

from __future__ import annotations

import time

import numpy as np
import torch

from vpeft.data.dense_synthetic import DenseSyntheticDataset, load_arrays, render_scenes


def test_deterministic_and_seed_dependent():
    a, b, c = render_scenes(20, 7), render_scenes(20, 7), render_scenes(20, 8)
    for key in a:
        assert np.array_equal(a[key], b[key])
    assert not np.array_equal(a["images"], c["images"])


def test_labels_consistent():
    s = render_scenes(50, 1)
    obj = s["semseg"] > 0
    assert np.array_equal(s["parts"] > 0, obj)  # part pixels are exactly the object pixels
    for cls in (1, 2, 3):  # each class owns parts 2c-1 and 2c
        p = s["parts"][s["semseg"] == cls]
        assert set(np.unique(p)) <= {2 * cls - 1, 2 * cls}
    assert (s["saliency"] <= obj).all()
    assert (s["saliency"].reshape(50, -1).sum(1) > 0).all()  # every scene has an object
    assert set(np.unique(s["semseg"])) == {0, 1, 2, 3}


def test_normals_unit_and_analytic():
    s = render_scenes(30, 2)
    n = s["normals"]
    assert np.allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    bg = s["semseg"] == 0
    assert np.allclose(n[bg], [0.0, 0.0, 1.0])
    # sphere pixels: the normal's z is sqrt(1 - x² - y²), and x points away from the centre
    sph = s["semseg"] == 1
    assert np.allclose(n[sph][:, 2], np.sqrt(1 - n[sph][:, 0] ** 2 - n[sph][:, 1] ** 2), atol=1e-5)
    # sphere upper half (part 1) has normals pointing up (y > 0), lower half down
    assert (n[s["parts"] == 1][:, 1] > 0).all() and (n[s["parts"] == 2][:, 1] < 0).all()
    # cylinder: no vertical component, left part points left
    assert np.allclose(n[s["semseg"] == 2][:, 1], 0.0)
    assert (n[s["parts"] == 3][:, 0] < 0).all()


def test_sphere_normals_follow_the_analytic_formula():
    # n = ((col - cx)/r, -(row - cy)/r, ·): x is affine in the column with slope 1/r and y affine
    # in the row with slope -1/r (same r), exactly, on a scene showing a single sphere.
    for seed in range(200):
        s = render_scenes(1, seed, size=32)
        sph = s["semseg"][0] == 1
        if set(np.unique(s["semseg"])) == {0, 1} and s["saliency"][0].sum() == sph.sum():
            break
    else:
        raise AssertionError("no single-sphere scene among 200 seeds")
    rows, cols = np.nonzero(sph)
    n = s["normals"][0][sph].astype(np.float64)
    ax, bx = np.polyfit(cols + 0.5, n[:, 0], 1)
    ay, by = np.polyfit(rows + 0.5, n[:, 1], 1)
    assert np.allclose(n[:, 0], ax * (cols + 0.5) + bx, atol=1e-5)
    assert np.allclose(n[:, 1], ay * (rows + 0.5) + by, atol=1e-5)
    assert ax > 0 and abs(ax + ay) < 1e-5
    r, cx, cy = 1 / ax, -bx / ax, by / ax
    assert 0.12 * 32 <= r <= 0.25 * 32
    assert np.all((cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2 < r**2)  # pixels inside disc


def test_dataset_items_cache_and_speed(tmp_path):
    start = time.perf_counter()
    arrays = load_arrays("val", seed=3, cache_dir=tmp_path)
    assert time.perf_counter() - start < 10
    assert [f.suffix for f in tmp_path.iterdir()] == [".npz"]
    again = load_arrays("val", seed=3, cache_dir=tmp_path)
    assert np.array_equal(arrays["images"], again["images"])
    ds = DenseSyntheticDataset("val", seed=3, cache_dir=tmp_path, limit=5)
    item = ds[2]
    assert len(ds) == 5
    assert item["pixel_values"].shape == (3, 64, 64) and item["pixel_values"].max() <= 1
    assert item["semseg"].dtype == torch.long and item["parts"].shape == (64, 64)
    assert torch.allclose(item["normals"].norm(dim=0), torch.ones(64, 64), atol=1e-5)
    assert np.array_equal(item["semseg"].numpy(), arrays["semseg"][2])
