"""`vpeft methods | params | profile`: the JSON contract, exact counts, help and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import vpeft
from vpeft.cli.common import build_backbone
from vpeft.cli.main import app

runner = CliRunner()
TEST_VIT = ["-b", "test_vit"]  # timm's 0.3M-parameter test ViT: D = 64, 6 blocks

PROFILE_TYPES = {
    "forward_flops": int,
    "train_step_flops": int,
    "saved_activation_bytes": int,
    "trainable": int,
    "step_seconds": float,
}


def invoke_json(*args: str) -> dict:
    """Run a command with --json; stdout must be exactly one JSON object, stderr empty."""
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr or result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert isinstance(record, dict)
    return record


def test_methods_json_lists_every_registered_method() -> None:
    record = invoke_json("methods")
    assert list(record) == ["methods"]
    names = [m["name"] for m in record["methods"]]
    assert names == vpeft.available_methods()
    for m in record["methods"]:
        assert list(m) == ["name", "family", "mergeable", "paper"]
        assert isinstance(m["mergeable"], bool)
        assert all(isinstance(m[k], str) and m[k] for k in ("name", "family", "paper"))
    lora = next(m for m in record["methods"] if m["name"] == "lora")
    assert lora["mergeable"] is True


def test_methods_human_table_and_one_method_with_options() -> None:
    result = runner.invoke(app, ["methods", "lora"])
    assert result.exit_code == 0
    assert "rank" in result.stdout and "tuple[str, ...]" in result.stdout
    assert invoke_json("methods", "lora")["methods"][0]["name"] == "lora"


def test_params_lora_rank8_on_vit_base_exact() -> None:
    record = invoke_json(
        "params", "--backbone", "vit_base_patch16_224", "--method", "lora",
        "--opt", "rank=8", "--num-classes", "100",
    )  # fmt: skip
    assert record == {
        "trainable": 294_912 + 76_900,
        "trainable_encoder": 294_912,  # 12 blocks × (q, v) × 8 × (768 + 768)
        "head": 76_900,  # 768 × 100 + 100
        "total": 85_798_656 + 294_912 + 76_900,  # timm's headless ViT-B/16 + LoRA + head
    }


def test_params_tasks_counts_independent_copies_on_one_frozen_backbone() -> None:
    args = ["params", *TEST_VIT, "-m", "lora", "-o", "rank=2", "--num-classes", "10"]
    one = invoke_json(*args)
    three = invoke_json(*args, "--tasks", "3")
    assert one["trainable_encoder"] == 6 * 2 * 2 * (64 + 64)  # 6 blocks × (q, v) × r(D + D)
    assert one["head"] == 64 * 10 + 10
    assert three["trainable"] == 3 * one["trainable"]
    assert three["trainable_encoder"] == 3 * one["trainable_encoder"]
    assert three["head"] == 3 * one["head"]
    assert three["total"] == one["total"] + 2 * one["trainable"]


def test_profile_json_contract_and_exact_forward_flops() -> None:
    record = invoke_json(
        "profile", *TEST_VIT, "-m", "lora", "--img-size", "32", "--batch", "2",
        "--steps", "1", "--warmup", "0", "--device", "cpu",
    )  # fmt: skip
    assert list(record)[: len(PROFILE_TYPES)] == list(PROFILE_TYPES)
    for key, kind in PROFILE_TYPES.items():
        assert isinstance(record[key], kind), key
    # timm's test_vit: D = 64, 6 blocks, MLP ratio 3, patch 16 -> N = 4 + 1 tokens at 32²
    d, n, depth, rank, classes = 64, 5, 6, 8, 1000
    per_image = (
        2 * 4 * (3 * 16 * 16) * d  # patch embedding
        + depth * (2 * n * d * d * (3 + 1 + 3 + 3) + 2 * 2 * n * n * d)  # linears + attention
        + depth * 2 * 2 * (2 * n * d * rank)  # LoRA on q and v: x A^T, then (.) B^T
        + 2 * d * classes  # head on the class token
    )
    assert record["forward_flops"] == 2 * per_image
    assert record["trainable"] == depth * 2 * rank * (d + d) + d * classes + classes
    assert 1.5 < record["train_step_flops"] / record["forward_flops"] < 2.5
    assert record["saved_activation_bytes"] > 0 and record["step_seconds"] > 0
    assert record["batch"] == 2 and record["img_size"] == 32


def test_weights_from_a_local_file(tmp_path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("test_vit")  # with its 1000-class head: dropped on load
    good = tmp_path / "test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(good))
    shallow = tmp_path / "shallow.safetensors"
    smaller = timm.create_model("test_vit", depth=2, num_classes=0).state_dict()
    save_file({k: v.contiguous() for k, v in smaller.items()}, str(shallow))

    loaded = build_backbone("test_vit", good)
    assert torch.equal(loaded.blocks[5].mlp.fc2.weight, source.blocks[5].mlp.fc2.weight)
    record = invoke_json("params", *TEST_VIT, "-m", "linear", "--weights", str(good))
    assert record["head"] == 64 * 1000 + 1000
    result = runner.invoke(app, ["params", *TEST_VIT, "-m", "linear", "--weights", str(shallow)])
    assert result.exit_code == 2
    assert "lacks" in result.stderr and "blocks.2" in result.stderr


COMMANDS = [c.name for c in app.registered_commands]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_command_has_help(command: str) -> None:
    assert {"methods", "params", "profile"} <= set(COMMANDS)
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["params", *TEST_VIT, "-m", "lorx"], "unknown method 'lorx'"),
        (["profile", *TEST_VIT, "-m", "lorx"], "unknown method 'lorx'"),
        (["methods", "lorx"], "Did you mean lora"),
        (["params", "-b", "no_such_net", "-m", "lora"], "unknown backbone 'no_such_net'"),
        (["params", "-b", "resnet18", "-m", "lora"], "not a supported backbone"),
        (["params", *TEST_VIT, "-m", "lora", "-o", "rank"], "KEY=VALUE"),
        (["params", *TEST_VIT, "-m", "lora", "-o", "rank=x"], "number"),
        (["params", *TEST_VIT, "-m", "lora", "-o", "nope=1"], "unknown option"),
        (["params", *TEST_VIT, "-m", "lora", "--weights", "/no/file"], "no such"),
        (["profile", *TEST_VIT, "-m", "lora", "--device", "tpu9"], "device"),
    ],
)
def test_errors_are_one_red_line_and_exit_code_2(args: list[str], message: str) -> None:
    for extra in ([], ["--json"]):
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2
        if extra:  # --json: the one stdout line is the error object (issue 14)
            assert message in json.loads(result.stdout)["error"]["message"]
        else:
            assert result.stdout == ""
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert message in lines[0]


def test_json_output_is_clean_in_a_real_process() -> None:
    """Outside the test runner's capture: nothing but the JSON object reaches stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "vpeft.cli.main", "methods", "--json"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["methods"]
    assert proc.stdout.count("\n") == 1
