"""Fixtures for the bench tests: one synthetic-data cache shared by the session and its workers,
so each task is generated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``VPEFT_CACHE`` root shared by every bench test (and every pytest-xdist worker)."""
    if "VPEFT_CACHE" in os.environ:  # a cache the user chose (e.g. already generated)
        return Path(os.environ["VPEFT_CACHE"])
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "vpeft-cache"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(bench_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPEFT_CACHE", str(bench_cache))
