"""`vpeft bench` on dense multi-task and vision-language tasks: tiny real sweeps (one epoch on a
few images) whose table numbers are checked against the formulas on the stored metrics, the
papers' presets, and clear errors for what a protocol cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpeft.bench.protocols import preset_for
from vpeft.bench.store import ResultStore
from vpeft.bench.sweep import SweepConfig, build_plan
from vpeft.cli.main import app
from vpeft.errors import ConfigError

runner = CliRunner()
TINY = ["--epochs", "1", "--train-opt", "batch_size=8", "--device", "cpu", "--seeds", "0"]


def _bench(*args: str) -> dict:
    res = runner.invoke(app, ["bench", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_dense_sweep_runs_the_reference_and_tabulates_delta_m(tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["--name", "d", "--protocol", "dense-synthetic", "--methods", "bitfit", "--tasks",
            "semseg+normals", "--data-root", "limit=16", "--limit-train", "16",
            "--limit-eval", "16", "--store", str(store), *TINY]  # fmt: skip
    summary = _bench("run", *args)
    assert summary["complete"] and len(summary["trained_here"]) == 2  # bitfit + the reference
    records = {r["labels"]["method"]: r for r in ResultStore(store).records(sweep="d")}
    assert set(records) == {"bitfit", "full"}
    ref, run = records["full"], records["bitfit"]
    assert ref["labels"]["reference"] and not run["labels"]["reference"]
    assert ref["spec"]["shared"] is False and ref["spec"]["tasks"] == "semseg,normals"
    last = run["metrics"]["history"][-1]  # the headline is the last epoch's test metric
    assert run["metrics"]["headline"] == {
        "semseg": last["test/semseg/miou"],
        "normals": last["test/normals/mean"],
    }
    assert run["metrics"]["lower_is_better"] == ["normals"]
    table = _bench("table", "--store", str(store), "--sweep", "d")
    header, rows = table["header"], {r[0]: r for r in table["rows"]}
    h, b = run["metrics"]["headline"], ref["metrics"]["headline"]
    expected = 100 * ((h["semseg"] - b["semseg"]) / b["semseg"]
                      - (h["normals"] - b["normals"]) / b["normals"]) / 2  # fmt: skip
    assert header[-1] == "Δm vs full (%)"
    assert rows["bitfit"][-1] == f"{expected:.2f}" and rows["full"][-1] == "0.00"
    assert rows["bitfit"][header.index("semseg+normals semseg")] == f"{h['semseg']:.2f} ± –"
    # the reference trains every encoder weight (one copy per task), BitFit only biases
    assert ref["params"]["trainable_encoder"] > 50 * run["params"]["trainable_encoder"] > 0


def test_vl_sweep_scores_vqa_and_clip_base_to_new(tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["--name", "v", "--protocol", "vl-synthetic", "--methods", "lora", "--tasks",
            "vqa,clip", "--limit-train", "32", "--store", str(store), *TINY]  # fmt: skip
    assert _bench("run", *args)["complete"]
    records = {r["labels"]["task"]: r for r in ResultStore(store).records(sweep="v")}
    vqa, clip = records["vqa"], records["clip"]
    assert vqa["spec"]["backbone"] == "vilt-tiny-synth"
    assert clip["spec"]["backbone"] == "clip-tiny-synth"
    assert clip["spec"]["data"] == "vl-synthetic:clip-base"
    assert vqa["metrics"]["score"] == vqa["metrics"]["history"][-1]["test/vqa/vqa_score"]
    b2n = clip["metrics"]["base_to_new"]
    assert b2n["base"] == clip["metrics"]["history"][-1]["test/clip/top1"]
    assert b2n["hm"] == pytest.approx(2 * b2n["base"] * b2n["new"] / (b2n["base"] + b2n["new"]))
    assert 0.0 <= b2n["new"] <= 100.0
    table = _bench("table", "--store", str(store), "--sweep", "v")
    header, [row] = table["header"], table["rows"]
    assert row[header.index("clip")] == f"{b2n['hm']:.1f} ± –"
    assert row[header.index("vqa")] == f"{vqa['metrics']['score']:.1f} ± –"
    for name in ("base", "new", "HM"):
        assert row[header.index(f"clip {name}")] == f"{b2n[name.lower()]:.2f} ± –"
    assert vqa["flops"]["train_step_per_image"] > 0 and clip["memory"]["total"] > 0


def test_paper_presets_for_dense_and_vl() -> None:
    poly = preset_for("pascal-mt", "polyhistor")
    assert poly.options == {"reduction": 16} and poly.lr_grid == (1e-4,)
    assert poly.train["batch_size"] == 12 and poly.train["epochs"] == 60
    assert poly.train["optimizer"] == "adam" and poly.wd_grid == (1e-4,)
    apt = preset_for("vl-synthetic", "apt", "vqa")
    assert apt.options == {"num_prompts": 200, "rank": 4} and apt.lr_grid == (5e-4,)
    assert apt.wd_grid == (0.01,) and apt.train["epochs"] == 10
    clip = preset_for("vl-synthetic", "apt", "clip")
    assert clip.train["optimizer"] == "sgd" and clip.lr_grid == (2e-4,) and clip.wd_grid == (0.3,)


def test_dense_and_vl_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="no selection split"):
        build_plan(SweepConfig("p", "pascal-mt", ["lora-qkv"], ["pascal-mt"], lr=[1e-4, 1e-3],
                               data_root="/data"))  # fmt: skip
    with pytest.raises(ConfigError, match="dense task 'semseg\\+depth'"):
        build_plan(SweepConfig("p", "dense-synthetic", ["bitfit"], ["semseg+depth"]))
    with pytest.raises(ConfigError, match="vl-synthetic tasks"):
        build_plan(SweepConfig("p", "vl-synthetic", ["lora"], ["cifar"]))
    shared = {"lora": {"shared": True}}
    with pytest.raises(ConfigError, match="shared"):
        build_plan(SweepConfig("p", "synthetic", ["lora"], method_overrides=shared))
    plan = build_plan(SweepConfig("p", "dense-synthetic", ["full"], ["pascal-mt"],
                                  method_overrides={"full": {"shared": True}}))  # fmt: skip
    assert [(u["method"], u["reference"]) for u in plan["units"]] == [
        ("full+shared", False),
        ("full", True),
    ]
