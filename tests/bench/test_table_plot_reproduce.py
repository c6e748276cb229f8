"""Tables (averages, mean ± sd, PPT, Δm), plots with the Pareto front, `bench reproduce` on a
miniature of the VTAB-1k layout, and TensorBoard logging from `vpeft train`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from vpeft.bench.plot import pareto_front, write_plots
from vpeft.bench.reproduce import get_paper
from vpeft.bench.store import ResultStore
from vpeft.bench.table import build_rows, delta_m_of, long_rows, markdown, ppt, table_rows
from vpeft.cli.main import app
from vpeft.zoo import bundled_backbone

runner = CliRunner()
#: `vpeft train` of a linear probe on the bundled ViT (the logging tests' run)
LINEAR_DIGITS = ["train", "--backbone", "vit-tiny-synth", "--method", "linear", "--data",
                 "synthetic:synth-digits"]  # fmt: skip
#: two quick epochs on the CPU, quietly
TWO_EPOCHS = ["--epochs", "2", "--warmup-epochs", "0", "--device", "cpu", "--no-progress"]


def tensorboard_events(logs: Path) -> Any:
    """The loaded TensorBoard events of the one run written under `logs` (bench names runs
    method/task/stage/key, so its event file sits a few folders down)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [run_dir] = {p.parent for p in logs.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events


def _rec(method: str, task: str, group: str, seed: int, top1: float, enc: int, **dense) -> dict:
    history = [{f"test/{k.replace('__', '/')}": v for k, v in dense.items()}]
    return {
        "key": f"{method}-{task}-{seed}",
        "labels": {
            "sweeps": ["s"],
            "stage": "final",
            "method": method,
            "task": task,
            "group": group,
        },
        "spec": {"train": {"seed": seed}},
        "metrics": {"test_top1": top1, "history": history},
        "params": {"trainable_encoder": enc, "trainable": enc + 100},
        "flops": {"train_step_per_image": 1e6 + enc},
        "memory": {"total": 1e5 + enc},
    }


def _records() -> list[dict]:
    return [
        _rec("a", "t1", "natural", 0, 80.0, 1000),
        _rec("a", "t1", "natural", 1, 82.0, 1000),
        _rec("a", "t2", "natural", 0, 60.0, 1000),
        _rec("a", "t3", "structured", 0, 30.0, 1000),
        _rec("b", "t1", "natural", 0, 90.0, 10**7),
        _rec("b", "t2", "natural", 0, 70.0, 10**7),
        _rec("b", "t3", "structured", 0, 50.0, 10**7),
        {**_rec("a", "t9", "natural", 0, 99.0, 1), "labels": {"stage": "select"}},  # ignored
    ]


def test_table_averages_sd_and_ppt() -> None:
    rows = build_rows(_records())
    a, b = rows
    assert a.cells["t1"].mean == 81.0 and a.cells["t1"].sd == pytest.approx(math.sqrt(2))
    assert a.cells["t2"].sd is None and a.cells["t1"].text() == "81.0 ± 1.4"
    assert a.mean_all == pytest.approx((81 + 60 + 30) / 3)
    assert a.mean_of_groups == pytest.approx(((81 + 60) / 2 + 30) / 2)  # differs from mean_all
    # PPT = M · exp(−log10(P / 1e7 + 1)): 10^7 parameters cost a factor exp(−log10 2)
    assert b.ppt == pytest.approx(b.mean_of_groups * math.exp(-math.log10(2)))
    assert ppt(50.0, 0) == 50.0
    lines = table_rows(rows)
    assert lines[0][:4] == ["method", "t1", "t2", "t3"] and "PPT" in lines[0]
    assert "mean of group means" in markdown(lines)
    assert long_rows(rows)[1][:6] == ["a", "t1", "natural", 81.0, pytest.approx(1.414, 1e-3), 2]


def _dense(method: str, seed: int, semseg: float, normals: float, reference: bool = False) -> dict:
    rec = _rec(method, "pascal-mt", "dense", seed, 0.0, 10)
    rec["labels"]["reference"] = reference
    rec["metrics"] = {
        "test_top1": None,
        "headline": {"semseg": semseg, "normals": normals},
        "lower_is_better": ["normals"],
        "columns": {"semseg": semseg, "normals": normals},
    }
    return rec


def test_delta_m_against_the_labelled_reference_mean_over_seeds() -> None:
    recs = [
        _dense("full", 0, 50.0, 20.0, reference=True),
        _dense("full", 1, 54.0, 24.0, reference=True),  # reference means: 52, 22
        _dense("multi", 0, 57.2, 24.2),
    ]
    rows = build_rows(recs)
    dm = delta_m_of(rows)  # the reference comes from the records' labels
    assert dm["full"] == pytest.approx(0.0)
    # semseg +10% (higher is better), normals +10% error (lower is better): Δm = 0
    assert dm["multi"] == pytest.approx(100 * ((57.2 - 52) / 52 - (24.2 - 22) / 22) / 2)
    assert delta_m_of(rows, "multi")["full"] == pytest.approx(
        100 * ((52 - 57.2) / 57.2 - (22 - 24.2) / 24.2) / 2
    )
    header, *lines = table_rows(rows)
    assert header[-1] == "Δm vs full (%)" and "pascal-mt semseg" in header
    by_method = {line[0]: line for line in lines}
    assert by_method["multi"][-1] == f"{dm['multi']:.2f}"
    assert by_method["full"][header.index("pascal-mt semseg")] == "52.00 ± 2.83"


def test_pareto_front_and_plot_files(tmp_path: Path) -> None:
    assert pareto_front([(1, 50), (2, 40), (3, 60), (4, 60), (0.5, 10)]) == [4, 0, 2]
    paths = write_plots(build_rows(_records()), tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        f"accuracy_vs_{a}.{f}" for a in ("params", "memory", "flops") for f in ("png", "svg")
    )
    assert (tmp_path / "accuracy_vs_params.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "accuracy_vs_params.svg").read_bytes()[:500]


def test_table_and_plot_commands_on_a_store(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "store")
    for r in _records():
        store.put(r)
    out = tmp_path / "report"
    res = runner.invoke(
        app,
        ["bench", "table", "--store", str(store.root), "--sweep", "s", "--out", str(out), "--json"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"][0][0] == "a"
    assert (out / "table.md").is_file() and (out / "table.csv").read_text().startswith("method,")
    res = runner.invoke(
        app,
        [
            "bench",
            "plot",
            "--store",
            str(store.root),
            "--out",
            str(out),
            "--axes",
            "params",
            "--json",
        ],
    )
    assert res.exit_code == 0 and len(json.loads(res.stdout)["files"]) == 2
    res = runner.invoke(app, ["bench", "table", "--store", str(tmp_path / "nope"), "--json"])
    assert res.exit_code == 2 and "not a result store" in json.loads(res.stdout)["error"]["message"]


def _mini_vtab(root: Path, tasks: list[str]) -> None:
    rng = np.random.default_rng(0)
    for task in tasks:
        folder = root / "vtab-1k" / task
        (folder / "images").mkdir(parents=True)
        lines = []
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                folder / "images" / f"{i}.png"
            )
            lines.append(f"images/{i}.png {i % 2}")
        for split, part in (
            ("train800", lines[:6]),
            ("val200", lines[6:9]),
            ("train800val200", lines[:9]),
            ("test", lines[9:]),
        ):
            (folder / f"{split}.txt").write_text("\n".join(part) + "\n")


def test_reproduce_lists_missing_pieces_then_runs_on_a_miniature(tmp_path: Path) -> None:
    data, weights = tmp_path / "data", tmp_path / "weights"
    paper = get_paper("vqt")
    res = runner.invoke(
        app,
        [
            "bench",
            "reproduce",
            "vqt",
            "--data-root",
            str(data),
            "--weights-dir",
            str(weights),
            "--json",
        ],
    )
    assert res.exit_code == 2
    message = json.loads(res.stdout)["error"]["message"]
    assert "VTAB-1k dtd" in message and "ViT-B/16 ImageNet-1k" in message
    assert message.count(";") >= len(paper.requirements) - 1  # one clause per missing piece

    from vpeft.bench.protocols import VTAB_GROUPS

    _mini_vtab(data, list(VTAB_GROUPS))
    weights.mkdir()
    model = bundled_backbone("vit-tiny-synth").create(pretrained=True)
    save_file(model.state_dict(), weights / paper.weights_file)
    res = runner.invoke(
        app,
        [
            "bench",
            "reproduce",
            "vqt",
            "--data-root",
            str(data),
            "--weights-dir",
            str(weights),
            "--check-only",
            "--json",
        ],
    )
    assert res.exit_code == 0 and json.loads(res.stdout)["ready"] is True
    res = runner.invoke(
        app,
        [
            "bench",
            "reproduce",
            "vqt",
            "--data-root",
            str(data),
            "--weights-dir",
            str(weights),
            "--store",
            str(tmp_path / "store"),
            "--backbone",
            "vit-tiny-synth",
            "--methods",
            "linear",
            "--tasks",
            "cifar,dsprites_loc",
            "--seeds",
            "0",
            "--lr",
            "1e-2",
            "--wd",
            "0",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["sweeps"] == {"reproduce-vqt-vtab-1k": True}
    [row] = build_rows(ResultStore(tmp_path / "store").records(sweep="reproduce-vqt-vtab-1k"))
    assert set(row.groups) == {"natural", "structured"}

    res = runner.invoke(
        app,
        [
            "bench",
            "reproduce",
            "polyhistor",
            "--data-root",
            str(data),
            "--weights-dir",
            str(weights),
            "--json",
        ],
    )
    assert res.exit_code == 2 and "PASCAL-Context" in json.loads(res.stdout)["error"]["message"]


def test_train_logs_to_tensorboard(tmp_path: Path) -> None:
    out, logs = tmp_path / "run", tmp_path / "tb"
    res = runner.invoke(
        app,
        [*LINEAR_DIGITS, "--out", str(out), *TWO_EPOCHS, "--log", f"tensorboard:{logs}", "--json"],
    )
    assert res.exit_code == 0, res.output
    events = tensorboard_events(logs)
    assert {"train_loss", "val_top1", "test_top1"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2]
    res = runner.invoke(
        app, [*LINEAR_DIGITS, "--out", str(tmp_path / "x"), "--log", "wandb", "--json"]
    )
    assert res.exit_code == 2 and "tensorboard" in json.loads(res.stdout)["error"]["message"]


#: (mean top-1 %, trainable parameters, published PPT) from V-PETL Bench's VTAB-1k and FGVC tables
#: (github.com/synbol/Parameter-Efficient-Transfer-Learning-Benchmark README, commit c188fad):
#: linear probing, Adapter, VPT-deep, LoRA, LST, HST (VTAB-1k); LoRA, VPT-deep (FGVC).
VPETL_ROWS = [
    (52.94, 0.0, 0.53),
    (71.44, 0.16e6, 0.71),
    (69.43, 0.56e6, 0.68),
    (72.25, 0.29e6, 0.71),
    (71.70, 2.38e6, 0.65),
    (75.99, 0.78e6, 0.74),
    (84.78, 0.77e6, 0.82),
    (89.10, 0.85e6, 0.86),
]


def test_ppt_hand_computed_and_against_the_published_v_petl_bench_values() -> None:
    # by hand: P = 9e6 -> log10(1.9) = 0.278754, exp(-0.278754) = 0.756730; × 80 = 60.538
    assert ppt(80.0, 9e6) == pytest.approx(60.538, abs=1e-3)
    # V-PETL Bench prints PPT with M as a fraction: our value / 100, rounded to 2 digits
    assert [round(ppt(m, p) / 100, 2) for m, p, _ in VPETL_ROWS] == [v for *_, v in VPETL_ROWS]
    # the published column pins C: 10^6 or 10^8 would not reproduce it
    for c in (1e6, 1e8):
        assert [round(ppt(m, p, c) / 100, 2) for m, p, _ in VPETL_ROWS] != [
            v for *_, v in VPETL_ROWS
        ]


def test_log_mlflow_without_mlflow_is_a_clear_error_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else find_spec(name, *a),
    )
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [*LINEAR_DIGITS, "--out", str(out), "--log", "mlflow", "--json"],
    )  # fmt: skip
    assert res.exit_code == 2
    message = json.loads(res.stdout)["error"]["message"]
    assert "pip install 'vpeft[mlflow]'" in message and "--log tensorboard" in message
    assert not out.exists()  # refused before the output folder or any training
    res = runner.invoke(
        app,
        ["bench", "run", "--name", "m", "--store", str(tmp_path / "store"), "--log",
         "mlflow:file:/tmp/x", "--json"],
    )  # fmt: skip
    assert res.exit_code == 2 and "vpeft[mlflow]" in json.loads(res.stdout)["error"]["message"]
    assert not (tmp_path / "store").exists()


def test_dense_train_logs_to_tensorboard(tmp_path: Path) -> None:
    """`--log` reaches the tracker on the dense multi-task path too (it was silently ignored)."""
    out, logs = tmp_path / "run", tmp_path / "tb"
    args = ["train", "-b", "swin-tiny-synth", "-m", "lora", "--tasks", "semseg,normals",
            "--data", "dense-synthetic:limit=16", "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "8", "--val-split", "none", "--device", "cpu", "--no-progress",
            "--out", str(out), "--log", f"tensorboard:{logs}", "--json"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    tags = set(tensorboard_events(logs).Tags()["scalars"])
    assert "train_loss" in tags
    assert any("semseg" in t for t in tags) and any("normals" in t for t in tags), tags


def test_reproduce_apt_runs_on_miniatures_of_the_vl_layouts(tmp_path: Path) -> None:
    import shutil

    from vpeft.zoo import BUNDLED_VL

    from ..vl import layouts

    data, weights, store = tmp_path / "data", tmp_path / "weights", tmp_path / "store"
    base = ["bench", "reproduce", "apt", "--data-root", str(data), "--weights-dir", str(weights)]
    res = runner.invoke(app, [*base, "--json"])
    assert res.exit_code == 2
    message = json.loads(res.stdout)["error"]["message"]
    assert "4 of 4 pieces are missing" in message and "ViLT-B/32" in message

    vqa = layouts.write_vqa(data / "vqav2")
    nlvr2 = layouts.write_nlvr2(data / "nlvr2")
    flickr = layouts.write_flickr30k(data / "flickr30k")
    shutil.copytree(BUNDLED_VL["vilt-tiny-synth"].path, weights / "vilt-b32-mlm")
    res = runner.invoke(app, [*base, "--check-only", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["ready"] is True
    run = ["--store", str(store), "--methods", "lora", "--seeds", "0", "--lr", "3e-3", "--wd",
           "0", "--epochs", "1", "--device", "cpu", "--json"]  # fmt: skip
    res = runner.invoke(app, [*base, *run])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["sweeps"] == {"reproduce-apt-vl": True}
    records = list(ResultStore(store).records(sweep="reproduce-apt-vl"))
    by_task = {r["labels"]["task"]: r for r in records}
    assert set(by_task) == {"vqa", "nlvr2", "retrieval"}
    assert {r["spec"]["backbone"] for r in records} == {"hf:ViltModel"}
    assert by_task["vqa"]["spec"]["data"] == f"vqa-v2:{data}/vqav2"
    # training samples: VQA questions, NLVR2 statements, ITM pairs (a positive + a negative)
    trained = {t: r["flops"]["train_images"] for t, r in by_task.items()}
    assert trained == {"vqa": vqa["train2014"], "nlvr2": nlvr2["train"],
                       "retrieval": 2 * flickr["train"][1]}  # fmt: skip
    # the headline is the metric of the test split; on 3 images x 2 captions every R@5 / R@10
    # is 100 (any 5 of the 6 captions hold a positive, any 3 images do), so rsum = 400 + R@1s
    recall = {k.split("/")[1]: v for k, v in by_task["retrieval"]["metrics"]["results"].items()}
    assert by_task["retrieval"]["metrics"]["score"] == recall["rsum"]
    assert recall["rsum"] == pytest.approx(400 + recall["i2t_r1"] + recall["t2i_r1"])
    vqa_metrics = by_task["vqa"]["metrics"]
    assert vqa_metrics["score"] == vqa_metrics["results"]["vqa/vqa_score"]
    [row] = build_rows(records)
    assert set(row.cells) == {"vqa", "nlvr2", "retrieval"}


def test_train_logs_to_mlflow(tmp_path: Path) -> None:
    """`--log mlflow` writes the run's params and per-epoch metrics to a local MLflow store
    (default: a sqlite database in the run folder), read back with MLflow's own client."""
    mlflow = pytest.importorskip("mlflow")
    out = tmp_path / "run"
    res = runner.invoke(app, [*LINEAR_DIGITS, *TWO_EPOCHS, "--out", str(out), "--log", "mlflow",
                              "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["method"] == "linear"
    history = client.get_metric_history(run.info.run_id, "test_top1")
    assert [m.step for m in history] == [1, 2]
    assert history[-1].value == pytest.approx(summary["test_top1"])
    bad = runner.invoke(app, [*LINEAR_DIGITS, "--out", str(tmp_path / "x"), "--log",
                              "mlflow:nosuchscheme://x", "--json"])  # fmt: skip
    assert bad.exit_code == 2
    message = json.loads(bad.stdout)["error"]["message"]
    assert "nosuchscheme://x" in message and "sqlite" in message
