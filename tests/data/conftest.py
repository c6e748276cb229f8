"""Fixtures for the data tests: a cache shared by the session (and by xdist workers)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``VPEFT_CACHE`` root that every test of the session shares, so each task is generated
    once (under pytest-xdist, workers share the parent of their base temp folders)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "vpeft-cache"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(synth_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point ``VPEFT_CACHE`` away from the home folder for every data test."""
    monkeypatch.setenv("VPEFT_CACHE", str(synth_root))


def _write_png(
    path: Path, colour: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (12, 10)
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), colour, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def write_png():
    """``write_png(path, colour=(r, g, b), size=(w, h))``: a solid-colour PNG, folders created."""
    return _write_png
