"""`vpeft params | train | eval | profile` on dense multi-task models (tiny settings: the
full-size Swin-T at 64×64 on 16 procedural scenes, one epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpeft.cli.main import app

runner = CliRunner()
SWIN_T = ["-b", "swin_tiny_patch4_window7_224"]
TINY_RUN = [*SWIN_T, "--img-size", "64", "--data", "dense-synthetic:limit=16", "--epochs", "1",
            "--warmup-epochs", "0", "--batch-size", "8", "--no-progress"]  # fmt: skip
TASKS = ["semseg", "parts", "saliency", "normals"]


def invoke_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr or result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def test_params_builds_the_real_multi_task_model() -> None:
    got = invoke_json("params", *SWIN_T, "--tasks", "pascal-mt", "--method", "shared-adapter")
    assert got["trainable_encoder"] == got["encoder_shared"] == 2_195_232
    assert got["encoder_per_task"] == 0 and got["trainable"] == 4_735_616
    assert got["tasks"] == TASKS and got["shared"] is True
    got = invoke_json("params", *SWIN_T, "--tasks", ",".join(TASKS), "--method", "full", "--shared")
    assert (got["trainable_encoder"], got["trainable"]) == (27_517_818, 30_058_202)
    assert got["trainable"] + 1536 == got["total"]  # only the unused final norm is frozen


def test_params_errors() -> None:
    result = runner.invoke(app, ["params", *SWIN_T, "--tasks", "semseg,depth", "-m", "linear"])
    assert result.exit_code == 2 and "semseg" in result.stderr
    result = runner.invoke(app, ["params", *SWIN_T, "--tasks", "1", "-m", "linear", "--shared"])
    assert result.exit_code == 2 and "several tasks" in result.stderr


def test_train_eval_with_baseline_delta_m(tmp_path: Path) -> None:
    base = invoke_json("train", *TINY_RUN, "--tasks", "pascal-mt", "-m", "full",
                       "--out", str(tmp_path / "full"))  # fmt: skip
    assert set(base["headline"]) == set(TASKS)
    assert base["trainable"]["encoder_per_task"] == base["trainable"]["trainable_encoder"] > 0
    run = invoke_json("train", *TINY_RUN, "--tasks", "semseg,normals", "-m", "lora-qkv",
                      "--out", str(tmp_path / "lora"),
                      "--baseline", str(tmp_path / "full" / "summary.json"))  # fmt: skip
    assert set(run["headline"]) == {"semseg", "normals"}
    h, b = run["headline"], base["headline"]
    expected = 50 * (
        (h["semseg"] - b["semseg"]) / b["semseg"] - (h["normals"] - b["normals"]) / b["normals"]
    )
    assert run["delta_m"]["value"] == pytest.approx(expected)
    stored = json.loads((tmp_path / "lora" / "summary.json").read_text())
    assert stored["delta_m"]["value"] == run["delta_m"]["value"]
    metrics = [json.loads(line) for line in (tmp_path / "lora" / "metrics.jsonl").open()]
    assert "test/normals/mean" in metrics[-1]
    evaluated = invoke_json("eval", *SWIN_T, "--img-size", "64", "--data",
                            "dense-synthetic:limit=16", "--adapter",
                            str(tmp_path / "lora" / "adapter.safetensors"))  # fmt: skip
    assert evaluated["headline"] == pytest.approx(run["headline"], abs=1e-9)


def test_profile_counts_every_task() -> None:
    args = ["profile", *SWIN_T, "--img-size", "64", "--batch", "1", "--steps", "1",
            "--warmup", "0", "--method"]  # fmt: skip
    one = invoke_json(*args, "lora-qkv", "--tasks", "semseg")
    two = invoke_json(*args, "lora-qkv", "--tasks", "semseg,parts")
    shared = invoke_json(*args, "full", "--tasks", "semseg,parts", "--shared")
    assert two["forward_flops"] > 1.9 * one["forward_flops"]  # the backbone runs per task
    assert shared["forward_flops"] < 1.5 * one["forward_flops"]  # shared: the backbone once
