"""Budgets 0.2M–1.0M on a full-size ViT-B/16 (random weights, random-data sensitivity)."""

from __future__ import annotations

import copy
import json

import pytest
import timm
import torch
from typer.testing import CliRunner

import vpeft
from vpeft.cli.main import app
from vpeft.methods.spt import build_plan, random_sensitivity

BUDGETS = (200_000, 400_000, 600_000, 800_000, 1_000_000)


@pytest.fixture(scope="session")
def vit_base():
    """ViT-B/16 and its sensitivity on 2 random batches of 2 at 32 px (computed once)."""
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", num_classes=0)
    return model, random_sensitivity(model, 10, batches=2, batch_size=2, img_size=32)


def test_budgets_give_real_counts_within_3_percent(vit_base, tmp_path) -> None:
    """One test (one sensitivity pass per session): plans, real installed counts, CLI params."""
    model, sens = vit_base
    assert sens.meta["candidates"] == 85_056_000  # all but patch/pos embeddings, cls, head
    for structured, budgets in (("lora", BUDGETS), ("adapter", (200_000, 1_000_000))):
        for budget in budgets:
            plan = build_plan(model, sens, budget, structured)
            pm = vpeft.apply(copy.deepcopy(model), f"spt-{structured}", num_classes=10, plan=plan)
            real = pm.summary().trainable_encoder
            assert real == plan.total
            assert abs(real - budget) <= 0.03 * budget, (structured, budget, real)
            assert plan.breakdown()["structured"] > 0 and plan.breakdown()["sparse"] > 0
    strict = build_plan(model, sens, BUDGETS[0], "lora", fill=False)  # the reference rule
    filled = build_plan(model, sens, BUDGETS[0], "lora").total
    assert abs(filled - BUDGETS[0]) <= abs(strict.total - BUDGETS[0])  # here 0 vs -5.3%

    table = plan.table()
    assert f"budget 1,000,000, trainable {plan.total:,} (" in table
    blocks, roles, grid = plan.shares()
    assert blocks == list(range(12)) and roles == ["q", "k", "v", "proj", "fc1", "fc2"]
    assert abs(sum(map(sum, grid)) - 100.0) < 1e-6

    sens.save(tmp_path / "vitb.safetensors")
    runner = CliRunner()
    args = ["params", "-b", "vit_base_patch16_224", "-m", "spt-lora", "--num-classes", "10"]
    source = f"sensitivity={tmp_path / 'vitb.safetensors'}"
    result = runner.invoke(app, [*args, "--opt", "budget=0.4M", "--opt", source, "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["trainable_encoder"] == build_plan(model, sens, "0.4M", "lora").total
    with pytest.warns(UserWarning, match="random-data sensitivity"):  # labelled as such
        fallback = runner.invoke(app, [*args, "--opt", "budget=0.6M", "--json"])
    assert fallback.exit_code == 0, fallback.output
    count = json.loads(fallback.stdout)["trainable_encoder"]
    assert abs(count - 600_000) <= 0.03 * 600_000
    assert record["head"] == 768 * 10 + 10
