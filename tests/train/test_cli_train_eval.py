"""`vpeft train` → `vpeft eval` round trip, and clear errors for bad --data values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from vpeft.cli.data_option import DataSpec, flip_keeps_labels
from vpeft.cli.main import app

BACKBONE = ["--backbone", "vit_tiny_patch16_224", "--img-size", "32"]


def _image_folder(root, per_class: dict[str, int]) -> None:
    """root/<split>/<red|blue>/*.png: reddish vs bluish 32x32 images."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for label, channel in (("blue", 2), ("red", 0)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 120, size=(32, 32, 3), dtype=np.uint8)
                pixels[..., channel] += 120
                Image.fromarray(pixels).save(folder / f"{i}.png")


def _invoke(args):
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def test_train_then_eval_round_trip(tmp_path):
    data = tmp_path / "images"
    _image_folder(data, {"train": 6, "val": 2, "test": 3})
    out = tmp_path / "run"
    args = [
        "train", *BACKBONE, "--method", "lora", "--opt", "rank=2", "--data", f"folder:{data}",
        "--out", str(out), "--epochs", "2", "--warmup-epochs", "0", "--batch-size", "4",
        "--lr", "0.01", "--train-split", "train", "--val-split", "val", "--train-opt",
        "min_lr=0", "--device", "cpu", "--no-progress", "--json",
    ]  # fmt: skip
    code, stdout, stderr = _invoke(args)
    assert code == 0, stderr
    summary = json.loads(stdout)  # exactly one JSON object on stdout
    assert summary == json.loads((out / "summary.json").read_text())  # data + splits recorded
    assert summary["data"] == f"folder:{data}" and summary["splits"]["train"] == "train"
    assert summary["augmentation"] == {"augment": False, "hflip": False}
    assert summary["config"]["min_lr"] == 0.0 and summary["config"]["optimizer"] == "adamw"
    assert summary["trainable"]["head"] == 192 * 2 + 2  # vit_tiny width 192, 2 classes
    assert summary["trainable"]["trainable_encoder"] == 12 * 2 * 2 * (192 + 192)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2

    code, stdout, stderr = _invoke(
        ["eval", *BACKBONE, "--adapter", str(out / "adapter.safetensors"),
         "--data", f"folder:{data}", "--split", "test", "--device", "cpu", "--json"]
    )  # fmt: skip
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["count"] == 6
    assert record["top1"] == pytest.approx(summary["test_top1"])
    assert record["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)

    # the same command again refuses to overwrite; --resume on the finished run is a no-op
    code, _, stderr = _invoke(args)
    assert code == 2 and "--resume" in stderr
    code, stdout, _ = _invoke([*args, "--resume"])
    assert code == 0 and json.loads(stdout)["test_top1"] == summary["test_top1"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("vtab:/no/such/vtab-1k/cifar", "dataset folder /no/such/vtab-1k/cifar does not exist"),
        ("imagenet:/data", "kind 'imagenet' is unknown"),
        ("synth-count", "expects KIND:ROOT_OR_TASK"),
        ("synthetic:synth-nothing", "synth-nothing"),
    ],
)
def test_bad_data_option(tmp_path, data, message):
    code, stdout, stderr = _invoke(
        ["train", *BACKBONE, "--method", "linear", "--data", data, "--out", str(tmp_path / "o"),
         "--epochs", "1", "--warmup-epochs", "0"]
    )  # fmt: skip
    assert code == 2
    assert stdout == ""
    assert message in " ".join(stderr.split())
    assert "Traceback" not in stderr


def test_flag_and_train_opt_clash(tmp_path):
    code, _, stderr = _invoke(
        ["train", *BACKBONE, "--method", "linear", "--data", "synthetic:synth-count", "--out",
         str(tmp_path / "o"), "--lr", "0.1", "--train-opt", "lr=0.2"]
    )  # fmt: skip
    assert code == 2 and "given both" in stderr


@pytest.mark.slow
def test_train_on_synthetic_task(tmp_path):
    """A full synthetic VTAB-like task (800 train / 200 val / 2000 test) through the CLI."""
    out = tmp_path / "run"
    code, stdout, stderr = _invoke(
        ["train", *BACKBONE, "--method", "linear", "--data", "synthetic:synth-count", "--out",
         str(out), "--epochs", "2", "--warmup-epochs", "0", "--lr", "0.01", "--no-progress",
         "--json"]
    )  # fmt: skip
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["splits"] == {"train": "train800", "val": "val200", "test": "test"}
    assert summary["train_samples"] == 800
    assert summary["test_top1"] is not None and summary["val_top1"] is not None


def test_augment_changes_training_and_is_recorded(tmp_path):
    """--augment redraws crops/flips of the training split only; it is recorded in summary.json."""
    data = tmp_path / "images"
    _image_folder(data, {"train": 6, "test": 3})
    runs = {}
    for name, extra in (("plain", []), ("augmented", ["--augment"])):
        out = tmp_path / name
        code, stdout, stderr = _invoke(
            ["train", *BACKBONE, "--method", "bitfit", "--data", f"folder:{data}", "--out",
             str(out), "--epochs", "2", "--warmup-epochs", "0", "--batch-size", "4", "--lr",
             "0.01", "--train-split", "train", "--val-split", "none", "--device", "cpu",
             "--no-progress", "--json", *extra]
        )  # fmt: skip
        assert code == 0, stderr
        runs[name] = (json.loads(stdout), load_file(out / "adapter.safetensors"))
    (plain, plain_w), (augmented, aug_w) = runs["plain"], runs["augmented"]
    assert plain["augmentation"] == {"augment": False, "hflip": False}
    assert augmented["augmentation"] == {"augment": True, "hflip": True}
    assert augmented == json.loads((tmp_path / "augmented" / "summary.json").read_text())
    assert plain["train_samples"] == augmented["train_samples"] == 12
    # same seed, same initial values: only the augmented inputs can move the weights apart
    assert plain_w.keys() == aug_w.keys()
    assert any(not torch.equal(plain_w[k], aug_w[k]) for k in plain_w)


def test_hflip_follows_the_task_and_needs_augment(tmp_path):
    assert flip_keeps_labels(DataSpec.parse("synthetic:synth-objects"))
    assert not flip_keeps_labels(DataSpec.parse("synthetic:synth-orientation"))
    assert flip_keeps_labels(DataSpec.parse(f"folder:{tmp_path}"))
    code, _, stderr = _invoke(
        ["train", *BACKBONE, "--method", "linear", "--data", "synthetic:synth-count", "--out",
         str(tmp_path / "o"), "--no-hflip"]
    )  # fmt: skip
    assert code == 2 and "only applies with --augment" in stderr
