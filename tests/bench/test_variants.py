"""Named variants in `vpeft bench` (one method with several option sets, a row each), and that a
dense bench run gives exactly the numbers of the same `vpeft train` run (the port of
benchmarks/dense_baselines.py rests on it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpeft.bench.store import ResultStore, run_key
from vpeft.bench.sweep import SweepConfig, build_plan
from vpeft.cli.main import app
from vpeft.errors import ConfigError
from vpeft.tasks.dense import delta_m

runner = CliRunner()
DENSE = {"protocol": "dense-synthetic", "tasks": ["pascal-mt"], "data_root": "limit=8"}


def _invoke(*args: str) -> dict:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_variants_are_rows_of_their_own_with_merged_options() -> None:
    cfg = SweepConfig(
        name="v",
        methods=["hyperformer", "hyperformer-r2", "mt-full"],
        method_overrides={"hyperformer": {"options": {"hidden_dim": 3}}},
        variants={
            "hyperformer-r2": {"method": "hyperformer", "options": {"reduction": 2}},
            "mt-full": {"method": "full", "shared": True, "lr": [3e-4]},
        },
        **DENSE,
    )
    units = {u["method"]: u for u in build_plan(cfg)["units"]}
    # the reference (`full`, one copy per task) is added: the variant of `full` is not it
    assert list(units) == ["hyperformer", "hyperformer-r2", "mt-full", "full"]
    plain, r2, mt, ref = (units[k] for k in ("hyperformer", "hyperformer-r2", "mt-full", "full"))
    # preset reduction 8 (tiny Swin), the method's override, then the variant's own
    assert plain["base"]["options"] == {"hidden_dim": 3, "reduction": 8}
    assert r2["base"]["options"] == {"hidden_dim": 3, "reduction": 2}
    assert r2["base"]["method"] == "hyperformer" and r2["variant"] == "hyperformer-r2"
    assert "variant" not in plain and plain["unit"] == "hyperformer/pascal-mt"
    assert mt["base"]["method"] == "full" and mt["base"]["shared"] is True
    assert mt["grid"] == [[3e-4, 1e-4]] and not mt["reference"] and ref["reference"]
    assert ref["base"]["shared"] is False and ref["grid"] == [[1e-3, 1e-4]]
    # a variant with the method's own settings is the same run (one key), only its label differs
    same = SweepConfig(name="s", methods=["bitfit-v"], variants={"bitfit-v": {"method": "bitfit"}},
                       **DENSE)  # fmt: skip
    plain_cfg = SweepConfig(name="p", methods=["bitfit"], **DENSE)
    key = [run_key(u["base"]) for u in build_plan(same)["units"] if u["method"] == "bitfit-v"]
    assert key == [run_key(build_plan(plain_cfg)["units"][0]["base"])]


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"lora": {"method": "lora"}}, "not a method's"),
        ({"x": {"options": {}}}, "needs 'method'"),
        ({"x": {"method": "no-such-method"}}, "needs 'method'"),
        ({"x": {"method": "lora", "rank": 4}}, r"unknown keys \['rank'\]"),
    ],
)
def test_bad_variants_are_refused(variants: dict, message: str) -> None:
    cfg = SweepConfig(name="v", methods=["linear"], variants=variants)
    with pytest.raises(ConfigError, match=message):
        build_plan(cfg)


def test_bad_variant_flag_is_refused(tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "run", "--name", "v", "--variant", "lora-r8",
                              "--store", str(tmp_path), "--json"])  # fmt: skip
    assert res.exit_code == 2 and "NAME=METHOD" in res.output


def test_a_dense_bench_run_equals_the_same_vpeft_train_run(tmp_path: Path) -> None:
    """Same per-task metrics, bit for bit, as `vpeft train` with the same settings: the runner
    reseeds before the method's initial values and puts the BatchNorm statistics its measuring
    passes moved back (without either, the test-split metrics differ)."""
    store = tmp_path / "store"
    common = ["--data-root", "limit=8", "--epochs", "1", "--train-opt", "batch_size=8",
              "--device", "cpu", "--seeds", "1"]  # fmt: skip
    summary = _invoke(
        "bench", "run", "--name", "v", "--protocol", "dense-synthetic", "--tasks",
        "semseg+normals", "--methods", "bitfit", "--variant", "poly-r2=polyhistor",
        "--opt", "poly-r2.reduction=2", "--store", str(store), *common,
    )  # fmt: skip
    assert summary["complete"] and len(summary["trained_here"]) == 3  # with the reference
    records = {r["labels"]["method"]: r for r in ResultStore(store).records(sweep="v")}
    assert set(records) == {"bitfit", "poly-r2", "full"}
    poly = records["poly-r2"]
    assert poly["spec"]["method"] == "polyhistor" and poly["spec"]["options"]["reduction"] == "2"
    assert poly["labels"]["variant"] == "poly-r2" and records["bitfit"]["labels"]["variant"] is None

    train = ["--tasks", "semseg,normals", "--data", "dense-synthetic:limit=8", "--epochs", "1",
             "--warmup-epochs", "0", "--batch-size", "8", "--lr", "0.001", "--seed", "1",
             "--val-split", "none", "--device", "cpu", "--no-progress"]  # fmt: skip
    for label, method, extra in [("poly-r2", "polyhistor", ["--opt", "reduction=2"]),
                                 ("full", "full", [])]:  # fmt: skip
        old = _invoke("train", "-b", "swin-tiny-synth", "-m", method, *extra, *train,
                      "--out", str(tmp_path / label))  # fmt: skip
        assert records[label]["metrics"]["headline"] == old["headline"]
        assert (
            records[label]["params"]["trainable_encoder"] == old["trainable"]["trainable_encoder"]
        )

    table = _invoke("bench", "table", "--store", str(store), "--sweep", "v", "--out",
                    str(tmp_path / "report"))  # fmt: skip
    rows = {r[0]: r for r in table["rows"]}
    expected = delta_m(poly["metrics"]["headline"], records["full"]["metrics"]["headline"],
                       ["normals"])  # fmt: skip
    assert rows["poly-r2"][-1] == f"{expected:.2f}" and rows["full"][-1] == "0.00"
    assert table["variants"] == {"poly-r2": "polyhistor (reduction=2)"}
    md = (tmp_path / "report" / "table.md").read_text()
    assert "Variants: `poly-r2 = polyhistor (reduction=2)`." in md
