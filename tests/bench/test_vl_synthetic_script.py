"""benchmarks/vl_synthetic.py on `vpeft bench`: its rows are the bench runs they claim to be,
a real run reproduces the committed zero-shot row and records what does not apply as skipped,
and ``--rows`` rebuilds the committed CLIP table byte for byte."""

from __future__ import annotations

import importlib.util
import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "vl_synthetic.py"
RESULTS = ROOT / "docs" / "results" / "vl"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("vl_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**kw) -> Namespace:
    base = {"epochs": 3, "batch_size": 32, "lr": 1e-3, "train_size": 1000, "test_size": 500,
            "gallery": 20, "vilt": "vilt-tiny-synth", "clip": "clip-tiny-synth",
            "opt": ["lora:rank=2"]}  # fmt: skip
    return Namespace(**{**base, **kw})


def test_rows_are_bench_runs_with_the_scripts_settings(script) -> None:
    from vpeft.bench.sweep import build_plan, final_specs

    def spec(task: str, method: str, **kw) -> dict:
        plan = build_plan(script.sweep_config(task, method, 1, _args(**kw)))
        (unit,) = plan["units"]
        return final_specs(plan, unit, *unit["grid"][0])[0]

    lora = spec("vqa", "lora")
    assert lora["method"] == "lora" and lora["options"] == {"rank": "2"}
    assert lora["sample"] == {"eval": 500, "train": 1000} and lora["measure_batch"] == 8
    train = lora["train"]
    assert (train["optimizer"], train["lr"], train["weight_decay"], train["seed"]) == (
        "adamw", 1e-3, 0.01, 1)  # fmt: skip
    assert (train["epochs"], train["warmup_epochs"], train["eval_batch_size"]) == (3, 1.0, 64)
    assert spec("retrieval", "full")["sample"] == {"gallery": 20, "train": 1000}
    clip = spec("clip", "apt", train_size=0)  # the whole train split, the whole test set
    assert clip["backbone"] == "clip-tiny-synth" and "sample" not in clip
    assert clip["train"]["optimizer"] == "adamw"  # not the CLIP preset's SGD
    zero = spec("clip", "zero-shot")
    assert zero["method"] == "linear" and zero["evaluate_only"]


def test_a_run_reproduces_the_committed_zero_shot_row(script, tmp_path, monkeypatch) -> None:
    out, store = tmp_path / "out", tmp_path / "store"
    argv = ["vl_synthetic.py", "--tasks", "clip", "--methods", "vpt-deep", "--train-size", "8",
            "--epochs", "1", "--out", str(out), "--store", str(store),
            "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    zero, vpt = json.loads((out / "results.json").read_text())
    committed = next(r for r in json.loads((RESULTS / "results.json").read_text())
                     if r["method"] == "zero-shot")  # fmt: skip
    assert zero["base_to_new"] == committed["base_to_new"]
    assert zero["test"] == committed["test"] and zero["trainable"] == 0
    assert "not meaningful on hf-clip" in vpt["skipped"]
    table = (out / "table.md").read_text()
    assert committed["method"] in table and "vpt-deep" not in table


def test_rows_merging_rebuilds_the_committed_table(script, tmp_path, monkeypatch) -> None:
    argv = ["vl_synthetic.py", "--rows", str(RESULTS / "results.json"), "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    assert (tmp_path / "table.md").read_bytes() == (RESULTS / "table.md").read_bytes()
    assert (tmp_path / "results.json").read_bytes() == (RESULTS / "results.json").read_bytes()
