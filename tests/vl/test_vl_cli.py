"""`vpeft train` / `eval` / `profile` on ``--data vl-synthetic:PART`` with tiny VL backbones
saved as transformers folders (config.json + model.safetensors + tokenizer.json)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vpeft.cli.main import app
from vpeft.data.vl import write_tokenizer

from .test_vl_models import tiny_clip, tiny_vilt


def _invoke(args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _folder(model, path):
    model.save_pretrained(path)
    write_tokenizer(path)
    return path


TRAIN = ["--epochs", 2, "--warmup-epochs", 0, "--batch-size", 8, "--lr", 0.003,
         "--device", "cpu", "--no-progress", "--json"]  # fmt: skip


def _train(backbone, out, *args):
    """`vpeft train` of LoRA on ``backbone`` with the short CPU schedule above."""
    return _invoke(["train", "--backbone", backbone, "--method", "lora", *args, "--out", out,
                    *TRAIN])  # fmt: skip


def _eval(backbone, *args):
    return _invoke(["eval", "--backbone", backbone, *args, "--device", "cpu", "--json"])


def test_train_then_eval_vqa(small_suite, tmp_path):
    backbone = _folder(tiny_vilt(), tmp_path / "vilt")
    out = tmp_path / "run"
    code, stdout, stderr = _train(backbone, out, "--opt", "rank=2", "--data", "vl-synthetic:vqa")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert set(summary["metrics"]) == {"val", "test"}
    score = summary["metrics"]["test"]["vqa/vqa_score"]
    assert 0.0 <= score <= 100.0
    assert summary["trainable"]["head"] > 0 and summary["trainable"]["trainable_encoder"] > 0

    code, stdout, stderr = _eval(
        backbone,
        "--adapter",
        out / "adapter.safetensors",
        "--data",
        "vl-synthetic:vqa",
        "--split",
        "test",
    )
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["metrics"]["vqa/vqa_score"] == pytest.approx(score, abs=1e-9)
    assert record["count"] == 60  # 20 test images × 3 questions


def test_clip_new_is_scored_with_the_new_class_names(small_suite, tmp_path):
    backbone = _folder(tiny_clip(), tmp_path / "clip")
    out = tmp_path / "run"
    code, stdout, stderr = _train(backbone, out, "--data", "vl-synthetic:clip-new")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["splits"]["test"] == "test_new"
    new = summary["metrics"]["test"]["clip/top1"]
    code, stdout, stderr = _eval(
        backbone, "--adapter", out / "adapter.safetensors", "--data", "vl-synthetic:clip-new"
    )
    assert code == 0, stderr
    assert json.loads(stdout)["metrics"]["clip/top1"] == pytest.approx(new, abs=1e-9)


def test_wrong_pairings_are_clear_errors(small_suite, tmp_path):
    backbone = _folder(tiny_vilt(), tmp_path / "vilt")
    code, _, stderr = _train(backbone, tmp_path / "run", "--data", "vl-synthetic:clip-base")
    assert code != 0 and "two-tower CLIP" in stderr
    code, _, stderr = _train(
        backbone, tmp_path / "run2", "--data", "vl-synthetic:vqa", "--train-split", "train800"
    )
    assert code != 0 and "fixed by the part" in stderr


def test_profile_a_vl_backbone(tmp_path):
    backbone = _folder(tiny_vilt(), tmp_path / "vilt")
    code, stdout, stderr = _invoke(
        [
            "profile",
            "--backbone",
            backbone,
            "--method",
            "lora",
            "--batch",
            2,
            "--steps",
            1,
            "--warmup",
            0,
            "--num-classes",
            3,
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["forward_flops"] > 0 and report["trainable"] > 0
