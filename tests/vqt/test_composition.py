"""VQT on top of feature-adapting methods (paper §4.3): AdaptFormer and VPT-deep first, then
T query tokens per block, trained together. The backbone pass then runs with autograd."""

from __future__ import annotations

import pytest
import torch

import vpeft
from tests.helpers import images, tiny_vit
from tests.methods import checks
from tests.vqt.naive import naive_vqt_features
from vpeft.analysis import saved_activation_bytes

BASES = {"adaptformer": {"bottleneck": 4}, "vpt-deep": {"num_tokens": 3}}


def _require(method: str) -> None:
    if method not in vpeft.available_methods():
        pytest.skip(f"method {method!r} is not registered yet (written concurrently)")


def _composed(base: str, seed: int = 0, depth: int = 3, **vqt: object) -> vpeft.PeftModel:
    torch.manual_seed(seed + 100)
    pm = vpeft.apply(tiny_vit(seed, depth=depth), base, num_classes=3, **BASES[base])
    return vpeft.apply(pm, "vqt", **{"num_queries": 2, **vqt})


@pytest.mark.parametrize("base", list(BASES))
def test_features_and_all_gradients_match_naive(base: str) -> None:
    _require(base)
    pm = _composed(base)
    checks.perturb_trainables(pm, std=0.3)
    pm.eval()
    trainable = pm.trainable_parameters()
    backbone_side = [n for n in trainable if n.startswith("model.")]
    assert backbone_side, "the base method trains nothing inside the backbone"
    assert pm.forward_override.backbone_trains()
    x = images(3)
    fast = pm.forward_override.features(x)
    slow = naive_vqt_features(pm, x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    weights = torch.randn(fast.shape[1], generator=torch.Generator().manual_seed(3))
    params = list(trainable.values())
    g_fast = torch.autograd.grad((fast * weights).sum(), params, allow_unused=True)
    g_slow = torch.autograd.grad((slow * weights).sum(), params, allow_unused=True)
    for name, a, b in zip(trainable, g_fast, g_slow, strict=True):
        if name.startswith("forward_override.head"):
            continue  # the head is not part of the features
        assert a is not None and b is not None, name
        assert a.abs().max() > 0, f"{name} gets no gradient"
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("base", list(BASES))
def test_composed_training_and_save_load(base: str, tmp_path) -> None:
    _require(base)

    def factory(seed: int = 0, **kw: object) -> vpeft.PeftModel:
        return vpeft.apply(tiny_vit(seed), base, num_classes=checks.NUM_CLASSES, **BASES[base])

    pm = checks.check_training_moves_only_trainables("vqt", factory, num_queries=2)
    assert [m.name for m in pm.methods] == [base, "vqt"]
    path = tmp_path / "composed.safetensors"
    pm.save(path)
    loaded = vpeft.load(path, base=tiny_vit(0))
    assert [m.name for m in loaded.methods] == [base, "vqt"]
    pm.eval()
    loaded.eval()
    x = images(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), pm(x))


def test_composition_loses_memory_efficiency_and_a_profile_shows_it() -> None:
    _require("adaptformer")
    x = torch.randn(2, 3, 64, 64)
    kw = {"img_size": 64, "depth": 3}
    alone = vpeft.apply(tiny_vit(**kw), "vqt", num_classes=3).train()
    adapted = vpeft.apply(tiny_vit(**kw), "adaptformer", num_classes=3, bottleneck=4).train()
    both = vpeft.apply(
        vpeft.apply(tiny_vit(**kw), "adaptformer", num_classes=3, bottleneck=4), "vqt"
    ).train()
    assert not alone.forward_override.backbone_trains()
    bytes_alone, bytes_adapted, bytes_both = (
        saved_activation_bytes(m, x) for m in (alone, adapted, both)
    )
    assert bytes_both >= bytes_adapted  # the whole token path is kept for backward again
    assert bytes_both > 4 * bytes_alone
