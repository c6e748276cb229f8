"""``--data vqa-v2:DIR`` / ``nlvr2:DIR`` / ``flickr30k:DIR`` / ``clip-base:DIR`` / ``clip-new:DIR``
on miniatures of the standard layouts (`layouts`), with the bundled tiny ViLT and CLIP: split
sizes equal the miniature's counts, the VQA score of a run equals the formula on its
predictions, retrieval recalls obey the gallery's closed forms, and every missing piece is an
error naming it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch.utils.data import default_collate
from typer.testing import CliRunner

from vpeft.cli.main import app
from vpeft.cli.vl_data import load_vl
from vpeft.data.vl.answers import soft_score
from vpeft.factory import create_backbone
from vpeft.zoo import BUNDLED_VL

from . import layouts as L

TRAIN = [
    "--method",
    "lora",
    "--opt",
    "rank=2",
    "--epochs",
    "1",
    "--warmup-epochs",
    "0",
    "--batch-size",
    "4",
    "--lr",
    "0.003",
    "--device",
    "cpu",
    "--no-progress",
    "--json",
]


def _invoke(args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def vilt():
    return create_backbone("vilt-tiny-synth")


@pytest.fixture(scope="module")
def clip():
    return create_backbone("clip-tiny-synth")


def test_splits_equal_the_miniature_counts(tmp_path, vilt, clip):
    vqa = L.write_vqa(tmp_path / "vqa")
    data = load_vl("vqa-v2", str(tmp_path / "vqa"), vilt)
    assert data.names == {"train": "train2014", "val": "val2014", "test": "val2014"}
    assert [len(data.splits[r]) for r in ("train", "val")] == [vqa["train2014"], vqa["val2014"]]
    assert data.splits["val"] is data.splits["test"]  # read once
    # every answer is a multiple-choice answer of train2014: vocabulary of 4, ties by text
    assert data.splits["train"].answers == ("2", "no", "red", "yes")
    assert data.task.num_answers == 4
    for k, qid in enumerate(data.splits["val"].question_ids.tolist()):
        people = L.human_answers(qid)
        want = [soft_score(people.count(a)) for a in data.splits["val"].answers]
        assert data.splits["val"].targets[k].tolist() == pytest.approx(want)

    L.write_nlvr2(tmp_path / "nlvr2")
    data = load_vl("nlvr2", str(tmp_path / "nlvr2"), vilt)
    assert {r: len(d) for r, d in data.splits.items()} == {"train": 4, "val": 2, "test": 3}
    assert data.splits["test"].labels.tolist() == [1, 0, 1]
    assert data.splits["train"][0]["pixel_values"].shape == (2, 3, 64, 64)  # ViLT's 64x64

    counts = L.write_flickr30k(tmp_path / "f30k")
    data = load_vl("flickr30k", str(tmp_path / "f30k"), vilt)
    (ni, nt), (_, tt) = counts["test"], counts["train"]
    assert (data.task.num_images, data.task.num_texts) == (ni, nt)
    assert len(data.splits["test"]) == ni * nt and len(data.splits["train"]) == 2 * tt  # ITM
    data = load_vl("flickr30k", str(tmp_path / "f30k"), clip)
    assert len(data.splits["train"]) == tt and type(data.task).__name__.startswith("Contrastive")

    per_class = L.write_classes(tmp_path / "classes")
    data = load_vl("clip-new", str(tmp_path / "classes"), clip)
    assert data.task.class_names == ("red circle", "blue square")
    assert data.new_classes == ("green star", "grey ring")
    assert {r: len(d) for r, d in data.splits.items()} == {r: 2 * n for r, n in per_class.items()}
    assert load_vl("clip-base", str(tmp_path / "classes"), clip).new_classes is None


def test_train_vqa_v2_score_is_the_formula_on_its_predictions(tmp_path, vilt):
    import vpeft

    L.write_vqa(tmp_path / "vqa")
    out = tmp_path / "run"
    data = f"vqa-v2:{tmp_path / 'vqa'}"
    code, stdout, stderr = _invoke(
        ["train", "-b", "vilt-tiny-synth", "--data", data, "--out", out, *TRAIN]
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["splits"] == {"train": "train2014", "val": "val2014", "test": "val2014"}
    reported = summary["metrics"]["test"]["vqa/vqa_score"]

    pm = vpeft.load(out / "adapter.safetensors", base=create_backbone("vilt-tiny-synth"))
    pm.eval()
    test = load_vl("vqa-v2", str(tmp_path / "vqa"), vilt, ("test",)).splits["test"]
    batch = default_collate([test[i] for i in range(len(test))])
    with torch.no_grad():
        logits = pm({k: batch[k] for k in pm.tasks["vqa"].input_fields})
    chosen = test.targets[torch.arange(len(test)), logits.argmax(-1)]
    assert reported == pytest.approx(100 * chosen.mean().item(), abs=1e-4)
    assert summary["metrics"]["val"]["vqa/vqa_score"] == pytest.approx(reported)

    code, stdout, stderr = _invoke(
        [
            "eval",
            "-b",
            "vilt-tiny-synth",
            "--adapter",
            out / "adapter.safetensors",
            "--data",
            data,
            "--split",
            "test",
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["count"] == 6 and record["metrics"]["vqa/vqa_score"] == pytest.approx(reported)


def test_train_flickr30k_itm_recalls_and_nlvr2_accuracy(tmp_path):
    L.write_flickr30k(tmp_path / "f30k")
    code, stdout, stderr = _invoke(
        [
            "train",
            "-b",
            "vilt-tiny-synth",
            "--data",
            f"flickr30k:{tmp_path / 'f30k'}",
            "--out",
            tmp_path / "ret",
            *TRAIN,
        ]
    )
    assert code == 0, stderr
    m = json.loads(stdout)["metrics"]["test"]
    # 3 images, 2 captions each: any 5 of the 6 captions hold a positive, any 3 images do
    for key in ("i2t_r5", "i2t_r10", "t2i_r5", "t2i_r10"):
        assert m[f"retrieval/{key}"] == pytest.approx(100.0)
    assert round(m["retrieval/i2t_r1"] * 3 / 100, 6) in (0, 1, 2, 3)
    assert round(m["retrieval/t2i_r1"] * 6 / 100, 6) in range(7)
    assert m["retrieval/rsum"] == pytest.approx(400 + m["retrieval/i2t_r1"] + m["retrieval/t2i_r1"])

    L.write_nlvr2(tmp_path / "nlvr2")
    code, stdout, stderr = _invoke(
        [
            "train",
            "-b",
            "vilt-tiny-synth",
            "--data",
            f"nlvr2:{tmp_path / 'nlvr2'}",
            "--out",
            tmp_path / "nlvr2run",
            *TRAIN,
        ]
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["splits"] == {"train": "train", "val": "dev", "test": "test1"}
    assert round(summary["metrics"]["test"]["nlvr2/top1"] * 3 / 100, 6) in (0, 1, 2, 3)


def test_train_clip_new_scores_the_new_classes(tmp_path):
    L.write_classes(tmp_path / "classes")
    code, stdout, stderr = _invoke(
        [
            "train",
            "-b",
            "clip-tiny-synth",
            "--data",
            f"clip-new:{tmp_path / 'classes'}",
            "--out",
            tmp_path / "run",
            *TRAIN,
        ]
    )
    assert code == 0, stderr
    top1 = json.loads(stdout)["metrics"]["test"]["clip/top1"]
    assert round(top1 * 4 / 100, 6) in range(5)  # 4 images of the 2 new classes


def _error(args):
    code, stdout, _ = _invoke([*args, "--json"])
    assert code == 2, stdout
    return json.loads(stdout)["error"]["message"]


def test_each_missing_piece_is_named(tmp_path):
    train = [
        "train",
        "-b",
        "vilt-tiny-synth",
        "--method",
        "lora",
        "--out",
        tmp_path / "o",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]
    assert "does not exist" in _error([*train, "--data", f"vqa-v2:{tmp_path / 'nothere'}"])

    root = tmp_path / "vqa"
    L.write_vqa(root)
    (root / "v2_mscoco_val2014_annotations.json").unlink()
    message = _error([*train, "--data", f"vqa-v2:{root}"])
    assert "v2_mscoco_val2014_annotations.json" in message
    L.write_vqa(root)
    (root / "val2014" / "COCO_val2014_000000000201.jpg").unlink()
    assert "COCO_val2014_000000000201.jpg" in _error([*train, "--data", f"vqa-v2:{root}"])

    L.write_classes(tmp_path / "classes")
    (tmp_path / "classes" / "classnames.txt").unlink()
    message = _error(
        [*train[:2], "clip-tiny-synth", *train[3:], "--data", f"clip-base:{tmp_path / 'classes'}"]
    )
    assert "classnames.txt" in message

    L.write_vqa(root)
    folder = tmp_path / "vilt-no-tokenizer"
    shutil.copytree(BUNDLED_VL["vilt-tiny-synth"].path, folder)
    (folder / "tokenizer.json").unlink()
    message = _error(
        ["train", "-b", "hf:ViltModel", "--weights", folder, *train[3:], "--data", f"vqa-v2:{root}"]
    )
    assert str(folder / "tokenizer.json") in message and "does not download" in message
    # the same folder with its tokenizer is a working backbone (hf:<Class> --weights DIR)
    assert "--weights" in _error(
        ["train", "-b", "hf:CLIPModel", "--weights", folder, *train[3:], "--data", f"vqa-v2:{root}"]
    )


def test_bench_protocol_vl_runs_clip_base_to_new_on_class_folders(tmp_path):
    from vpeft.bench.store import ResultStore

    per_class = L.write_classes(tmp_path / "data" / "clip-classes")
    store = tmp_path / "store"
    code, stdout, stderr = _invoke(
        ["bench", "run", "--name", "c", "--protocol", "vl", "--tasks", "clip", "--methods",
         "lora", "--backbone", "clip-tiny-synth", "--data-root", tmp_path / "data", "--seeds",
         "0", "--lr", "1e-3", "--wd", "0", "--epochs", "1", "--store", store, "--device", "cpu",
         "--json"]
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads(stdout)["complete"]
    [record] = list(ResultStore(store).records(sweep="c"))
    assert record["spec"]["data"] == f"clip-base:{tmp_path / 'data' / 'clip-classes'}"
    assert record["flops"]["train_images"] == 2 * per_class["train"]  # the 2 base classes
    b2n = record["metrics"]["base_to_new"]
    test_images = 2 * per_class["test"]  # per half
    for half in ("base", "new"):
        assert round(b2n[half] * test_images / 100, 6) in range(test_images + 1)
    if b2n["base"] + b2n["new"] > 0:
        assert b2n["hm"] == pytest.approx(2 * b2n["base"] * b2n["new"] / (b2n["base"] + b2n["new"]))
