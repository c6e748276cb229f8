"""The error contract: with --json a failing command prints {"error": {"type", "message"}} as its
one stdout line and exits non-zero; output-path problems are caught before any work, in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpeft.cli.main import app

TINY = ["-b", "vit-tiny-synth"]
SYNTH = ["--data", "synthetic:synth-count"]
QUICK = ["--epochs", "1", "--warmup-epochs", "0", "--device", "cpu", "--no-progress"]


def _fail_json(args: list[str]) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 2, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    record = json.loads(lines[0])
    assert list(record) == ["error"] and set(record["error"]) == {"type", "message"}
    assert len(result.stderr.splitlines()) == 1  # and one human line on stderr, no traceback
    return record["error"]


@pytest.mark.parametrize(
    ("args", "kind", "words"),
    [
        (["methods", "nosuch"], "UnknownMethodError", "nosuch"),
        (["params", "-b", "nosuch_net", "-m", "lora", "--num-classes", "2"],
         "UnsupportedBackboneError", "nosuch_net"),
        (["train", *TINY, "-m", "lora", "--data", "nokind:x", "--out", "o"], "ConfigError",
         "--data"),
        (["eval", *TINY, "--adapter", "missing.safetensors", *SYNTH], "AdapterFileError",
         "missing.safetensors"),
        (["sensitivity", *TINY], "ConfigError", "--data"),
    ],
)  # fmt: skip
def test_json_errors_are_one_json_object(
    args: list[str], kind: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    error = _fail_json(args)
    assert error["type"] == kind and words in error["message"]


def test_train_out_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    error = _fail_json(["train", *TINY, "-m", "linear", *SYNTH, "--out", str(tmp_path / "f")])
    assert error["type"] == "OutputError" and "is an existing file" in error["message"]


def test_train_out_below_a_file_is_unwritable(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" / "run"
    error = _fail_json(["train", *TINY, "-m", "linear", *SYNTH, "--out", str(out), *QUICK])
    assert error["type"] == "OutputError" and "cannot write" in error["message"]


def test_sensitivity_out_an_existing_folder_fails_before_scoring(tmp_path: Path) -> None:
    error = _fail_json(["sensitivity", *TINY, *SYNTH, "--out", str(tmp_path)])
    assert error["type"] == "OutputError" and "existing folder" in error["message"]


def test_demo_out_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    error = _fail_json(["demo", "--out", str(tmp_path / "f"), "--methods", "linear"])
    assert error["type"] == "OutputError" and "existing file" in error["message"]
