"""`vpeft bench` sweeps on Optuna: the plan, two worker processes sharing one sweep (no run done
twice), a killed worker's run detected by its missing heartbeat and re-run, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

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
from vpeft.errors import ConfigError

SRC = str(Path(__file__).resolve().parents[2] / "src")
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


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def _worker(study: str, storage: str, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "vpeft.cli.main",
        "bench",
        "worker",
        "--study",
        study,
        "--storage",
        storage,
        "--device",
        "cpu",
        "--json",
        *extra,
    ]
    return subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


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


def _wait_for_a_running_trial(study: str, storage: str, proc: subprocess.Popen) -> None:
    """Block until the worker process `proc` has taken a run of `study` (its imports done)."""
    loaded = optuna.load_study(study_name=study, storage=storage)
    deadline = time.monotonic() + 180
    while not loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def test_two_workers_share_one_sweep_and_no_run_is_done_twice(tmp_path: Path) -> None:
    """A worker process and this process work on one sweep at the same time. The second worker
    starts only once the first holds a run, so both take runs (the sharing is exercised, not
    just the queue of a single worker); the 6 runs are then done once each, by one of them."""
    store = ResultStore(tmp_path / "store")
    info = create_sweep(_cfg("two", seeds=[0]), store)
    proc = _worker("two", info["storage"])
    _wait_for_a_running_trial("two", info["storage"], proc)
    here = work("two", info["storage"], device="cpu", poll_s=0.1)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    there = json.loads(out)
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
    # re-running the sweep trains nothing: every run is already in the store
    again = create_sweep(_cfg("two", seeds=[0]), store)
    report = work("two", again["storage"], device="cpu")
    assert report.trained == [] and report.complete


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
    victim = _worker("kill", info["storage"], "--heartbeat", "1", "--grace", "2")
    deadline = time.monotonic() + 120
    work_dir = store.root / "work"
    while not any(work_dir.iterdir()):  # the run has started training
        assert time.monotonic() < deadline and victim.poll() is None, victim.communicate()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    [key] = [p.name for p in work_dir.iterdir()]
    assert not store.has(key)
    report = work("kill", info["storage"], device="cpu", heartbeat_s=1, grace_s=2, poll_s=0.2)
    assert report.complete and report.trained == [key]
    study = optuna.load_study(study_name="kill", storage=info["storage"])
    states = [(t.state.name, t.user_attrs.get("run")) for t in study.get_trials()]
    assert ("FAIL", key) in states and ("COMPLETE", key) in states
    assert len([s for s in states if s[0] == "COMPLETE"]) == 1
