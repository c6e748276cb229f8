"""Prefix tuning: shared checks, closed-form counts, and the maths of extra keys/values."""

from __future__ import annotations

import pytest
import timm
import torch

import vpeft
from tests.helpers import BACKBONES, tiny_pvt, tiny_swin, tiny_vit
from tests.methods import checks
from tests.methods.naive_attention import attention_with_extra, heads, relative_position_bias
from vpeft.backbones.attention import attention_ops
from vpeft.methods.prompts.layers import ExtendedAttention, PrefixKeyValues

SUPPORTED = ["vit", "swin", "pvt_v2"]


@pytest.mark.parametrize("backbone", SUPPORTED)
def test_prefix_trains_only_its_tensors_and_round_trips(backbone: str, tmp_path) -> None:
    factory = BACKBONES[backbone]
    pm = checks.check_training_moves_only_trainables("prefix", factory, num_tokens=3)
    assert len(pm.trainable_parameters()) == 2 * pm.spec.depth + 2  # keys, values per layer + head
    checks.check_save_load("prefix", factory, tmp_path, num_tokens=3)


@pytest.mark.parametrize("backbone", SUPPORTED)
def test_prefix_closed_form_count_on_tiny_backbones(backbone: str) -> None:
    factory = BACKBONES[backbone]
    spec = vpeft.backbones.describe(factory(0))
    widths = [b.attention.num_heads * b.attention.head_dim for b in spec.blocks]
    assert checks.trainable_encoder("prefix", factory, num_tokens=4) == 2 * 4 * sum(widths)


def test_prefix_counts_full_size() -> None:
    model = timm.create_model("vit_base_patch16_224", num_classes=0)
    vit = vpeft.apply(model, "prefix", num_classes=10, num_tokens=10)
    assert vit.summary().trainable_encoder == 184_320  # 12 layers × 2 × 10 × 768
    swin = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0)
    swin_pm = vpeft.apply(swin, "prefix", num_classes=10, num_tokens=10)
    # 2 × 10 × (2·96 + 2·192 + 6·384 + 2·768)
    assert swin_pm.summary().trainable_encoder == 88_320


def _perturbed_prefix(factory, **opts) -> vpeft.PeftModel:
    pm = checks.build("prefix", factory, **opts)
    checks.perturb_trainables(pm, std=0.5)
    return pm.eval()


def _prefix_kv(wrapper: ExtendedAttention) -> tuple[torch.Tensor, torch.Tensor]:
    source = wrapper.sources["prefix"]
    assert isinstance(source, PrefixKeyValues)
    return heads(source.keys[None], source.num_heads)[0], heads(
        source.values[None], source.num_heads
    )[0]


def test_vit_prefix_equals_explicit_concat_kv_with_mask() -> None:
    pm = _perturbed_prefix(tiny_vit, num_tokens=3)
    block = pm.model.blocks[1]
    wrapper = block.attn
    attn = wrapper.base
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 17, 32, generator=g)
    mask = torch.rand(17, 17, generator=g) > 0.4
    mask.fill_diagonal_(True)
    q, k, v = (heads(t, 2) for t in (x @ attn.qkv.weight.T + attn.qkv.bias).chunk(3, -1))
    k_e, v_e = _prefix_kv(wrapper)
    bias = torch.zeros(17, 17).masked_fill(~mask, float("-inf"))
    expected = attn.proj(attention_with_extra(q, k, v, k_e, v_e, bias))
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x, attn_mask=mask), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(wrapper(x), attn.proj(attention_with_extra(q, k, v, k_e, v_e)))


def test_swin_prefix_equals_explicit_window_attention_with_shift() -> None:
    pm = _perturbed_prefix(tiny_swin, num_tokens=3)
    block = pm.model.layers[0].blocks[1]
    assert block.shift_size[0] > 0 and block.attn_mask.min() < 0  # the shifted-window path
    wrapper = block.attn
    attn = wrapper.base
    nw, n, _ = block.attn_mask.shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * nw, n, 16, generator=g)  # batch 2, windows batch-major
    q, k, v = (heads(t, 2) for t in (x @ attn.qkv.weight.T + attn.qkv.bias).chunk(3, -1))
    rel = relative_position_bias(attn.relative_position_bias_table.detach(), 4)  # H, N, N
    bias = rel.unsqueeze(0) + block.attn_mask.repeat(2, 1, 1).unsqueeze(1)  # B·nW, H, N, N
    k_e, v_e = _prefix_kv(wrapper)
    expected = attn.proj(attention_with_extra(q, k, v, k_e, v_e, bias))
    with torch.no_grad():
        got = wrapper(x, mask=block.attn_mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_pvt_prefix_is_appended_after_the_spatial_reduction() -> None:
    pm = _perturbed_prefix(tiny_pvt, num_tokens=3)
    block = pm.model.stages[0].blocks[0]
    wrapper = block.attn
    attn = wrapper.base
    assert attn.sr is not None  # sr_ratio 2: 8×8 queries, 4×4 reduced keys
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 16, generator=g)
    q = heads(x @ attn.q.weight.T + attn.q.bias, 1)
    grid = x.transpose(1, 2).reshape(2, 16, 8, 8)
    reduced = attn.norm(attn.sr(grid).flatten(2).transpose(1, 2))
    assert reduced.shape[1] == 16
    k, v = (heads(t, 1) for t in (reduced @ attn.kv.weight.T + attn.kv.bias).chunk(2, -1))
    k_e, v_e = _prefix_kv(wrapper)
    expected = attn.proj(attention_with_extra(q, k, v, k_e, v_e))
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x, [8, 8]), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", SUPPORTED)
def test_forward_extra_kv_without_extras_is_the_modules_own_forward(backbone: str) -> None:
    """Zero extra keys: our bias/mask handling reproduces timm's attention exactly."""
    model = BACKBONES[backbone](0).eval()
    spec = vpeft.backbones.describe(model)
    block = spec.blocks[0 if backbone == "pvt_v2" else 1]  # PVT: sr_ratio 2; Swin: shifted
    attn = block.attention
    ops = attention_ops(attn)
    h, d = attn.num_heads, attn.head_dim
    empty = torch.zeros(1, h, 0, d)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        if backbone == "vit":
            x = torch.randn(2, 17, 32, generator=g)
            mask = torch.rand(17, 17, generator=g) > 0.3
            mask.fill_diagonal_(True)
            pairs = [((x,), {"attn_mask": mask}), ((x,), {})]
        elif backbone == "swin":
            mask = block.module.attn_mask
            assert mask is not None
            x = torch.randn(2 * mask.shape[0], 16, 16, generator=g)
            pairs = [((x,), {"mask": mask}), ((x,), {})]
        else:
            x = torch.randn(2, 64, 16, generator=g)
            pairs = [((x, [8, 8]), {})]
        for args, kwargs in pairs:
            expected = attn.module(*args, **kwargs)
            got = ops.forward_extra_kv(args[0], empty, empty, *args[1:], **kwargs)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_prefixes_change_the_output_through_keys_and_values() -> None:
    pm = checks.build("prefix", tiny_swin, num_tokens=2).eval()
    x = checks.images()
    with torch.no_grad():
        base = pm(x)
        for name, p in pm.trainable_parameters().items():
            if name.startswith("heads."):
                continue
            saved = p.clone()
            p.add_(torch.randn_like(p))
            assert not torch.allclose(pm(x), base, atol=1e-6), f"{name} does not reach the output"
            p.copy_(saved)


def test_prefix_composes_with_vpt_in_one_wrapper(tmp_path) -> None:
    pm = vpeft.apply(tiny_swin(), "prefix", num_classes=3, num_tokens=2)
    pm = vpeft.apply(pm, "vpt-deep", num_tokens=3)
    wrapper = pm.model.layers[1].blocks[0].attn
    assert isinstance(wrapper, ExtendedAttention)
    assert list(wrapper.sources) == ["prefix", "vpt"]
    spec = pm.spec
    widths = sum(b.attention.k.out_features for b in spec.blocks)
    assert pm.summary().trainable_encoder == 2 * 2 * widths + 3 * widths
    checks.perturb_trainables(pm)
    pm.save(tmp_path / "both.safetensors")
    loaded = vpeft.load(tmp_path / "both.safetensors", base=tiny_swin()).eval()
    x = checks.images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pm.eval()(x), atol=0, rtol=0)


def test_prefix_errors_are_clear() -> None:
    with pytest.raises(vpeft.ConfigError, match="num_tokens must be >= 1"):
        vpeft.apply(tiny_vit(), "prefix", num_classes=2, num_tokens=0)
    with pytest.raises(vpeft.ConfigError, match="init_std must be > 0"):
        vpeft.apply(tiny_vit(), "prefix", num_classes=2, init_std=0)
    with pytest.raises(vpeft.UnsupportedBackboneError, match="convnext"):
        vpeft.apply(BACKBONES["convnext"](), "prefix", num_classes=2)
    pm = checks.build("prefix", tiny_vit)
    with pytest.raises(vpeft.ConfigError, match="already installed"):
        vpeft.apply(pm, "prefix")
    assert not vpeft.get_method("prefix").mergeable
    with pytest.raises(vpeft.VpeftError, match="cannot be folded"):
        pm.merge()
