"""`vpeft bench` on dense multi-task and vision-language tasks: tiny real sweeps (one epoch on a
few images) whose table numbers are checked against the formulas on the stored metrics, the
papers' presets, and clear errors for what a protocol cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.bench.test_table_plot_reproduce import tensorboard_events
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
    assert rows["bitfit"][header.index("semseg+normals semseg")] == f"{h['semseg']:.2f}"
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
    assert row[header.index("clip")] == f"{b2n['hm']:.1f}"
    assert row[header.index("vqa")] == f"{vqa['metrics']['score']:.1f}"
    for name in ("base", "new", "HM"):
        assert row[header.index(f"clip {name}")] == f"{b2n[name.lower()]:.2f}"
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


def _mini_pascal(root: Path, ids: dict[str, list[str]], size: tuple[int, int] = (12, 16)) -> None:
    """A miniature of the PASCAL_MT layout (`vpeft.data.pascal_context`): random images and
    labels, no person (parts all background)."""
    import numpy as np
    from PIL import Image
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    folders = ["ImageSets/Context", "JPEGImages", "semseg/pascal-context", "human_parts",
               "sal_distill", "normals_distill"]  # fmt: skip
    for folder in folders:
        (root / folder).mkdir(parents=True)
    for split, names in ids.items():
        (root / f"ImageSets/Context/{split}.txt").write_text("\n".join(names) + "\n")
    for name in [n for names in ids.values() for n in names]:
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / f"JPEGImages/{name}.jpg")
        seg = rng.integers(0, 21, size, dtype=np.uint8)
        Image.fromarray(seg).save(root / f"semseg/pascal-context/{name}.png")
        sal = (rng.random(size) > 0.5).astype(np.uint8) * 255
        Image.fromarray(sal).save(root / f"sal_distill/{name}.png")
        Image.fromarray(np.full((*size, 3), (128, 128, 255), np.uint8)).save(
            root / f"normals_distill/{name}.png"
        )
        objects = np.empty((1, 1), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"),
                                          ("parts", "O")])  # fmt: skip
        objects[0, 0] = ("cat", 8, np.zeros(size, np.uint8), np.zeros((0, 0)))
        anno = np.empty((1, 1), dtype=[("imname", "O"), ("objects", "O")])
        anno[0, 0] = (name, objects)
        savemat(root / f"human_parts/{name}.mat", {"anno": anno})


def test_reproduce_polyhistor_runs_on_a_miniature_pascal_context(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from vpeft.bench.reproduce import SWIN_T
    from vpeft.zoo import bundled_backbone

    data, weights, store = tmp_path / "data", tmp_path / "weights", tmp_path / "store"
    base = ["bench", "reproduce", "polyhistor", "--data-root", str(data), "--weights-dir",
            str(weights), "--json"]  # fmt: skip
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "PASCAL-Context" in json.loads(res.stdout)["error"]["message"]
    _mini_pascal(data / "pascal_context", {"train": ["a", "b"], "val": ["c", "d"]})
    weights.mkdir()
    model = bundled_backbone("swin-tiny-synth").create(pretrained=True)
    save_file(model.state_dict(), weights / SWIN_T)
    res = runner.invoke(app, [*base, "--store", str(store), "--backbone", "swin-tiny-synth",
                              "--methods", "bitfit", "--seeds", "0", "--epochs", "1",
                              "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["sweeps"] == {"reproduce-polyhistor-pascal-mt": True}
    records = {r["labels"]["method"]: r for r in ResultStore(store).records()}
    assert set(records) == {"bitfit", "full"} and records["full"]["labels"]["reference"]
    run = records["bitfit"]
    assert run["spec"]["data"] == f"pascal-mt:{data / 'pascal_context'}"
    assert run["spec"]["train_split"] == "train" and run["spec"]["eval_splits"] == {"test": "val"}
    assert set(run["metrics"]["headline"]) == {"semseg", "parts", "saliency", "normals"}
    assert run["spec"]["train"]["lr"] == 1e-4 and run["spec"]["train"]["optimizer"] == "adam"
    table = _bench("table", "--store", str(store))
    assert table["header"][-1] == "Δm vs full (%)"


def test_vl_selection_picks_the_best_val_score_and_dense_cannot_select(tmp_path: Path) -> None:
    from vpeft.bench.store import run_key
    from vpeft.bench.sweep import choose

    plan = build_plan(SweepConfig("s", "vl-synthetic", ["lora"], ["vqa"], lr=[1e-4, 1e-3, 1e-2]))
    [unit] = plan["units"]
    assert [s["eval_splits"] for s in unit["select"]] == [{"val": "val"}] * 3
    store = ResultStore(tmp_path)
    for spec, score in zip(unit["select"], (40.0, 55.0, 50.0), strict=True):
        store.put({"key": run_key(spec), "metrics": {"val_top1": None, "score": score}})
    assert choose(unit, store)[0] == 1e-3  # the VQA score on val, not a missing top-1
    with pytest.raises(ConfigError, match="no selection split"):
        build_plan(SweepConfig("d", "dense-synthetic", ["bitfit"], ["pascal-mt"], lr=[1e-3, 1e-2]))


def test_vl_subsets_and_measure_batch_from_the_command_line(tmp_path: Path) -> None:
    """`--sample` / `--measure-batch` reach the run: its spec, the number of training samples it
    trained on and the batch its costs were measured on; `--log` logs it; a malformed `--sample`
    is refused."""
    store = tmp_path / "store"
    args = ["--name", "s", "--protocol", "vl-synthetic", "--methods", "lora", "--tasks", "vqa",
            "--sample", "train=24,eval=16", "--measure-batch", "4", "--store", str(store),
            "--log", f"tensorboard:{tmp_path / 'tb'}", *TINY]  # fmt: skip
    assert _bench("run", *args)["complete"]
    # the bench runner's tracker logged the run's epochs
    assert "train_loss" in tensorboard_events(tmp_path / "tb").Tags()["scalars"]
    [record] = ResultStore(store).records(sweep="s")
    assert record["spec"]["sample"] == {"eval": 16, "train": 24}
    assert record["spec"]["measure_batch"] == 4
    assert record["flops"]["train_images"] == 24 and record["flops"]["batch"] == 4
    bad = runner.invoke(app, ["bench", "run", "--name", "b", "--protocol", "vl-synthetic",
                              "--methods", "lora", "--tasks", "vqa", "--sample", "train",
                              "--store", str(tmp_path / "b"), "--json"])  # fmt: skip
    assert bad.exit_code == 2
    assert "--sample expects KEY=N" in json.loads(bad.stdout)["error"]["message"]
