"""`vpeft demo` and `vpeft.bench`: a very short real run through the CLI (outputs exist and agree
with the library's own counts), and the report on hand-made rows."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
import torch
from typer.testing import CliRunner

import vpeft
from vpeft import zoo
from vpeft.analysis import train_step_flops
from vpeft.bench import DEFAULT_METHODS, DEFAULT_TASKS, RECIPES, DemoRow, run_demo
from vpeft.bench.demo import step_flops_per_image
from vpeft.bench.report import group_means, markdown, method_means
from vpeft.bench.store import ResultStore
from vpeft.bench.table import build_rows, ppt, table_rows
from vpeft.cli.main import app
from vpeft.data import synthetic
from vpeft.errors import ConfigError

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_default_job_covers_the_required_methods_and_every_group() -> None:
    required = {"linear", "full", "bitfit", "lora", "adapter", "adaptformer", "vpt-deep"}
    assert required <= set(DEFAULT_METHODS)
    assert {synthetic.TARGET_TASKS[t] for t in DEFAULT_TASKS} == {
        "natural",
        "specialized",
        "structured",
    }
    for name in DEFAULT_METHODS:
        recipe = RECIPES[name]
        assert name in vpeft.available_methods()
        assert recipe.lr > 0 and recipe.weight_decay >= 0 and recipe.epochs >= 1
        vpeft.get_method(name).config.from_options(recipe.options)  # options are valid


def test_short_demo_through_the_cli_writes_consistent_outputs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    task, methods = "synth-digits", ["linear", "lora"]  # digits: the smallest test split
    args = ["--out", str(out), "--tasks", task, "--methods", ",".join(methods), "--epochs", "1"]
    result = runner.invoke(app, ["demo", *args, "--threads", "1", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert record == json.loads((out / "results.json").read_text())
    assert record["meta"]["command"].startswith("vpeft demo --out")
    assert record["meta"]["tasks"] == [task] and record["meta"]["methods"] == methods
    assert record["meta"]["backbone_recipe"]["source_val_top1"] == pytest.approx(0.847)

    rows = [DemoRow(**r) for r in record["rows"]]
    assert [(r.method, r.task, r.group) for r in rows] == [(m, task, "natural") for m in methods]
    info = synthetic.task_info(task)
    image = torch.zeros(1, 3, 32, 32)
    for row in rows:
        # the counts of the same model built by the library
        torch.manual_seed(0)
        pm = vpeft.apply(
            zoo.BUNDLED["vit-tiny-synth"].create(),
            row.method,
            num_classes=info.num_classes,
            **row.options,
        )
        keys = ("trainable", "trainable_encoder", "head", "total")
        counts = pm.summary().as_dict()
        assert {k: getattr(row, k) for k in keys} == {k: counts[k] for k in keys}
        assert row.head == 64 * info.num_classes + info.num_classes
        step = train_step_flops(pm, image, lambda y: y.logsumexp(-1).sum()).train_step
        assert row.train_step_flops_per_image == step == step_flops_per_image(pm, image)
        assert row.train_flops == row.train_step_flops_per_image * 800 * 1
        assert row.epochs == 1 and row.train_images == 800
        assert 0.0 <= row.test_top1 <= 100.0 and row.wall_s > 0
    linear, lora = rows
    assert linear.trainable_encoder == 0
    assert lora.trainable_encoder == 4 * 2 * 4 * (64 + 64)  # 4 blocks × (q, v) × r(D + D)
    # forward-only backbone (linear) vs backward through every block (LoRA): ≈ 1× vs ≈ 2× F
    assert 1.9 < lora.train_step_flops_per_image / linear.train_step_flops_per_image < 2.4

    means = {m["method"]: m for m in record["means"]}
    assert means["lora"]["test_top1"] == pytest.approx(lora.test_top1)
    assert record["group_means"]["linear"]["natural"] == pytest.approx(linear.test_top1)

    text = (out / "results.md").read_text()
    assert f"| lora | {task} | natural | {lora.test_top1:.1f} |" in text
    png = (out / "accuracy_vs_params.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert matplotlib.image.imread(out / "accuracy_vs_params.png").shape[:2] == (528, 768)
    assert b"<svg" in (out / "accuracy_vs_flops.svg").read_bytes()[:500]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    # the demo's table is `vpeft bench table` on its store: same lines, PPT on the numbers
    store = ResultStore(out / "store")
    lines = table_rows(build_rows(store.records(sweep="demo")))
    assert [record["table"]["header"], *record["table"]["rows"]] == lines
    assert (out / "table.md").read_text().startswith("# vpeft demo on vit-tiny-synth")
    by_method = {line[0]: line for line in lines[1:]}
    ppt_col = lines[0].index("PPT")
    assert by_method["lora"][1] == f"{lora.test_top1:.1f}"
    assert by_method["lora"][ppt_col] == f"{ppt(lora.test_top1, lora.trainable_encoder):.2f}"
    assert by_method["linear"][ppt_col] == f"{linear.test_top1:.2f}"  # P = 0: PPT = M
    res = runner.invoke(app, ["bench", "table", "--store", str(out / "store"), "--json"])
    assert json.loads(res.stdout)["rows"] == record["table"]["rows"]

    # run again into the same folder: every run is reused from the store, nothing is trained
    result = runner.invoke(app, ["demo", *args, "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "PPT" in result.stdout and "mean of group means" in result.stdout
    again = json.loads((out / "results.json").read_text())
    assert [r["test_top1"] for r in again["rows"]] == [r.test_top1 for r in rows]
    assert [r["wall_s"] for r in again["rows"]] == [r.wall_s for r in rows]  # the stored runs
    assert len(list((out / "store" / "runs").iterdir())) == 2


def _row(method: str, task: str, group: str, top1: float, trainable: int) -> DemoRow:
    return DemoRow(
        method=method, task=task, group=group, test_top1=top1, val_top1=None,
        trainable_encoder=trainable - 10, trainable=trainable, head=10, total=1000,
        train_step_flops_per_image=3_000_000, train_flops=3_000_000 * 800 * 2,
        train_images=800, epochs=2, lr=1e-3, weight_decay=0.0, options={}, wall_s=1.5,
    )  # fmt: skip


def test_report_means_per_method_and_group() -> None:
    rows = [
        _row("linear", "a", "natural", 40.0, 10),
        _row("lora", "a", "natural", 50.0, 110),
        _row("linear", "b", "structured", 20.0, 10),
        _row("lora", "b", "structured", 60.0, 110),
    ]
    means = {m["method"]: m for m in method_means(rows)}
    assert list(means) == ["linear", "lora"]
    assert means["lora"]["test_top1"] == 55.0 and means["linear"]["test_top1"] == 30.0
    assert means["lora"]["trainable"] == 110 and means["lora"]["wall_s_total"] == 3.0
    assert means["lora"]["wall_s"] == 1.5
    assert group_means(rows) == {
        "linear": {"natural": 40.0, "structured": 20.0},
        "lora": {"natural": 50.0, "structured": 60.0},
    }
    text = markdown(rows, {"command": "vpeft demo", "wall_s": 6.0})
    assert "`vpeft demo`" in text and "| lora | 2 | 55.0 |" in text
    assert "| lora | 50.0 | 60.0 |" in text


def test_unknown_task_or_method_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown target task"):
        run_demo(["synth-nope"], ["linear"], 1, tmp_path)
    with pytest.raises(ConfigError, match="unknown method"):
        run_demo(["synth-count"], ["nope"], 1, tmp_path)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--tasks", "synth-nope"])
    assert result.exit_code == 2
    assert "unknown target task" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing written on error
