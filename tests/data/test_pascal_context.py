"""PASCAL-Context multi-task reader on a miniature on-disk layout, and DenseAugment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from vpeft.data.dense_augment import DenseAugment
from vpeft.data.pascal_context import PascalContextMT
from vpeft.errors import DatasetError

H, W = 6, 8


def _parts_mat(path, person: bool):
    head = np.zeros((H, W), np.uint8)
    head[0:2, 2:4] = 1
    hand = np.zeros((H, W), np.uint8)
    hand[4, 5] = 1
    parts = np.empty((1, 2), dtype=[("part_name", "O"), ("mask", "O")])
    parts[0, 0] = ("head", head)
    parts[0, 1] = ("lhand", hand)
    objects = np.empty(
        (1, 2), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    )
    objects[0, 0] = ("person" if person else "dog", 15 if person else 12, head | hand, parts)
    objects[0, 1] = ("cat", 8, np.zeros((H, W), np.uint8), np.zeros((0, 0)))
    anno = np.empty((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = ("x", objects)
    savemat(path, {"anno": anno})


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "PASCAL_MT"
    for d in [
        "ImageSets/Context",
        "JPEGImages",
        "semseg/pascal-context",
        "human_parts",
        "sal_distill",
        "normals_distill",
    ]:
        (r / d).mkdir(parents=True)
    (r / "ImageSets/Context/val.txt").write_text("a\nb\n")
    for i, person in (("a", True), ("b", False)):
        Image.fromarray(np.full((H, W, 3), 200, np.uint8)).save(r / f"JPEGImages/{i}.jpg")
        seg = np.zeros((H, W), np.uint8)
        seg[1, 1], seg[2, 2] = 15, 255
        Image.fromarray(seg).save(r / f"semseg/pascal-context/{i}.png")
        sal = np.zeros((H, W), np.uint8)
        sal[:, :4] = 255
        sal[0, 0] = 100
        Image.fromarray(sal).save(r / f"sal_distill/{i}.png")
        nrm = np.zeros((H, W, 3), np.uint8)
        nrm[...] = (255, 128, 128)  # decodes to (1, ~0, ~0)
        Image.fromarray(nrm).save(r / f"normals_distill/{i}.png")
        _parts_mat(r / f"human_parts/{i}.mat", person)
    return r


def test_reads_every_task(root):
    ds = PascalContextMT(root, "val")
    a, b = ds[0], ds[1]
    assert len(ds) == 2 and a["pixel_values"].shape == (3, H, W)
    assert a["semseg"][1, 1] == 15 and a["semseg"][2, 2] == 255 and a["semseg"].dtype == torch.long
    assert a["parts"][0, 2] == 1 and a["parts"][4, 5] == 4 and a["parts"].sum() == 4 * 1 + 4
    assert b["parts"].sum() == 0  # no person -> background
    assert a["saliency"][:, :4].sum() == H * 4 - 1 and a["saliency"][:, 4:].sum() == 0
    assert torch.allclose(a["normals"][:, 0, 0], torch.tensor([1.0, 1 / 255, 1 / 255]), atol=1e-6)


def test_missing_and_malformed_files_name_the_file(root):
    (root / "sal_distill/b.png").unlink()
    with pytest.raises(DatasetError, match=r"sal_distill/b\.png"):
        PascalContextMT(root, "val")
    ds = PascalContextMT(root, "val", tasks=("semseg", "parts"))
    (root / "human_parts/a.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match=r"human_parts/a\.mat"):
        ds[0]
    with pytest.raises(DatasetError, match="ImageSets"):
        PascalContextMT(root, "train")


def _sample():
    img = torch.arange(3 * 4 * 4, dtype=torch.float32).view(3, 4, 4)
    seg = torch.zeros(4, 4, dtype=torch.long)
    seg[:, 2:] = 1  # right half is class 1
    normals = torch.zeros(3, 4, 4)
    normals[0, :, 2:] = 1.0  # right half faces right (+x)
    normals[2, :, :2] = 1.0  # left half faces the viewer
    return {"pixel_values": img, "semseg": seg, "normals": normals}


def test_flip_moves_labels_and_negates_normal_x():
    out = DenseAugment(size=4).apply(_sample(), flip=True, scale=1.0, angle=0.0)
    assert torch.equal(out["pixel_values"], _sample()["pixel_values"].flip(-1))
    assert (out["semseg"][:, :2] == 1).all() and (out["semseg"][:, 2:] == 0).all()
    assert torch.allclose(out["normals"][:, 0, 0], torch.tensor([-1.0, 0.0, 0.0]))
    assert torch.allclose(out["normals"][:, 0, 3], torch.tensor([0.0, 0.0, 1.0]))


def test_rotation_turns_normals_with_the_picture():
    # rotate the picture 90° counter-clockwise: the right half goes to the top and its normals,
    # which pointed right (+x), now point up (+y in the camera frame)
    out = DenseAugment(size=4).apply(_sample(), flip=False, scale=1.0, angle=90.0)
    assert (out["semseg"][:2] == 1).all() and (out["semseg"][2:] == 0).all()
    assert torch.allclose(out["normals"][:, 0, 1], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(out["normals"][:, 3, 1], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)


def test_zoom_out_fills_ignore_and_resizes():
    out = DenseAugment(size=(8, 8), ignore_index=255).apply(
        _sample(), flip=False, scale=0.5, angle=0.0
    )
    assert out["semseg"].shape == (8, 8) and out["pixel_values"].shape == (3, 8, 8)
    assert (out["semseg"][0] == 255).all() and (out["semseg"][:, 0] == 255).all()
    assert (out["normals"][:, 0, 0] == 0).all() and (out["pixel_values"][:, 0, 0] == 0).all()
    assert set(out["semseg"][2:6, 2:6].unique().tolist()) == {0, 1}


def test_random_augment_is_seeded_and_keeps_normals_unit(root):
    aug = DenseAugment(size=16)
    ds = PascalContextMT(root, "val", transform=lambda s: aug(s, torch.Generator().manual_seed(0)))
    a, b = ds[0], ds[0]
    assert torch.equal(a["semseg"], b["semseg"]) and a["semseg"].shape == (16, 16)
    norm = a["normals"].norm(dim=0)
    valid = norm > 0
    assert valid.any() and torch.allclose(norm[valid], torch.ones(int(valid.sum())), atol=1e-2)
