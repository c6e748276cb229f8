"""Fixtures for the bench tests: one synthetic-data cache shared by the session and its workers,
so each task is generated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bench_cache(shared_cache: Path) -> Path:
    """A ``VPEFT_CACHE`` root shared by every bench test (and every pytest-xdist worker)."""
    if "VPEFT_CACHE" in os.environ:  # a cache the user chose (e.g. already generated)
        return Path(os.environ["VPEFT_CACHE"])
    return shared_cache


@pytest.fixture(autouse=True)
def _isolated_cache(bench_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPEFT_CACHE", str(bench_cache))
