"""`vpeft sensitivity`: compute scores on task data, allocate a plan, show it; errors."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

import vpeft
from vpeft.cli.main import app
from vpeft.methods.spt import Sensitivity, SptPlan

runner = CliRunner()
BASE = ["-b", "test_vit", "--img-size", "32"]  # timm's 0.4M-parameter test ViT (D = 64)


def _json(result) -> dict:
    assert result.exit_code == 0, result.stderr or result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_compute_allocate_and_show(tmp_path) -> None:
    scores, plan_path = tmp_path / "scores.safetensors", tmp_path / "plan.safetensors"
    command = (
        f"sensitivity --data synthetic:synth-count --samples 12 --batch 5 --out {scores} "
        f"--budget 20k --plan-out {plan_path} --device cpu --json"
    )
    record = _json(runner.invoke(app, [*command.split()[:1], *BASE, *command.split()[1:]]))
    assert (record["samples"], record["batches"]) == (12, 3)
    assert record["source"] == "synthetic:synth-count [train800val200]"
    assert record["total"] == 20_000 and record["budget"] == 20_000
    sens = Sensitivity.load(scores)
    assert "blocks.0.attn.qkv.weight" in sens.scores
    assert sens.meta["num_classes"] == vpeft.data.task_info("synth-count").num_classes
    plan = SptPlan.load(plan_path)
    assert plan.total == 20_000 and plan.sensitivity["samples"] == 12
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"

    command = (
        f"--scores {scores} --budget 20000 --structured adapter --rank 4 "
        f"--plan-out {tmp_path / 'adapter.safetensors'} --png {tmp_path / 'a.png'} --json"
    )
    again = _json(runner.invoke(app, ["sensitivity", *BASE, *command.split()]))
    assert again["plan"].endswith("adapter.safetensors") and again["png"].endswith("a.png")
    assert SptPlan.load(tmp_path / "adapter.safetensors").structured == "adapter"

    shown = runner.invoke(app, ["sensitivity", "--show", str(plan_path)])
    assert shown.exit_code == 0, shown.output
    assert "SPT-lora plan" in shown.stdout and "block" in shown.stdout and "other" in shown.stdout
    shares = _json(runner.invoke(app, ["sensitivity", "--show", str(plan_path), "--json"]))
    assert abs(sum(map(sum, shares["shares"])) - 100.0) < 1e-6
    roles = ["q", "k", "v", "proj", "fc1", "fc2"]
    assert shares["roles"] == [r for r in roles if r in shares["roles"]]  # in matrix order
    assert set(shares["blocks"]) <= set(range(6)) and len(shares["shares"]) == len(shares["blocks"])

    model = vpeft.create_backbone("test_vit", img_size=32, num_classes=0)
    pm = vpeft.apply(model, "spt-lora", num_classes=3, plan=str(plan_path))
    assert pm.summary().trainable_encoder == 20_000
    assert pm(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_errors_are_one_line(tmp_path) -> None:
    result = runner.invoke(app, ["sensitivity", *BASE])
    assert result.exit_code == 2 and "give --data and --out" in result.stderr
    result = runner.invoke(
        app,
        ["sensitivity", *BASE, "--data", "synthetic:synth-count", "--out", "x", "--budget", "1M"],
    )
    assert result.exit_code == 2 and "--plan-out" in result.stderr
    result = runner.invoke(app, ["sensitivity", "--show", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 2 and "no such vpeft file" in result.stderr
    result = runner.invoke(app, ["sensitivity", *BASE, "--scores", "s", "--structured", "vpt"])
    assert result.exit_code == 2 and "must be one of" in result.stderr
