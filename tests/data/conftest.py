"""Fixtures for the data tests: a cache shared by the session (and by xdist workers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def synth_root(shared_cache: Path) -> Path:
    """The session's shared ``VPEFT_CACHE`` root (even when the user set one: data tests
    never write into a real cache)."""
    return shared_cache


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
