"""Resume refuses another run's data / splits / method options; a diverging loss stops the run
with a clear error; JSON records never hold bare NaN / Infinity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import vpeft
from tests.helpers import tiny_vit
from tests.train.tiny_run import NUM_CLASSES, base_config, tensors
from vpeft.errors import ConfigError, TrainingDivergedError
from vpeft.jsonsafe import dumps_strict
from vpeft.train import CheckpointError, TrainConfig, train
from vpeft.train.records import write_summary


def _run(out: Path, seed: int = 1, alpha: float = 8.0, spec: dict | None = None, **kw) -> None:
    pm = vpeft.apply(tiny_vit(seed=0), "lora", num_classes=NUM_CLASSES, rank=2, alpha=alpha)
    config = base_config(epochs=1, warmup_epochs=0, out_dir=str(out), **kw)
    train(pm, tensors(32, seed), None, tensors(16, 9), config, resume=True, summary_extra=spec)


def test_resume_refuses_other_data_with_the_same_class_count(tmp_path: Path) -> None:
    _run(tmp_path)
    _run(tmp_path)  # the same run resumes (nothing left to do)
    before = (tmp_path / "summary.json").read_text()
    with pytest.raises(CheckpointError, match="the data content"):
        _run(tmp_path, seed=2)
    assert (tmp_path / "summary.json").read_text() == before  # untouched


def test_resume_refuses_a_changed_method_option(tmp_path: Path) -> None:
    _run(tmp_path)
    with pytest.raises(CheckpointError, match="method or its options"):
        _run(tmp_path, alpha=16.0)


def test_resume_refuses_changed_splits(tmp_path: Path) -> None:
    _run(tmp_path, spec={"data": "folder:x", "splits": {"train": "train800"}, "out": "a"})
    _run(tmp_path, spec={"data": "folder:x", "splits": {"train": "train800"}, "out": "b"})
    with pytest.raises(CheckpointError, match="splits"):
        _run(tmp_path, spec={"data": "folder:x", "splits": {"train": "train800val200"}})


@pytest.mark.parametrize(("lr", "alpha"), [(1e6, 8.0), (math.inf, 8.0), (1e-3, math.nan)])
def test_diverging_loss_stops_the_run_naming_step_and_lr(lr: float, alpha: float) -> None:
    pm = vpeft.apply(tiny_vit(seed=0), "lora", num_classes=NUM_CLASSES, rank=2)
    for module in pm.modules():  # alpha=nan is refused as an option now; set the scale behind it
        if hasattr(module, "lora_A"):
            module.scale = alpha / 2
    config = base_config(epochs=2, warmup_epochs=0, batch_size=8)
    config.lr = lr  # past validation (which refuses inf): the guard must still catch it
    with pytest.raises(TrainingDivergedError, match=r"at step \d+ .*learning rate.*--lr"):
        train(pm, tensors(32, 1), None, None, config)


def test_non_finite_learning_rate_is_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig.from_options({"lr": "inf"})


def test_json_outputs_never_hold_bare_nan(tmp_path: Path) -> None:
    record = {"loss": float("nan"), "x": [float("inf"), 1.0], "n": {"y": -math.inf}}
    assert json.loads(dumps_strict(record)) == {"loss": None, "x": [None, 1.0], "n": {"y": None}}
    write_summary(tmp_path / "s.json", record)
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert torch.isfinite(torch.tensor(1.0))
