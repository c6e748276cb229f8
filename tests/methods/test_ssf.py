"""SSF: scale and shift after every linear, LayerNorm and the patch-embedding conv; mergeable."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from timm.layers import LayerNorm2d
from torch import nn

import vpeft
from tests.helpers import BACKBONES, images, tiny_vit
from tests.methods import checks
from vpeft.backbones import BackboneSpec
from vpeft.core.wrapper import AdaptedLayer
from vpeft.methods.ssf.scale_shift import ScaleShift

ALL = list(BACKBONES)


# -- closed-form counts from the backbone description ------------------------------------------
def _vit_extra(spec: BackboneSpec, convs: str) -> int:
    return 0


def _swin_extra(spec: BackboneSpec, convs: str) -> int:
    dims = spec.stage_dims
    patch_norm = dims[0]
    merging = sum(4 * dims[s - 1] + dims[s] for s in range(1, len(dims)))  # norm(4C) + reduction
    return patch_norm + merging


def _pvt_extra(spec: BackboneSpec, convs: str) -> int:
    dims = spec.stage_dims
    embed_norms = sum(dims)  # patch-embedding / downsampling LayerNorm of every stage
    sr_blocks = [b for b in spec.blocks if b.attention.module.sr is not None]
    total = embed_norms + sum(b.dim for b in sr_blocks)  # spatial-reduction LayerNorm
    if convs == "all":
        total += sum(dims[1:])  # downsampling convs
        total += sum(b.dim for b in sr_blocks)  # spatial-reduction convs
        total += sum(b.fc1.out_features for b in spec.blocks)  # depthwise conv in the MLP
    return total


def _convnext_extra(spec: BackboneSpec, convs: str) -> int:
    dims = spec.stage_dims
    total = dims[0] + sum(dims[:-1])  # stem LayerNorm2d + downsampling LayerNorm2d (input width)
    if convs == "all":
        total += sum(b.dim for b in spec.blocks)  # depthwise 7x7
        total += sum(dims[1:])  # downsampling convs
    return total


EXTRAS: dict[str, Callable[[BackboneSpec, str], int]] = {
    "vit": _vit_extra,
    "swin": _swin_extra,
    "pvt_v2": _pvt_extra,
    "convnext": _convnext_extra,
}


def ssf_count(model: nn.Module, convs: str = "patch_embed") -> int:
    """2 · (channels after every block linear and norm, final norms, patch conv, extras)."""
    spec = vpeft.backbones.describe(model)
    channels = spec.stage_dims[0]  # patch-embedding conv
    for block in spec.blocks:
        channels += sum(slot.out_features for slot in block.matrices().values())
        channels += sum(norm.normalized_shape[0] for norm in block.norms)
    channels += sum(norm.normalized_shape[0] for norm in spec.final_norms)
    channels += EXTRAS[spec.family](spec, convs)
    return 2 * channels


# -- the shared checks on every backbone -----------------------------------------------------
@pytest.mark.parametrize("backbone", ALL)
def test_ssf_checks(backbone: str, tmp_path) -> None:
    factory = BACKBONES[backbone]
    checks.check_identity_at_init("ssf", factory, atol=0)
    checks.check_training_moves_only_trainables("ssf", factory)
    checks.check_save_load("ssf", factory, tmp_path)
    plain = checks.check_merge("ssf", factory, atol=1e-5)
    assert not any(isinstance(m, ScaleShift) for m in plain.modules())


@pytest.mark.parametrize("backbone", ALL)
def test_ssf_all_convs_merge_and_paper_init(backbone: str, tmp_path) -> None:
    factory = BACKBONES[backbone]
    checks.check_merge("ssf", factory, atol=1e-5, convs="all")
    checks.check_merge("ssf", factory, atol=1e-5, init_std=0.02)
    checks.check_save_load("ssf", factory, tmp_path, convs="all", init_std=0.02)


@pytest.mark.parametrize("backbone", ALL)
def test_ssf_closed_form_counts(backbone: str) -> None:
    factory = BACKBONES[backbone]
    model = factory(0)
    assert checks.trainable_encoder("ssf", factory) == ssf_count(model)
    assert checks.trainable_encoder("ssf", factory, convs="all") == ssf_count(model, "all")


def test_ssf_vit_b_count() -> None:
    """2 · 768 · (patch conv + 12 · (qkv 3 + proj 1 + fc1 4 + fc2 1 + 2 norms) + final norm)."""
    model = timm.create_model("vit_base_patch16_224", num_classes=0)
    assert ssf_count(model) == 205_824
    pm = vpeft.apply(model, "ssf", num_classes=100)
    s = pm.summary()
    assert s.trainable_encoder == 2 * 768 * (1 + 12 * 11 + 1) == 205_824
    assert s.trainable == 282_724  # with a 100-class head: the SSF paper's 0.28M on CIFAR-100


# -- the layer itself --------------------------------------------------------------------------
def _layers() -> dict[str, tuple[nn.Module, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(0)
    return {
        "linear": (nn.Linear(5, 7), torch.randn(3, 4, 5, generator=g), 0),
        "linear-no-bias": (nn.Linear(5, 7, bias=False), torch.randn(3, 5, generator=g), 0),
        "conv": (nn.Conv2d(3, 7, 3, stride=2), torch.randn(2, 3, 9, 9, generator=g), 2),
        "layernorm": (nn.LayerNorm(7), torch.randn(2, 4, 4, 7, generator=g), 0),
        "layernorm2d": (LayerNorm2d(7), torch.randn(2, 7, 4, 4, generator=g), 2),
    }


@pytest.mark.parametrize("kind", list(_layers()))
def test_scale_shift_merges_into_each_layer_type(kind: str) -> None:
    torch.manual_seed(1)
    layer, x, trailing = _layers()[kind]
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ss = ScaleShift(7, trailing, init_std=0.5)
    wrapper = AdaptedLayer(layer)
    wrapper.add_sequential("ssf", ss)
    with torch.no_grad():
        base = layer(x)
        shape = (-1,) + (1,) * trailing
        want = base * ss.scale.view(shape) + ss.shift.view(shape)
        # after a norm, SSF runs folded into it (weight γw, bias γb + β): rounding differs
        exact = kind not in ("layernorm", "layernorm2d")
        tol = 0 if exact else 1e-6
        torch.testing.assert_close(wrapper(x), want, atol=tol, rtol=tol)
        merged = wrapper.merged()
        assert type(merged) is type(layer)
        torch.testing.assert_close(merged(x), want, atol=1e-6, rtol=1e-5)
        assert (want - base).abs().max() > 0.1


def test_channel_axis_follows_the_layout() -> None:
    """On NCHW outputs γ indexes axis 1: channel c of every pixel is scaled by γ_c."""
    ss = ScaleShift(3, trailing=2)
    with torch.no_grad():
        ss.scale.copy_(torch.tensor([1.0, 2.0, 3.0]))
        ss.shift.copy_(torch.tensor([0.0, 10.0, 20.0]))
    y = ss(torch.ones(1, 3, 2, 2))
    assert y[0, :, 1, 1].tolist() == [1.0, 12.0, 23.0]
    assert y[0, 2].unique().tolist() == [23.0]


def test_paper_init_statistics() -> None:
    torch.manual_seed(0)
    ss = ScaleShift(40_000, init_std=0.02)
    assert abs(ss.scale.mean().item() - 1.0) < 1e-3 and abs(ss.scale.std().item() - 0.02) < 1e-3
    assert abs(ss.shift.mean().item()) < 1e-3 and abs(ss.shift.std().item() - 0.02) < 1e-3
    exact = ScaleShift(4)
    assert exact.scale.tolist() == [1.0] * 4 and exact.shift.tolist() == [0.0] * 4


def test_paper_init_is_not_the_identity() -> None:
    pm = checks.build("ssf", tiny_vit, init_std=0.02)
    reference = tiny_vit(0)
    reference.reset_classifier(checks.NUM_CLASSES)
    reference.get_classifier().load_state_dict(pm.head.state_dict())
    x = images()
    with torch.no_grad():
        assert (pm.eval()(x) - reference.eval()(x)).abs().max() > 1e-4


def test_every_layer_is_followed() -> None:
    """Each backbone Linear / LayerNorm and the patch conv sits in a wrapper holding an SSF."""
    pm = checks.build("ssf", BACKBONES["swin"])
    wrapped = [m for m in pm.model.modules() if isinstance(m, AdaptedLayer)]
    assert all(isinstance(w.sequential["ssf"], ScaleShift) for w in wrapped)
    bases = {id(w.base) for w in wrapped}
    head = {id(m) for m in pm.head.modules()}
    missed = [
        type(m).__name__
        for m in pm.model.modules()
        if isinstance(m, nn.Linear | nn.LayerNorm) and id(m) not in bases | head
    ]
    assert missed == []
    assert id(pm.model.patch_embed.proj.base) in bases


# -- composition -------------------------------------------------------------------------------
def test_ssf_after_adaptformer_leaves_the_adapter_alone() -> None:
    pm = vpeft.apply(tiny_vit(), "adaptformer", num_classes=3, bottleneck=4)
    pm = vpeft.apply(pm, "ssf")
    d, depth = 32, 2
    assert pm.summary().trainable_encoder == depth * (2 * d * 4 + 4 + d) + ssf_count(tiny_vit())
    adapter = pm.model.blocks[0].mlp.parallel["adaptformer"]
    assert type(adapter.down) is nn.Linear and type(adapter.up) is nn.Linear


@pytest.mark.parametrize("order", [("lora", "ssf"), ("ssf", "lora")])
def test_ssf_and_lora_compose_and_merge(order: tuple[str, str], tmp_path) -> None:
    pm = vpeft.apply(tiny_vit(), order[0], num_classes=3)
    pm = vpeft.apply(pm, order[1])
    checks.perturb_trainables(pm)
    pm.eval()
    x = images()
    with torch.no_grad():
        expected = pm(x)
        plain = pm.merge()
        torch.testing.assert_close(plain.eval()(x), expected, atol=1e-5, rtol=1e-5)
    pm.save(tmp_path / "c.safetensors")
    loaded = vpeft.load(tmp_path / "c.safetensors", base=tiny_vit())
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), expected, atol=0, rtol=0)


def test_ssf_errors() -> None:
    with pytest.raises(vpeft.ConfigError, match="init_std must be >= 0"):
        vpeft.apply(tiny_vit(), "ssf", num_classes=2, init_std=-0.1)
    with pytest.raises(vpeft.ConfigError, match="must be one of"):
        vpeft.apply(tiny_vit(), "ssf", num_classes=2, convs="some")
    with pytest.raises(vpeft.UnsupportedBackboneError, match="Supported timm families"):
        vpeft.apply(nn.Sequential(nn.Linear(2, 2)), "ssf", num_classes=2)
    from vpeft.methods.ssf.scale_shift import channel_layout

    with pytest.raises(vpeft.UnsupportedBackboneError, match="elementwise_affine=False"):
        channel_layout(nn.LayerNorm(4, elementwise_affine=False))
    with pytest.raises(vpeft.UnsupportedBackboneError, match="cannot follow a GELU"):
        channel_layout(nn.GELU())
