"""The training loop: protocol, files, gradient accumulation, seeds and input checks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from tests.train.tiny_run import base_config, model, run, splits
from vpeft.errors import ConfigError, DatasetError
from vpeft.train import evaluate, train
from vpeft.train.schedule import WarmupCosine

TIMING = {"time_s"}


def _untimed(history):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def _trained(pm):
    return {k: v.detach().clone() for k, v in pm.trainable_parameters().items()}


def test_learns_and_reports_last_epoch(tmp_path):
    out = tmp_path / "run"
    pm, result = run(base_config(out_dir=str(out), report_best_test=True))
    assert result.test_top1 >= 60.0  # chance is 33 %
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_top1"] == history[-1]["test_top1"] == result.test_top1
    assert summary["result"]["metric"] == "test_top1"
    assert summary["val_top1"] == history[-1]["val_top1"]
    best = summary["best_test_top1_over_epochs"]
    assert best["value"] == max(r["test_top1"] for r in history)
    assert "test-set model selection" in best["note"]
    assert summary["trainable"] == pm.summary().as_dict()
    assert summary["config"]["epochs"] == 3 and summary["wall_s"] > 0
    # the reported figure is the final model's accuracy on the test split
    again = evaluate(pm, splits()["test"], batch_size=7)
    assert again.top1 == pytest.approx(result.test_top1) and again.count == 48
    assert again.loss == pytest.approx(result.test_loss, rel=1e-5)
    # the adapter file reloads to the same test accuracy
    from tests.helpers import tiny_vit
    from vpeft import load

    reloaded = load(out / "adapter.safetensors", base=tiny_vit(seed=0))
    assert evaluate(reloaded, splits()["test"]).top1 == pytest.approx(result.test_top1)


def test_best_test_is_off_by_default_and_eval_every(tmp_path):
    out = tmp_path / "run"
    _, result = run(base_config(out_dir=str(out), epochs=3, eval_every=2))
    summary = json.loads((out / "summary.json").read_text())
    assert "best_test_top1_over_epochs" not in summary
    evaluated = [("val_top1" in r, "test_top1" in r) for r in result.history]
    assert evaluated == [(False, False), (True, True), (True, True)]  # epoch 2, and the last


def test_recorded_lr_follows_the_schedule():
    cfg = base_config(epochs=3, warmup_epochs=1, lr=5e-3, warmup_lr=1e-6, min_lr=1e-5)
    _, result = run(cfg)
    steps = 96 // 16
    closed = WarmupCosine(5e-3, total=3 * steps, warmup=steps, warmup_lr=1e-6, min_lr=1e-5)
    assert [r["lr"] for r in result.history] == pytest.approx(
        [closed.lr_at(e * steps - 1) for e in (1, 2, 3)], rel=1e-12
    )
    per_epoch = WarmupCosine(5e-3, total=3, warmup=1, warmup_lr=1e-6, min_lr=1e-5)
    _, result = run(replace(cfg, schedule_unit="epoch"))
    assert [r["lr"] for r in result.history] == pytest.approx(
        [per_epoch.lr_at(e) for e in (0, 1, 2)], rel=1e-12
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_grad_accumulation_matches_one_big_batch(optimizer):
    """2 micro-batches of B/2 give the step of one batch of B (final batch uneven: 40 = 16+16+8)."""
    cfg = base_config(
        epochs=2, batch_size=16, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 5e-3
    )
    start = _trained(model())
    one, r1 = run(cfg, n_train=40)
    two, r2 = run(replace(cfg, grad_accum_steps=2), n_train=40)
    a, b = _trained(one), _trained(two)
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    assert moved > 1e-3  # training did something, so the comparison below is not vacuous
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2e-6)
    assert r1.history[-1]["train_loss"] == pytest.approx(r2.history[-1]["train_loss"], abs=1e-6)


def test_same_seed_same_run_other_seed_other_run():
    pm1, r1 = run(base_config(epochs=2), dataset=True, dropout=0.1)
    pm2, r2 = run(base_config(epochs=2), dataset=True, dropout=0.1)
    pm3, _ = run(base_config(epochs=2, seed=1), dataset=True, dropout=0.1)
    a, b, c = _trained(pm1), _trained(pm2), _trained(pm3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _untimed(r1.history) == _untimed(r2.history)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_refuses_to_overwrite_and_checks_resume_settings(tmp_path):
    out = str(tmp_path / "run")
    run(base_config(epochs=1, warmup_epochs=0, out_dir=out))
    with pytest.raises(ConfigError, match="resume"):
        run(base_config(epochs=1, warmup_epochs=0, out_dir=out))
    with pytest.raises(ConfigError, match=r"\['lr'\]"):
        run(base_config(epochs=1, warmup_epochs=0, out_dir=out, lr=0.1), resume=True)
    with pytest.raises(ConfigError, match="out_dir"):
        run(base_config(epochs=2), resume=True)


def test_input_errors():
    pm = model()
    x, y = splits()["train"]
    with pytest.raises(DatasetError, match="labels up to 7"):
        train(pm, (x, y.clamp(max=0) + 7), config=base_config(epochs=2))
    with pytest.raises(DatasetError, match="empty"):
        train(pm, (x[:0], y[:0]), config=base_config(epochs=2))
    with pytest.raises(DatasetError, match="Dataset or an"):
        train(pm, [1, 2, 3], config=base_config(epochs=2))
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        base_config(batch_size=2, grad_accum_steps=4)
    with pytest.raises(ConfigError, match="lower warmup_epochs"):
        base_config(epochs=1)


def test_dataloader_workers_are_seeded():
    """Dataset inputs read by 2 worker processes: augmentation RNGs are seeded per epoch."""
    cfg = base_config(epochs=2, num_workers=2)
    pm1, r1 = run(cfg, n_train=48, dataset=True)
    pm2, r2 = run(cfg, n_train=48, dataset=True)
    a, b = _trained(pm1), _trained(pm2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _untimed(r1.history) == _untimed(r2.history)
