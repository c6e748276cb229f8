"""Head2Toe baseline: taps, pooling, counts, frozen (no autograd through the backbone)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import vpeft
from tests.helpers import images, tiny_vit
from tests.methods import checks
from vpeft.analysis import saved_activation_bytes


def reference_taps(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Z_0 and, per block, LN1 / MSA / MLP-hidden / MLP outputs, from the block's pieces."""
    h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    taps = [h]
    for blk in model.blocks:
        n1 = blk.norm1(h)
        a = blk.attn(n1)
        h = h + blk.ls1(a)
        n2 = blk.norm2(h)
        hidden = blk.mlp.act(blk.mlp.fc1(n2))
        out = blk.mlp(n2)
        h = h + blk.ls2(out)
        taps += [n1, a, hidden, out]
    return taps


def grouped_mean(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean of contiguous token groups [⌊iN/g⌋, ⌈(i+1)N/g⌉), laid out channel-major."""
    n = t.shape[1]
    bins = [(math.floor(i * n / groups), math.ceil((i + 1) * n / groups)) for i in range(groups)]
    return torch.stack([t[:, s:e].mean(1) for s, e in bins], dim=-1).flatten(1)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("vit_kw", [{}, {"global_pool": "avg"}, {"pre_norm": True}])
def test_features_are_pooled_normalised_taps(groups: int, vit_kw: dict) -> None:
    pm = vpeft.apply(tiny_vit(**vit_kw), "head2toe", num_classes=3, pool_groups=groups).eval()
    x = images(2)
    with torch.no_grad():
        taps = reference_taps(pm.model, x)
        expected = torch.cat([F.normalize(grouped_mean(t, groups), dim=-1) for t in taps], -1)
        got = pm.forward_override.features(x)
    assert len(taps) == 1 + 4 * 2
    assert got.shape == (2, groups * (32 + 2 * (32 + 32 + 128 + 32)))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_unnormalised_option() -> None:
    pm = vpeft.apply(tiny_vit(), "head2toe", num_classes=3, normalize=False).eval()
    x = images(2)
    with torch.no_grad():
        expected = torch.cat([grouped_mean(t, 1) for t in reference_taps(pm.model, x)], -1)
        torch.testing.assert_close(pm.forward_override.features(x), expected, atol=1e-6, rtol=0)


def test_counts_closed_form() -> None:
    s = checks.build("head2toe", tiny_vit, pool_groups=2).summary()
    assert s.trainable_encoder == 0
    assert s.head == 2 * (32 + 2 * (3 * 32 + 128)) * 3 + 3
    model = timm.create_model("vit_base_patch16_224", num_classes=0)
    s = vpeft.apply(model, "head2toe", num_classes=10).summary()
    assert s.head == (768 + 12 * (3 * 768 + 3072)) * 10 + 10  # 65,280 features


def test_trains_only_the_head_and_round_trips(tmp_path) -> None:
    checks.check_training_moves_only_trainables("head2toe", tiny_vit, pool_groups=2)
    checks.check_save_load("head2toe", tiny_vit, tmp_path, pool_groups=2)


def test_no_autograd_through_the_backbone() -> None:
    pm = vpeft.apply(tiny_vit(img_size=64), "head2toe", num_classes=3).train()
    x = torch.randn(4, 3, 64, 64)
    features = pm.forward_override.feature_dim
    saved = saved_activation_bytes(pm, x)
    assert saved <= 4 * features * 4 + 1024  # only the head's input (B × F floats) and scraps
    pm(x).sum().backward()
    assert all(p.grad is None for p in pm.model.parameters())


def test_rejects_a_backbone_that_trains() -> None:
    pm = vpeft.apply(tiny_vit(), "lora", num_classes=3, rank=2)
    with pytest.raises(vpeft.ConfigError, match="frozen backbone"):
        vpeft.apply(pm, "head2toe")
    with pytest.raises(vpeft.ConfigError, match="pool_groups must be >= 1"):
        vpeft.apply(tiny_vit(), "head2toe", num_classes=3, pool_groups=0)
