"""Readers for VTAB-1k list files, FGVC json splits and image folders, and build_dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vpeft.data import (
    DATASET_KINDS,
    FGVCDataset,
    ImageFolderDataset,
    VTAB1kDataset,
    build_dataset,
    make_transform,
)
from vpeft.errors import DatasetError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# --------------------------------------------------------------------------- VTAB-1k


@pytest.fixture
def vtab_root(tmp_path: Path, write_png) -> Path:
    """<tmp>/vtab/toy with 3 train, 1 val and 2 test images; label 4 only appears in test."""
    task = tmp_path / "vtab" / "toy"
    colours = {"a.png": RED, "b.png": GREEN, "c.png": BLUE, "d.png": RED, "e.png": GREEN}
    for name, colour in colours.items():
        write_png(task / "images" / name, colour)
    write_png(task / "images" / "sub dir" / "f.png", BLUE)
    lists = {
        "train800": ["images/a.png 0", "images/b.png 1", "", "images/c.png 2"],
        "val200": ["images/d.png 0"],
        "test": ["images/e.png 1", "images/sub dir/f.png 4"],
    }
    lists["train800val200"] = lists["train800"] + lists["val200"]
    for split, lines in lists.items():
        (task / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return task


def test_vtab_items_labels_and_class_count(vtab_root: Path) -> None:
    ds = VTAB1kDataset(vtab_root, "train800")
    assert len(ds) == 3 and ds.targets == [0, 1, 2]
    assert ds.num_classes == 5  # max label over all list files + 1
    image, label = ds[1]
    assert image.shape == (3, 10, 12) and label == 1
    assert torch.allclose(image[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    test = VTAB1kDataset(vtab_root.parent, "test", task="toy")
    assert test.targets == [1, 4] and test.num_classes == 5
    assert len(VTAB1kDataset(vtab_root, "train800val200")) == 4


def test_vtab_transform_resizes_and_normalises(vtab_root: Path) -> None:
    t = make_transform(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    image, _ = VTAB1kDataset(vtab_root, "val200", transform=t)[0]  # pure red
    assert image.shape == (3, 16, 16)
    assert torch.allclose(image[:, 5, 5], torch.tensor([1.0, -1.0, -1.0]), atol=1e-5)
    arrays = VTAB1kDataset(vtab_root, "test").to_arrays(8)
    assert arrays.images.shape == (2, 8, 8, 3) and arrays.num_classes == 5
    x, y = VTAB1kDataset(vtab_root, "train800", transform=t).as_tensors()
    assert x.shape == (3, 3, 16, 16) and y.tolist() == [0, 1, 2]


def test_vtab_errors_name_the_problem(vtab_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"task folder .*missing-task.*expected layout"):
        VTAB1kDataset(vtab_root.parent, "test", task="missing-task")
    with pytest.raises(DatasetError, match=r"unknown VTAB-1k split 'train'.*train800"):
        VTAB1kDataset(vtab_root, "train")
    (vtab_root / "val200.txt").unlink()
    with pytest.raises(DatasetError, match=r"list file .*val200.txt is missing.*expected layout"):
        VTAB1kDataset(vtab_root, "val200")
    (vtab_root / "val200.txt").write_text("images/a.png 0\nimages/b.png one\n")
    with pytest.raises(DatasetError, match=r"val200.txt:2: malformed line 'images/b.png one'"):
        VTAB1kDataset(vtab_root, "val200")
    (vtab_root / "val200.txt").write_text("images/nothing.png 0\n")
    with pytest.raises(DatasetError, match=r"missing: .*nothing.png.*expected layout"):
        VTAB1kDataset(vtab_root, "val200")
    (vtab_root / "val200.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match=r"val200.txt holds no images"):
        VTAB1kDataset(vtab_root, "val200")


# --------------------------------------------------------------------------- FGVC


def _write_fgvc(root: Path, write_png, image_dir: str = "images") -> None:
    splits = {
        "train": {"001.a/x1.png": 3, "002.b/x2.png": 7, "003.c/x3.png": 10},
        "val": {"001.a/x4.png": 3},
        "test": {"002.b/x5.png": 7, "003.c/x6.png": 10},
    }
    for split, entries in splits.items():
        (root / f"{split}.json").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}.json").write_text(json.dumps(entries))
        for rel in entries:
            write_png(root / image_dir / rel, BLUE)


def test_fgvc_remaps_labels_and_finds_images(tmp_path: Path, write_png) -> None:
    root = tmp_path / "cub"
    _write_fgvc(root, write_png)
    ds = FGVCDataset(root, "train", dataset="cub")
    assert len(ds) == 3 and ds.targets == [0, 1, 2] and ds.num_classes == 3
    assert ds.label_map == {3: 0, 7: 1, 10: 2} and ds.image_dir == root / "images"
    image, label = ds[2]
    assert image.shape == (3, 10, 12) and label == 2
    assert len(FGVCDataset(root, "trainval")) == 4
    assert FGVCDataset(root, "test").targets == [1, 2]


def test_fgvc_image_dir_defaults_and_override(tmp_path: Path, write_png) -> None:
    flowers = tmp_path / "flowers"
    _write_fgvc(flowers, write_png, image_dir="jpg")
    assert FGVCDataset(flowers, "val", dataset="flowers").image_dir == flowers / "jpg"
    cars = tmp_path / "cars"
    _write_fgvc(cars, write_png, image_dir="")
    assert FGVCDataset(cars, "val", dataset="cars").image_dir == cars
    other = tmp_path / "other"
    _write_fgvc(other, write_png, image_dir="pics")
    assert len(FGVCDataset(other, "test", image_dir="pics")) == 2
    with pytest.raises(DatasetError, match=r"missing: .*x4.png.*image_dir defaults"):
        FGVCDataset(other, "val")


def test_fgvc_errors_name_the_problem(tmp_path: Path, write_png) -> None:
    root = tmp_path / "dogs"
    with pytest.raises(DatasetError, match=r"FGVC dataset folder .*dogs does not exist"):
        FGVCDataset(root, "train")
    _write_fgvc(root, write_png, image_dir="Images")
    with pytest.raises(DatasetError, match=r"unknown FGVC dataset 'birds'.*cub, nabirds"):
        FGVCDataset(root, "train", dataset="birds")
    with pytest.raises(DatasetError, match=r"unknown FGVC split 'train800'"):
        FGVCDataset(root, "train800")
    (root / "val.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match=r"val.json holds a list, not an object"):
        FGVCDataset(root, "val", dataset="dogs")
    (root / "val.json").write_text('{"001.a/x4.png": "three"}')
    with pytest.raises(DatasetError, match=r"entry '001.a/x4.png' has label 'three'"):
        FGVCDataset(root, "val", dataset="dogs")
    (root / "val.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"val.json is not valid JSON"):
        FGVCDataset(root, "val", dataset="dogs")
    (root / "val.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"holds no images"):
        FGVCDataset(root, "val", dataset="dogs")
    (root / "test.json").unlink()
    with pytest.raises(DatasetError, match=r"split file .*test.json is missing"):
        FGVCDataset(root, "test", dataset="dogs")


# --------------------------------------------------------------------------- image folders


@pytest.fixture
def folder_root(tmp_path: Path, write_png) -> Path:
    root = tmp_path / "folder"
    write_png(root / "train" / "cat" / "1.png", RED)
    write_png(root / "train" / "cat" / "2.JPG", RED)
    write_png(root / "train" / "dog" / "1.png", GREEN)
    write_png(root / "train" / "eel" / "nested" / "1.png", BLUE)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    write_png(root / "val" / "eel" / "1.png", BLUE)
    return root


def test_folder_classes_come_from_train(folder_root: Path) -> None:
    train = ImageFolderDataset(folder_root, "train")
    assert train.classes == ["cat", "dog", "eel"] and train.num_classes == 3
    assert train.targets == [0, 0, 1, 2]
    val = ImageFolderDataset(folder_root, "val")
    assert val.targets == [2] and val.num_classes == 3  # same indices as train
    image, label = val[0]
    assert label == 2 and torch.allclose(image[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))


def test_folder_errors_name_the_problem(folder_root: Path, write_png) -> None:
    with pytest.raises(DatasetError, match=r"split folder for 'test' .*expected layout"):
        ImageFolderDataset(folder_root, "test")
    write_png(folder_root / "test" / "fox" / "1.png", RED)
    with pytest.raises(DatasetError, match=r"class folder\(s\) fox unknown to .*train"):
        ImageFolderDataset(folder_root, "test")
    (folder_root / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"empty holds no images"):
        ImageFolderDataset(folder_root, "empty")
    with pytest.raises(DatasetError, match=r"image folder root .*nowhere does not exist"):
        ImageFolderDataset(folder_root / "nowhere", "train")


def test_as_tensors_needs_one_size(folder_root: Path, write_png) -> None:
    write_png(folder_root / "val" / "eel" / "2.png", RED, size=(5, 5))
    ds = ImageFolderDataset(folder_root, "val")
    with pytest.raises(DatasetError, match="2 sizes; pass a transform that resizes"):
        ds.as_tensors()
    x, _ = ds.as_tensors(make_transform(4, (0, 0, 0), (1, 1, 1)))
    assert x.shape == (2, 3, 4, 4)


def test_unreadable_image_is_reported(folder_root: Path) -> None:
    (folder_root / "val" / "eel" / "1.png").write_bytes(b"garbage")
    ds = ImageFolderDataset(folder_root, "val")
    with pytest.raises(DatasetError, match=r"cannot read image file .*1.png"):
        ds[0]


# --------------------------------------------------------------------------- build_dataset


def test_build_dataset_dispatches_every_kind(
    vtab_root: Path, folder_root: Path, tmp_path: Path, write_png
) -> None:
    assert set(DATASET_KINDS) == {"synthetic", "vtab", "fgvc", "folder"}
    t = make_transform(8, (0, 0, 0), (1, 1, 1))
    assert len(build_dataset("vtab", str(vtab_root), "test", t)) == 2
    assert len(build_dataset("vtab", str(vtab_root.parent), "test", task="toy")) == 2
    assert build_dataset("folder", str(folder_root), "train")[0][0].shape == (3, 10, 12)
    _write_fgvc(tmp_path / "nabirds", write_png)
    assert len(build_dataset("fgvc", str(tmp_path / "nabirds"), "val", dataset="nabirds")) == 1
    synth = build_dataset("synthetic", "synth-count", "val200", t)
    assert len(synth) == 200 and synth[0][0].shape == (3, 8, 8)


def test_build_dataset_errors() -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset kind 'tfds'.*synthetic, vtab"):
        build_dataset("tfds", "x", "train")
    with pytest.raises(DatasetError, match=r"'vtab' takes no option seed.*task"):
        build_dataset("vtab", "x", "test", seed=1)
    with pytest.raises(DatasetError, match="needs root"):
        build_dataset("folder", None, "train")
