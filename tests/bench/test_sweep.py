"""`vpeft bench` sweeps on Optuna: the plan, two worker processes sharing one sweep (no run done
twice), a killed worker's run detected by its missing heartbeat and re-run, resume. The second
worker process is forked from the test process (`_fork`), so the tests pay one Python / torch
start-up, not two or three."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from vpeft.bench.store import ResultStore, run_key
from vpeft.bench.sweep import (
    SweepConfig,
    build_plan,
    choose,
    create_sweep,
    final_specs,
    is_complete,
    load_config,
    work,
)
from vpeft.cli.main import app
from vpeft.errors import ConfigError

TINY = {"epochs": 1, "warmup_epochs": 0.0}


def _cfg(name: str, **kw) -> SweepConfig:
    base = dict(
        name=name,
        methods=["linear", "lora"],
        tasks=["synth-digits"],
        seeds=[0, 1],
        lr=[1e-2, 3e-2],
        train=dict(TINY),
        limit={"train": 48, "eval": 48},
    )
    return SweepConfig(**{**base, **kw})


def test_plan_grid_selection_and_finals(tmp_path: Path) -> None:
    plan = build_plan(_cfg("p"))
    assert [u["unit"] for u in plan["units"]] == ["linear/synth-digits", "lora/synth-digits"]
    unit = plan["units"][0]
    assert len(unit["select"]) == 2  # lr grid × one wd
    assert {s["train_split"] for s in unit["select"]} == {"train800"}
    assert all(s["eval_splits"] == {"val": "val200"} for s in unit["select"])
    store = ResultStore(tmp_path)
    assert choose(unit, store) is None  # nothing run yet
    for spec, val in zip(unit["select"], (50.0, 70.0), strict=True):
        store.put({"key": run_key(spec), "metrics": {"val_top1": val}})
    lr, wd = choose(unit, store)
    assert lr == 3e-2
    finals = final_specs(plan, unit, lr, wd)
    assert [f["train"]["seed"] for f in finals] == [0, 1]
    assert {f["train_split"] for f in finals} == {"train800val200"}
    assert all(f["eval_splits"] == {"test": "test"} for f in finals)
    single = build_plan(_cfg("q", lr=[1e-2]))["units"][0]
    assert single["select"] == [] and choose(single, store) == (1e-2, 1e-4)


def test_config_file_toml_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'protocol = "synthetic"\nmethods = ["lora"]\ntasks = ["synth-count"]\n'
        "seeds = [0, 1, 2]\n[method_overrides.lora]\noptions = { rank = 2 }\n"
    )
    cfg = load_config(path, seeds=[5])
    assert cfg.name == "s" and cfg.seeds == [5] and cfg.methods == ["lora"]
    assert build_plan(cfg)["units"][0]["base"]["options"]["rank"] == 2
    (tmp_path / "bad.json").write_text(json.dumps({"methodz": ["x"]}))
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config(tmp_path / "bad.json")


def _wait_for_a_running_trial(study: str, storage: str, alive: Callable[[], bool]) -> None:
    """Block until another worker process has taken a run of `study`."""
    loaded = optuna.load_study(study_name=study, storage=storage)
    deadline = time.monotonic() + 180
    while not loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        assert time.monotonic() < deadline and alive(), "the worker process did not start a run"
        time.sleep(0.05)


def _forked_worker(study: str, storage: str, report_path: str, **kw: Any) -> None:
    report = work(study, storage, device="cpu", poll_s=0.1, **kw)
    Path(report_path).write_text(json.dumps(dataclasses.asdict(report)))


def _fork(study: str, storage: str, report_path: Path, **kw: Any) -> Any:
    """Another worker process, forked from this one: its own Optuna connection and SQLite
    handle, without a second Python / torch start-up (10-20 s on a busy 2-core machine)."""
    proc = multiprocessing.get_context("fork").Process(
        target=_forked_worker, args=(study, storage, str(report_path)), kwargs=kw
    )
    proc.start()
    return proc


def test_two_workers_share_one_sweep_and_no_run_is_done_twice(tmp_path: Path) -> None:
    """A worker process (`_fork`) and this process work on one sweep at the same time; this
    process joins once the other holds a run, so both take runs, and the 6 runs are done once
    each."""
    store = ResultStore(tmp_path / "store")
    info = create_sweep(_cfg("two", seeds=[0]), store)
    report_path = tmp_path / "there.json"
    proc = _fork("two", info["storage"], report_path)
    _wait_for_a_running_trial("two", info["storage"], proc.is_alive)
    here = work("two", info["storage"], device="cpu", poll_s=0.1)
    proc.join(240)
    assert proc.exitcode == 0
    there = json.loads(report_path.read_text())
    trained = there["trained"] + here.trained
    records = list(store.records(sweep="two"))
    assert there["trained"] and here.trained  # both workers trained runs
    assert len(trained) == len(set(trained)) == len(records) == 6  # 2 × (2 grid + 1 seed)
    assert not there["reused"] and not here.reused  # no duplicate trials either
    assert there["complete"] and here.complete and is_complete(info["plan"], store)
    rec = next(r for r in records if r["labels"]["stage"] == "final")
    assert rec["metrics"]["test_top1"] is not None and rec["metrics"]["val_top1"] is None
    assert rec["params"]["trainable"] > 0 and rec["flops"]["train_step_per_image"] > 0
    assert rec["memory"]["total"] > 0 and len(rec["hashes"]["data"]) == 64
    assert rec["hashes"]["adapter"] and rec["versions"]["torch"]
    # re-running the sweep (the `bench worker` command) trains nothing: all runs are stored
    again = create_sweep(_cfg("two", seeds=[0]), store)
    res = CliRunner().invoke(
        app, ["bench", "worker", "--study", "two", "--storage", again["storage"], "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"trained": [], "reused": [], "failed": [], "complete": True}


def test_a_killed_workers_run_is_detected_by_heartbeat_and_re_run(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "store")
    cfg = _cfg(
        "kill",
        methods=["lora"],
        seeds=[0],
        lr=[1e-2],
        train={"epochs": 3, "warmup_epochs": 0.0},
        limit={"train": 512, "eval": 48},
    )
    info = create_sweep(cfg, store, heartbeat_s=1, grace_s=2)
    victim = _fork("kill", info["storage"], tmp_path / "victim.json", heartbeat_s=1, grace_s=2)
    deadline = time.monotonic() + 120
    work_dir = store.root / "work"
    while not any(work_dir.iterdir()):  # the run has started training
        assert time.monotonic() < deadline and victim.is_alive(), "the victim did not start"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(30)
    assert victim.exitcode == -signal.SIGKILL and not (tmp_path / "victim.json").exists()
    [key] = [p.name for p in work_dir.iterdir()]
    assert not store.has(key)
    report = work("kill", info["storage"], device="cpu", heartbeat_s=1, grace_s=2, poll_s=0.2)
    assert report.complete and report.trained == [key]
    study = optuna.load_study(study_name="kill", storage=info["storage"])
    states = [(t.state.name, t.user_attrs.get("run")) for t in study.get_trials()]
    assert ("FAIL", key) in states and ("COMPLETE", key) in states
    assert len([s for s in states if s[0] == "COMPLETE"]) == 1
