"""benchmarks/dense_baselines.py on `vpeft bench`: its rows are the bench runs they claim to be,
and `--report-only` rebuilds the committed table, plot and results file byte for byte."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "dense_baselines.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("dense_baselines", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**kw) -> Namespace:
    base = {"backbone": "swin-tiny-synth", "data": "dense-synthetic:limit=128", "epochs": 2,
            "batch_size": 16, "lr": 1e-3}  # fmt: skip
    return Namespace(**{**base, **kw})


def test_rows_are_bench_variants_with_the_committed_settings(script) -> None:
    from vpeft.bench.sweep import build_plan

    labels = ["single-task full FT", "Polyhistor λ=4", "MTLoRA, LoRA only", "multi-task full FT"]
    plan = build_plan(script.sweep_config(_args(), labels, [0]))
    units = {u["method"]: u for u in plan["units"]}
    assert list(units) == ["full", *labels[1:]]  # the reference is bench's own `full`
    assert units["full"]["reference"] and units["full"]["base"]["shared"] is False
    poly, lora_only, mt = (units[k]["base"] for k in labels[1:])
    assert poly["method"] == "polyhistor" and poly["options"] == {"reduction": 4}
    assert lora_only["method"] == "mtlora" and lora_only["options"] == {
        "patch_merging": "frozen", "train_norms": False, "train_patch_embed": False,
        "train_relative_bias": False,
    }  # fmt: skip
    assert mt["method"] == "full" and mt["shared"] is True
    # the settings of every committed `vpeft train` command (docs/results/dense/results.json)
    assert poly["data"] == "dense-synthetic:limit=128" and poly["tasks"] == (
        "semseg,parts,saliency,normals"
    )
    train = poly["train"]
    assert (train["epochs"], train["batch_size"], train["eval_every"]) == (2, 16, 2)
    assert (train["warmup_epochs"], train["optimizer"]) == (0.0, "adamw")
    assert [units[k]["grid"] for k in units] == [[[1e-3, 1e-4]]] * 4  # lr, weight decay
    # a row's run key is the one its one-row plan trains (what the report looks up)
    key = script.run_key_of(_args(), "Polyhistor λ=4", 3)
    one = build_plan(script.sweep_config(_args(), ["Polyhistor λ=4"], [3]))
    from vpeft.bench.store import run_key
    from vpeft.bench.sweep import final_specs

    unit = next(u for u in one["units"] if u["method"] == "Polyhistor λ=4")
    assert key == run_key(final_specs(one, unit, 1e-3, 1e-4)[0])


def test_report_only_rebuilds_the_committed_files(tmp_path: Path) -> None:
    committed = {
        "results": ROOT / "docs/results/dense/results.json",
        "table": ROOT / "docs/results/dense_table.md",
        "plot": ROOT / "docs/results/dense_delta_m_vs_params.png",
    }
    out = {"results": tmp_path / "results.json", "table": tmp_path / "table.md",
           "plot": tmp_path / "plot.png"}  # fmt: skip
    shutil.copy(committed["results"], out["results"])
    cmd = [sys.executable, str(SCRIPT), "--report-only", "--store", str(tmp_path / "no-store")]
    for name, path in out.items():
        cmd += [f"--{name}", str(path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True)
    for name in ("results", "table"):
        assert out[name].read_bytes() == committed[name].read_bytes(), name
    # the plot pixel for pixel (the PNG's metadata names the matplotlib version)
    from matplotlib.image import imread

    assert (imread(out["plot"]) == imread(committed["plot"])).all()
    assert not (tmp_path / "no-store").exists()  # reporting creates no store
