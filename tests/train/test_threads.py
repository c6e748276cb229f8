"""Thread choice from the cores the process may use (no timing)."""

from __future__ import annotations

import os

import pytest
import torch

from vpeft.errors import ConfigError
from vpeft.train import threads


def test_cgroup_quota_is_read(tmp_path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_quota_cores(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_quota_cores(tmp_path) is None
    assert threads._cgroup_quota_cores(tmp_path / "absent") is None


def test_available_cores_respects_affinity_and_quota(monkeypatch) -> None:
    monkeypatch.setattr(threads, "_affinity_cores", lambda: 8)
    monkeypatch.setattr(threads, "_cgroup_quota_cores", lambda: 2.5)
    assert threads.available_cores() == 3
    monkeypatch.setattr(threads, "_cgroup_quota_cores", lambda: None)
    assert threads.available_cores() == 8
    monkeypatch.setattr(threads, "_runnable_others", lambda: 5)
    assert threads.default_threads() == 3
    assert threads.default_threads(share_busy_cores=False) == 8
    monkeypatch.setattr(threads, "_runnable_others", lambda: 50)
    assert threads.default_threads() == 1


def test_configure_threads_sets_torch() -> None:
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert 1 <= threads.configure_threads() <= len(os.sched_getaffinity(0))
        with pytest.raises(ConfigError):
            threads.configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_passive_wait_env_keeps_user_values() -> None:
    env = threads.passive_wait_env({"OMP_WAIT_POLICY": "ACTIVE"})
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and env["GOMP_SPINCOUNT"] == "0"
