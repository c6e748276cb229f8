"""Saved-activation bytes: one count per storage, parameters excluded, deterministic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vpeft
from tests.helpers import images, tiny_vit
from vpeft.analysis import SavedTensorCounter, saved_activation_bytes, state_bytes, training_memory

FLOAT = 4  # bytes per float32 element


class SaveThrice(torch.autograd.Function):
    """Saves its input three times: itself, again, and as a transposed view."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, x, x.t())
        return x * 2

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad * 2


def test_same_storage_saved_several_times_counts_once() -> None:
    x = torch.randn(6, 5, requires_grad=True)
    with SavedTensorCounter() as saved:
        SaveThrice.apply(x)
    assert (saved.bytes, saved.storages) == (6 * 5 * FLOAT, 1)


def test_views_of_one_result_count_its_whole_storage_once() -> None:
    a = torch.randn(100, requires_grad=True)
    b = torch.randn(30, requires_grad=True)
    with SavedTensorCounter() as saved:
        y = a.exp()  # saves its result y
        z = y * y  # saves y twice
        w = y[:10].sin()  # saves a view of y: y's storage stays alive
        v = b * 3.0  # saves nothing (the scalar needs no gradient)
        (z.sum() + w.sum() + v.sum()).backward()
    assert (saved.bytes, saved.storages) == (100 * FLOAT, 1)


def test_parameters_are_not_activations() -> None:
    layer = nn.Linear(8, 3)
    x = torch.randn(5, 8, requires_grad=True)
    with SavedTensorCounter(exclude=layer.parameters()) as saved:
        layer(x)
    assert saved.bytes == 5 * 8 * FLOAT  # the input; the (transposed) weight is excluded
    with SavedTensorCounter() as unfiltered:
        layer(x)
    assert unfiltered.bytes == 5 * 8 * FLOAT + 8 * 3 * FLOAT


def _pm(method: str) -> vpeft.PeftModel:
    pm = vpeft.apply(tiny_vit(), method, num_classes=5)
    pm.train()
    return pm


def test_linear_probe_saves_the_final_norm_output_and_the_logits() -> None:
    """The head saves its input, the class token x[:, 0] — a view that keeps the whole final
    (B, N, D) norm output alive — and the loss saves the (B, C) logits."""
    batch, tokens, dim, classes = 2, 1 + (32 // 8) ** 2, 32, 5
    assert saved_activation_bytes(_pm("linear"), images(batch)) == FLOAT * (
        batch * tokens * dim + batch * classes
    )


@pytest.mark.parametrize("method", ["linear", "lora", "full"])
def test_counts_are_deterministic(method: str) -> None:
    pm, x = _pm(method), images(2)
    assert saved_activation_bytes(pm, x) == saved_activation_bytes(pm, x) > 0


def test_ordering_linear_much_less_than_peft_less_than_full() -> None:
    x = images(2)
    linear, lora, full = (saved_activation_bytes(_pm(m), x) for m in ("linear", "lora", "full"))
    assert linear * 10 < lora < full


def test_state_and_training_memory_add_up() -> None:
    pm = _pm("lora")
    n_total = sum(p.numel() for p in pm.parameters())
    n_train = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    states = state_bytes(pm)
    assert states.param_bytes == FLOAT * n_total
    assert states.grad_bytes == FLOAT * n_train
    assert states.optimizer_bytes == 2 * FLOAT * n_train  # AdamW: exp_avg and exp_avg_sq
    mem = training_memory(pm, images(2))
    assert mem.saved_activation_bytes == saved_activation_bytes(pm, images(2))
    assert mem.total == (
        states.param_bytes + states.grad_bytes + states.optimizer_bytes + mem.saved_activation_bytes
    )
