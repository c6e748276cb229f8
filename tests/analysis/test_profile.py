"""`profile_model`: consistent figures, and the model is left exactly as it was."""

from __future__ import annotations

import torch

import vpeft
from tests.helpers import tiny_vit
from vpeft.analysis import (
    CONTRACT_KEYS,
    forward_flops,
    native_img_size,
    profile_model,
    saved_activation_bytes,
    state_bytes,
)


def test_profile_matches_the_separate_measurements_and_restores_the_model() -> None:
    pm = vpeft.apply(tiny_vit(), "lora", num_classes=5, rank=2)
    pm.eval()
    before = {n: p.detach().clone() for n, p in pm.state_dict().items()}
    report = profile_model(pm, batch=3, steps=2, warmup=1, lr=0.1)

    assert native_img_size(pm) == report.img_size == 32
    x = torch.randn(3, 3, 32, 32)
    pm.train()
    assert report.forward_flops == forward_flops(pm, x)
    assert report.saved_activation_bytes == saved_activation_bytes(pm, x)
    pm.eval()
    assert report.trainable == pm.summary().trainable
    states = state_bytes(pm)
    assert (report.param_bytes, report.grad_bytes, report.optimizer_bytes) == (
        states.param_bytes,
        states.grad_bytes,
        states.optimizer_bytes,
    )
    assert report.training_memory_bytes == (
        states.param_bytes
        + states.grad_bytes
        + states.optimizer_bytes
        + report.saved_activation_bytes
    )
    assert 1.5 < report.train_step_flops / report.forward_flops < 2.5
    assert report.step_seconds > 0

    after = pm.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.grad is None for p in pm.parameters())
    assert not pm.training


def test_report_dict_starts_with_the_contract_keys() -> None:
    pm = vpeft.apply(tiny_vit(), "linear", num_classes=5)
    record = profile_model(pm, batch=1, steps=1, warmup=0).as_dict()
    assert tuple(record)[: len(CONTRACT_KEYS)] == CONTRACT_KEYS
    assert all(isinstance(record[k], int) for k in CONTRACT_KEYS if k != "step_seconds")
    assert isinstance(record["step_seconds"], float)


def test_profile_restores_buffers_of_any_image_model() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 2),
    )  # fmt: skip
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    report = profile_model(model, batch=2, img_size=8, steps=2, warmup=1)
    assert report.forward_flops == 2 * (2 * 36 * 27 * 4 + 2 * 4 * 2)  # conv on 6×6 + linear
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
