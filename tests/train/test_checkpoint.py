"""Checkpoints: exact round trip, atomic writes, and resume ≡ uninterrupted run (bitwise, CPU)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.train.tiny_run import base_config, model, run
from vpeft.train import checkpoint as ckpt
from vpeft.train import loop
from vpeft.train.checkpoint import (
    CheckpointError,
    TrainState,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from vpeft.train.optim import build_optimizer, param_groups

ROOT = Path(__file__).resolve().parents[2]


def _untimed(records):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


def _metrics(out: Path):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _summary(out: Path):
    s = json.loads((out / "summary.json").read_text())
    s.pop("wall_s")
    s["config"].pop("out_dir")
    return s


def _assert_same_run(out: Path, ref: Path) -> None:
    assert _untimed(_metrics(out)) == _untimed(_metrics(ref))
    assert _summary(out) == _summary(ref)
    a, b = load_file(out / "adapter.safetensors"), load_file(ref / "adapter.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _stepped(seed: int):
    torch.manual_seed(seed)
    pm = model()
    opt = build_optimizer("adam", param_groups(pm, 0.1), lr=1e-2)
    x = torch.randn(4, 3, 32, 32)
    pm(x).square().mean().backward()
    opt.step()
    return pm, opt


def test_round_trip_restores_tensors_optimizer_and_rngs(tmp_path):
    pm, opt = _stepped(0)
    gen = torch.Generator().manual_seed(5)
    gen_draw = torch.rand(1, generator=gen)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, pm, opt, gen, TrainState(2, 7, [{"epoch": 1}], 1.5), {"lr": 1.0})
    expect = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen))

    pm2, opt2 = _stepped(1)  # other values everywhere
    gen2 = torch.Generator().manual_seed(99)
    state, config = load_checkpoint(path, pm2, opt2, gen2)
    assert (state.epoch, state.global_step, state.history, config) == (
        2,
        7,
        [{"epoch": 1}],
        {"lr": 1.0},
    )
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen2))
    assert torch.equal(got[0], expect[0]) and np.array_equal(got[1], expect[1])
    assert got[2] == expect[2] and torch.equal(got[3], expect[3])
    assert gen_draw.shape == (1,)
    a, b = pm.trainable_parameters(), pm2.trainable_parameters()
    assert all(torch.equal(a[k], b[k]) for k in a)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid, st in s1["state"].items():
        assert all(torch.equal(st[k], s2["state"][pid][k]) for k in st)
    # only trained tensors are stored, never the frozen backbone
    tensors, _ = read_checkpoint(path)
    params = {k[len("param.") :] for k in tensors if k.startswith("param.")}
    assert params == set(pm.trainable_parameters())


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    pm, opt = _stepped(0)
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, pm, opt, gen, TrainState(1), {})
    before = path.read_bytes()

    def torn_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", torn_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, pm, opt, gen, TrainState(2), {})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left
    _, meta = read_checkpoint(path)
    assert meta["epoch"] == 1


def test_corrupted_checkpoint_and_stale_temporaries(tmp_path):
    out = tmp_path / "run"
    run(base_config(epochs=2, out_dir=str(out)))
    stale = out / ".checkpoint.safetensors.x1y2.tmp"
    stale.write_bytes(b"left by a killed writer")
    _, result = run(base_config(epochs=2, out_dir=str(out)), resume=True)  # finished: no training
    assert not stale.exists()
    assert len(result.history) == 2 and len(_metrics(out)) == 2
    (out / "checkpoint.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        run(base_config(epochs=2, out_dir=str(out)), resume=True)


def test_crash_between_metrics_line_and_checkpoint(tmp_path, monkeypatch):
    """A metrics line written for an epoch whose checkpoint never landed is not duplicated."""
    cfg = base_config(epochs=3)
    ref, out = tmp_path / "ref", tmp_path / "out"
    run(replace(cfg, out_dir=str(ref)), dropout=0.1, dataset=True)

    real = loop.save_checkpoint

    def dies_at_epoch_2(path, model, optimizer, gen, state, config):
        if state.epoch == 2:
            raise KeyboardInterrupt("killed")
        real(path, model, optimizer, gen, state, config)

    monkeypatch.setattr(loop, "save_checkpoint", dies_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(replace(cfg, out_dir=str(out)), dropout=0.1, dataset=True)
    assert len(_metrics(out)) == 2  # epoch 2's line is there, its checkpoint is not
    monkeypatch.setattr(loop, "save_checkpoint", real)
    run(replace(cfg, out_dir=str(out)), dropout=0.1, dataset=True, resume=True)
    _assert_same_run(out, ref)


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    """Kill a training process with SIGKILL after its first checkpoint, resume, compare bitwise."""
    epochs, args = 6, ["--n-train", "96", "--dropout", "0.1", "--dataset"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "tests.train.tiny_run", str(out), "--epochs", str(epochs), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        cfg = base_config(epochs=epochs, out_dir=str(ref), device="cpu")
        run(cfg, n_train=96, dropout=0.1, dataset=True)  # the uninterrupted reference
        deadline = time.monotonic() + 600
        while not (out / "checkpoint.safetensors").exists():
            if proc.poll() is not None:
                pytest.fail(f"training process ended early: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _, meta = read_checkpoint(out / "checkpoint.safetensors")
    assert 1 <= meta["epoch"] < epochs
    assert not (out / "summary.json").exists()
    assert len(_metrics(out)) >= meta["epoch"]
    run(replace(cfg, out_dir=str(out)), n_train=96, dropout=0.1, dataset=True, resume=True)
    _assert_same_run(out, ref)
    assert [r["epoch"] for r in _metrics(out)] == list(range(1, epochs + 1))
