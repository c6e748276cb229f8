"""CUDA checks (skipped without a GPU): bf16 autocast under amp="auto", learning, resume."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from tests.train.tiny_run import base_config, model, run, splits
from vpeft.train import evaluate, loop, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_amp_trains_in_bf16_on_cuda(tmp_path):
    pm = model()
    seen: list[torch.dtype] = []
    hook = pm.model.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    data = splits()
    cfg = base_config(epochs=4, device="cuda", amp="auto", out_dir=str(tmp_path / "run"))
    result = train(pm, data["train"], data["val"], data["test"], cfg)
    hook.remove()
    assert set(seen) == {torch.bfloat16}
    assert result.test_top1 >= 60.0
    assert all(p.dtype == torch.float32 and p.is_cuda for p in pm.trainable_parameters().values())
    again = evaluate(pm, data["test"], device="cuda", amp_dtype=torch.bfloat16)
    assert again.top1 == pytest.approx(result.test_top1)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test_top1"] == again.top1


def test_amp_off_is_fp32_on_cuda():
    pm = model()
    seen: list[torch.dtype] = []
    pm.model.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, y = splits()["train"]
    train(pm, (x, y), config=base_config(epochs=2, device="cuda", amp="off"))
    assert set(seen) == {torch.float32}


def test_resume_on_cuda_matches(tmp_path, monkeypatch):
    cfg = base_config(epochs=3, device="cuda")
    ref, out = tmp_path / "ref", tmp_path / "out"
    pm_ref, r_ref = run(replace(cfg, out_dir=str(ref)), dropout=0.1)
    real = loop.save_checkpoint

    def dies_at_epoch_2(path, model, optimizer, gen, state, config):
        if state.epoch == 2:
            raise KeyboardInterrupt("killed")
        real(path, model, optimizer, gen, state, config)

    monkeypatch.setattr(loop, "save_checkpoint", dies_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(replace(cfg, out_dir=str(out)), dropout=0.1)
    monkeypatch.setattr(loop, "save_checkpoint", real)
    pm, r = run(replace(cfg, out_dir=str(out)), dropout=0.1, resume=True)
    a, b = pm.trainable_parameters(), pm_ref.trainable_parameters()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    assert r.test_top1 == pytest.approx(r_ref.test_top1, abs=100 / 48 + 1e-9)
    print("cuda resume bitwise:", all(torch.equal(a[k], b[k]) for k in a))
