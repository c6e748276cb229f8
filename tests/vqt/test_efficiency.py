"""VQT's memory and compute claims on ViT-B/16 (random weights, CPU, exact counts).

Saved activation bytes come from `saved_tensors_hooks` (vpeft.analysis.memory), FLOPs from
PyTorch's counter with fused attention (vpeft.analysis.flops). Ratios do not depend on the
batch, so batch 1 keeps the tests short.
"""

from __future__ import annotations

import pytest
import timm
import torch

import vpeft
from vpeft.analysis import forward_flops, saved_activation_bytes, train_step_flops


def vit_b() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", num_classes=0)


def test_saved_activations_far_below_fine_tuning_and_vpt_deep() -> None:
    if "vpt-deep" not in vpeft.available_methods():
        pytest.skip("vpt-deep is not registered yet (written concurrently)")
    x = torch.randn(1, 3, 224, 224)
    saved = {
        name: saved_activation_bytes(vpeft.apply(vit_b(), name, num_classes=10, **kw).train(), x)
        for name, kw in (
            ("vqt", {"num_queries": 1}),
            ("full", {}),
            ("vpt-deep", {"num_tokens": 50}),
        )
    }
    # what VQT must keep: one compact K and V per block, 2 · 12 · 197 · 768 float32 (B = 1)
    keys_values = 2 * 12 * 197 * 768 * 4
    assert keys_values <= saved["vqt"] <= 1.05 * keys_values
    assert saved["vqt"] <= 0.15 * saved["full"]
    assert saved["vqt"] <= 0.25 * saved["vpt-deep"]


def test_training_step_costs_about_one_backbone_forward() -> None:
    x = torch.randn(1, 3, 224, 224)
    backbone = forward_flops(vit_b(), x)
    pm = vpeft.apply(vit_b(), "vqt", num_classes=10, num_queries=1).train()
    forward = forward_flops(pm, x)
    step = train_step_flops(pm, x)
    assert forward <= 1.01 * backbone  # K, V re-used: no second projection of the real tokens
    assert step.train_step <= 1.1 * forward
    assert step.backward <= 0.02 * forward
