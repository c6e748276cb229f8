"""`folder:` data: classes come from the training split, other splits are mapped onto them;
class names are recorded in summary.json and the adapter; `vpeft eval` checks them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from vpeft import adapter_info
from vpeft.cli.main import app

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}
TRAIN = [
    "-b", "vit-tiny-synth", "-m", "linear", "--epochs", "6", "--warmup-epochs", "0",
    "--batch-size", "6", "--lr", "0.05", "--device", "cpu", "--no-progress", "--json",
]  # fmt: skip


def _images(folder: Path, colours: list[str], n: int = 4) -> None:
    rng = np.random.default_rng(0)
    for name in colours:
        (folder / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(
                np.array(COLOURS[name]) * 0.8 + rng.integers(0, 50, (32, 32, 3)), 0, 255
            )
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{i}.png")


def _invoke(args: list[str]) -> tuple[int, dict]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, json.loads(result.stdout.splitlines()[-1]) if result.stdout else {}


def test_test_split_lacking_a_class_keeps_the_training_labels(tmp_path: Path) -> None:
    data = tmp_path / "colours"
    _images(data / "train800", list(COLOURS))
    _images(data / "val200", list(COLOURS), 1)
    _images(data / "test", ["blue", "red"])  # no green: red must stay label 2, not become 1
    code, summary = _invoke(
        ["train", *TRAIN, "--data", f"folder:{data}", "--out", str(tmp_path / "o")]
    )
    assert code == 0, summary
    assert summary["classes"] == ["blue", "green", "red"]
    assert summary["test_top1"] == 100.0
    pm_info = adapter_info.read_info(tmp_path / "o" / "adapter.safetensors")
    assert pm_info["classes"] == ["blue", "green", "red"]
    assert pm_info["preprocessing"]["input_size"] == [32, 32]
    code, record = _invoke(["eval", "-b", "vit-tiny-synth", "--adapter",
                            str(tmp_path / "o" / "adapter.safetensors"), "--data",
                            f"folder:{data}", "--device", "cpu", "--json"])  # fmt: skip
    assert code == 0 and record["top1"] == 100.0
    code, record = _invoke(["eval", "-b", "vit-tiny-synth", "--img-size", "48", "--adapter",
                            str(tmp_path / "o" / "adapter.safetensors"), "--data",
                            f"folder:{data}", "--device", "cpu", "--json"])  # fmt: skip
    assert code == 2 and "--img-size 32" in record["error"]["message"]
    assert "strict_fingerprint" not in record["error"]["message"]


def test_folder_root_with_train_val_test_works_by_default_and_eval_refuses_new_classes(
    tmp_path: Path,
) -> None:
    data = tmp_path / "d"
    _images(data / "train", ["blue", "red"], 2)
    _images(data / "test", ["blue", "red"], 1)
    code, summary = _invoke(["train", *TRAIN, "--epochs", "1", "--data", f"folder:{data}",
                             "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 0, summary
    assert summary["splits"] == {"train": "train", "val": None, "test": "test"}
    other = tmp_path / "other"
    _images(other / "test", ["blue", "green"], 1)
    code, record = _invoke(["eval", "-b", "vit-tiny-synth", "--adapter",
                            str(tmp_path / "o" / "adapter.safetensors"), "--data",
                            f"folder:{other}", "--device", "cpu", "--json"])  # fmt: skip
    assert code == 2 and "green" in record["error"]["message"]


def test_empty_class_folder_in_training_split_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "d"
    _images(data / "train", ["blue", "red"], 1)
    (data / "train" / "green").mkdir()
    code, record = _invoke(
        ["train", *TRAIN, "--data", f"folder:{data}", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "green" in record["error"]["message"]
    assert "no images" in record["error"]["message"]
