"""Readers of VQA v2, NLVR2, Flickr30k (Karpathy) and class folders with names, on miniatures
written in the standard layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from vpeft.data.vl.answers import soft_score
from vpeft.data.vl.readers import base_new_split, class_folder, flickr30k, nlvr2, vqa_v2
from vpeft.errors import DatasetError


def _png(path: Path, colour=(200, 10, 10), size=(20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


MC = {70: "red", 90: "3", 71: "yes"}


def _vqa(root: Path) -> None:
    qs = {"questions": [{"image_id": 7, "question": "What colour?", "question_id": 70},
                        {"image_id": 9, "question": "How many?", "question_id": 90},
                        {"image_id": 7, "question": "Is it red?", "question_id": 71}]}  # fmt: skip
    people = {70: ["red"] * 4 + ["Red."] * 2 + ["blue"] * 4, 90: ["two"] * 2 + ["3"] * 8,
              71: ["yes"] * 10}  # fmt: skip
    anns = {"annotations": [
        {"question_id": q, "image_id": 0, "multiple_choice_answer": MC[q],
         "answers": [{"answer": x, "answer_id": i + 1} for i, x in enumerate(a)]}
        for q, a in people.items()]}  # fmt: skip
    (root / "v2_OpenEnded_mscoco_train2014_questions.json").write_text(json.dumps(qs))
    (root / "v2_mscoco_train2014_annotations.json").write_text(json.dumps(anns))
    for i in (7, 9):
        _png(root / "train2014" / f"COCO_train2014_{i:012d}.jpg")


def test_vqa_v2_reader(tmp_path):
    _vqa(tmp_path)
    data = vqa_v2(tmp_path, "train2014", top_k=3, image_size=16)
    # multiple-choice answers: red (70), 3 (90), yes (71): one each, ties by text
    assert data.answers == ("3", "red", "yes")
    assert len(data) == 3 and data.question_ids.tolist() == [70, 90, 71]
    t = data.targets
    # "Red." normalises to "red": 6 of 10 annotators → 1.0; "3": 8 → 1.0; "two" → "2" is
    # outside the vocabulary; "yes": 10 → 1.0
    assert t[0].tolist() == [0.0, 1.0, 0.0] and t[1].tolist() == [1.0, 0.0, 0.0]
    item = data[1]
    assert item["pixel_values"].shape == (3, 16, 16) and item["vqa_targets"][0] == 1.0
    assert data.image_index.tolist() == [0, 1, 0]  # image 7 read once
    bigger = vqa_v2(tmp_path, "train2014", answers=("2", "3", "blue", "red"))
    assert bigger.targets[1].tolist() == pytest.approx([soft_score(2), 1.0, 0.0, 0.0])
    assert bigger.targets[0].tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0])


def test_vqa_v2_errors_name_the_file(tmp_path):
    _vqa(tmp_path)
    (tmp_path / "train2014" / "COCO_train2014_000000000009.jpg").unlink()
    with pytest.raises(DatasetError, match=r"COCO_train2014_000000000009\.jpg"):
        vqa_v2(tmp_path, "train2014")
    with pytest.raises(DatasetError, match=r"v2_OpenEnded_mscoco_val2014_questions\.json"):
        vqa_v2(tmp_path, "val2014")
    (tmp_path / "v2_mscoco_train2014_annotations.json").write_text("{oops")
    with pytest.raises(DatasetError, match="not valid JSON"):
        vqa_v2(tmp_path, "train2014", answers=("yes",))


def test_nlvr2_reader(tmp_path):
    lines = [
        {"identifier": "train-1-0-0", "sentence": "One dog.", "label": "True", "directory": 3},
        {"identifier": "train-1-0-1", "sentence": "Two dogs.", "label": "False", "directory": 3},
    ]
    (tmp_path / "train.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    _png(tmp_path / "images/train/3/train-1-0-img0.png", (255, 0, 0))
    _png(tmp_path / "images/train/3/train-1-0-img1.png", (0, 0, 255))
    data = nlvr2(tmp_path, "train", image_size=8)
    assert data.labels.tolist() == [1, 0]
    item = data[1]
    assert item["pixel_values"].shape == (2, 3, 8, 8) and item["pixel_mask"].shape == (2, 8, 8)
    # left = img0 (red), right = img1 (blue); ViLT normalisation maps 1 → 1, 0 → -1
    assert item["pixel_values"][0, 0].mean() > 0.9 and item["pixel_values"][1, 2].mean() > 0.9
    (tmp_path / "dev.json").write_text(json.dumps({"identifier": "dev-5-1-0", "sentence": "x",
                                                   "label": "True"}))  # fmt: skip
    with pytest.raises(DatasetError, match=r"dev-5-1-img0\.png"):
        nlvr2(tmp_path, "dev")
    _png(tmp_path / "dev/dev-5-1-img0.png")
    _png(tmp_path / "dev/dev-5-1-img1.png")
    assert len(nlvr2(tmp_path, "dev")) == 1
    (tmp_path / "test1.json").write_text('{"identifier": "test1-0-0-0", "sentence": "x", '
                                         '"label": "maybe"}')  # fmt: skip
    with pytest.raises(DatasetError, match="label must be"):
        nlvr2(tmp_path, "test1")


def test_flickr30k_reader(tmp_path):
    entries = [
        {"filename": "1.jpg", "split": "test", "sentences": [{"raw": "A dog."}, {"raw": "Dog."}]},
        {"filename": "2.jpg", "split": "train", "sentences": [{"raw": "A cat."}]},
        {"filename": "3.jpg", "split": "test", "sentences": [{"raw": "A car."}]},
    ]
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        _png(tmp_path / "flickr30k-images" / name)
    data = flickr30k(tmp_path, "test", mode="all", image_size=8)
    assert data.num_images == 2 and data.texts == ["A dog.", "Dog.", "A car."]
    assert [int(data[i]["match"]["label"]) for i in range(len(data))] == [1, 1, 0, 0, 0, 1]
    (tmp_path / "flickr30k-images" / "3.jpg").unlink()
    with pytest.raises(DatasetError, match=r"3\.jpg"):
        flickr30k(tmp_path, "test")
    with pytest.raises(DatasetError, match="no image of split"):
        flickr30k(tmp_path, "val")


def test_class_folder_with_names_and_base_new(tmp_path):
    folders = {"n01": "tench", "n02": "goldfish", "n03": "great white shark"}
    (tmp_path / "classnames.txt").write_text("".join(f"{k} {v}\n" for k, v in folders.items()))
    for k in folders:
        _png(tmp_path / "train" / k / "a.png")
        _png(tmp_path / "train" / k / "b.png")
    every = class_folder(tmp_path, "train", image_size=8)
    assert every.classes == ("tench", "goldfish", "great white shark")
    assert every.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert every[0]["pixel_values"].shape == (3, 8, 8)
    new = class_folder(tmp_path, "train", classes="new")
    assert new.classes == ("great white shark",) and new.labels.tolist() == [0, 0]
    assert base_new_split(list("abcde")) == (("a", "b", "c"), ("d", "e"))
    (tmp_path / "classnames.txt").write_text("n01\n")
    with pytest.raises(DatasetError, match="malformed line"):
        class_folder(tmp_path, "train")
    assert isinstance(every.labels, torch.Tensor)
