"""Test-wide settings: one intra-op thread per worker (xdist runs one worker per core;
more threads only oversubscribe the cores and make tiny-model steps ~10x slower), and the
cache folders tests write into."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("VPEFT_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep caches written by tests out of the user's home."""
    if "VPEFT_CACHE" not in os.environ:
        monkeypatch.setenv("VPEFT_CACHE", str(tmp_path_factory.getbasetemp() / "vpeft-cache"))
    yield


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``VPEFT_CACHE`` root that every test of the session shares, so each synthetic task is
    generated once (under pytest-xdist, workers share the parent of their base temp folders)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "vpeft-cache"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="module")
def swin_t() -> torch.nn.Module:
    """timm's full-size Swin-T, random weights, no classifier (parameter-count tests)."""
    import timm

    return timm.create_model("swin_tiny_patch4_window7_224", num_classes=0)


@pytest.fixture(scope="module")
def swin_b() -> torch.nn.Module:
    """timm's full-size Swin-B, random weights, no classifier (parameter-count tests)."""
    import timm

    return timm.create_model("swin_base_patch4_window7_224", num_classes=0)
