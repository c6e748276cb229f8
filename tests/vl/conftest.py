"""Small split sizes for the VL suite tests (the real sizes take seconds per part)."""

from __future__ import annotations

import pytest

from vpeft.data.vl import synthetic as S

SMALL = {
    "vqa": {"train": 40, "val": 10, "test": 20},
    "nlvr2": {"train": 40, "val": 10, "test": 20},
    "retrieval": {"train": 12, "val": 4, "test": 6},
    "classes": {"train": 2, "val": 1, "test_base": 2, "test_new": 2},
}


@pytest.fixture
def small_suite(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Shrink every split and cache into a fresh folder; yields the cache folder."""
    monkeypatch.setattr(S, "SPLITS", SMALL)
    monkeypatch.setenv("VPEFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "vl-synthetic"
