"""LoRA and the selective baselines (linear, full, partial-k, mlp-k, bitfit, norm)."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import vpeft
from tests.helpers import BACKBONES, tiny_swin, tiny_vit
from tests.methods import checks

ATTENTION_BACKBONES = ["vit", "swin", "pvt_v2"]
ALL = list(BACKBONES)


@pytest.mark.parametrize("backbone", ATTENTION_BACKBONES)
def test_lora_identity_train_save_merge(backbone: str, tmp_path) -> None:
    factory = BACKBONES[backbone]
    opts = {"rank": 2, "alpha": 4.0}
    checks.check_identity_at_init("lora", factory, **opts)
    checks.check_training_moves_only_trainables("lora", factory, **opts)
    checks.check_save_load("lora", factory, tmp_path, **opts)
    checks.check_merge("lora", factory, **opts)


@pytest.mark.parametrize("backbone", ALL)
def test_lora_on_mlp_everywhere(backbone: str, tmp_path) -> None:
    factory = BACKBONES[backbone]
    opts = {"rank": 2, "targets": ("fc1", "fc2")}
    checks.check_training_moves_only_trainables("lora", factory, **opts)
    checks.check_merge("lora", factory, **opts)
    spec = vpeft.backbones.describe(factory(0))
    expected = sum(
        2 * (b.fc1.in_features + b.fc1.out_features + b.fc2.in_features + b.fc2.out_features)
        for b in spec.blocks
    )
    assert checks.trainable_encoder("lora", factory, **opts) == expected


def test_lora_counts_vit_b_closed_form() -> None:
    model = timm.create_model("vit_base_patch16_224", num_classes=0)
    pm = vpeft.apply(model, "lora", num_classes=100, rank=8)
    s = pm.summary()
    assert s.trainable_encoder == 294_912  # 12 blocks × (q, v) × 8 × (768 + 768)
    assert s.head == 768 * 100 + 100
    assert s.total == sum(p.numel() for p in pm.parameters())


@pytest.mark.parametrize("method", ["linear", "full", "bitfit", "norm", "partial-k", "mlp-k"])
@pytest.mark.parametrize("backbone", ALL)
def test_selective_methods(method: str, backbone: str, tmp_path) -> None:
    factory = BACKBONES[backbone]
    checks.check_identity_at_init(method, factory) if method != "mlp-k" else None
    checks.check_training_moves_only_trainables(method, factory)
    checks.check_save_load(method, factory, tmp_path)
    if vpeft.get_method(method).mergeable:
        checks.check_merge(method, factory)


def test_selective_closed_form_counts() -> None:
    factory = tiny_vit
    model = factory(0)
    spec = vpeft.backbones.describe(model)
    biases = sum(
        m.bias.numel()
        for m in model.modules()
        if isinstance(getattr(m, "bias", None), nn.Parameter)
    )
    norms = sum(checks.count(m) for m in model.modules() if isinstance(m, nn.LayerNorm))
    assert checks.trainable_encoder("bitfit", factory) == biases
    assert checks.trainable_encoder("norm", factory) == norms
    assert checks.trainable_encoder("linear", factory) == 0
    assert checks.trainable_encoder("full", factory) == checks.count(model)
    last = checks.count(spec.blocks[-1].module) + checks.count(model.norm)
    assert checks.trainable_encoder("partial-k", factory, k=1) == last
    d = model.num_features
    pm = checks.build("mlp-k", factory, k=3)
    assert pm.summary().head == 2 * (d * d + d) + d * checks.NUM_CLASSES + checks.NUM_CLASSES


def test_bitfit_on_swin_includes_patch_merging_and_embedding_biases() -> None:
    pm = checks.build("bitfit", tiny_swin)
    trained = pm.trainable_parameters()
    assert "model.patch_embed.proj.bias" in trained
    merge_biases = [
        n
        for n, m in pm.model.named_modules()
        if type(m).__name__ == "PatchMerging" and m.reduction.bias is not None
    ]
    norm_bias = [n for n in trained if n.startswith("model.layers.1.downsample.norm")]
    assert norm_bias or merge_biases


def test_errors_are_clear() -> None:
    with pytest.raises(vpeft.UnknownMethodError, match="Did you mean lora"):
        vpeft.apply(tiny_vit(), "lorra", num_classes=2)
    with pytest.raises(vpeft.ConfigError, match="rank must be >= 1"):
        vpeft.apply(tiny_vit(), "lora", num_classes=2, rank=0)
    with pytest.raises(vpeft.ConfigError, match="valid options"):
        vpeft.apply(tiny_vit(), "lora", num_classes=2, rnak=4)
    with pytest.raises(vpeft.UnsupportedBackboneError, match="Supported timm families"):
        vpeft.apply(nn.Linear(2, 2), "lora", num_classes=2)
    with pytest.raises(vpeft.UnsupportedBackboneError, match="needs attention"):
        vpeft.apply(BACKBONES["convnext"](), "lora", num_classes=2)
    with pytest.raises(vpeft.ConfigError, match="exceeds the backbone depth"):
        vpeft.apply(tiny_vit(), "partial-k", num_classes=2, k=5)


def test_cli_style_string_options_are_parsed() -> None:
    pm = vpeft.apply(tiny_vit(), "lora", num_classes=2, rank="4", alpha="1e1", targets="q,k")
    cfg = pm.methods[0].config
    assert (cfg.rank, cfg.alpha, cfg.targets) == (4, 10.0, ("q", "k"))


def test_load_rejects_other_backbones_and_corruption(tmp_path) -> None:
    pm = checks.build("lora", tiny_vit, rank=2)
    path = tmp_path / "a.safetensors"
    pm.save(path)
    with pytest.raises(vpeft.AdapterFileError, match="mismatch in"):
        vpeft.load(path, base=tiny_vit(depth=3))
    with pytest.raises(vpeft.AdapterFileError, match="different frozen weights"):
        vpeft.load(path, base=tiny_vit(seed=5))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(vpeft.AdapterFileError, match="not a readable"):
        vpeft.load(bad, base=tiny_vit())
    with pytest.raises(vpeft.AdapterFileError, match="no such"):
        vpeft.load(tmp_path / "missing.safetensors", base=tiny_vit())
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, str(foreign))
    with pytest.raises(vpeft.AdapterFileError, match="not written by vpeft"):
        vpeft.load(foreign, base=tiny_vit())


def test_unknown_method_in_file(tmp_path) -> None:
    from vpeft.io import read_safetensors, write_safetensors

    pm = checks.build("lora", tiny_vit, rank=2)
    path = tmp_path / "a.safetensors"
    pm.save(path)
    tensors, meta = read_safetensors(path)
    meta["methods"][0]["name"] = "not-a-method"
    write_safetensors(path, tensors, meta)
    with pytest.raises(vpeft.UnknownMethodError, match="not-a-method"):
        vpeft.load(path, base=tiny_vit())


def test_composition_of_two_methods(tmp_path) -> None:
    pm = vpeft.apply(tiny_vit(), "lora", num_classes=3, rank=2)
    pm = vpeft.apply(pm, "bitfit")
    assert [m.name for m in pm.methods] == ["lora", "bitfit"]
    checks.perturb_trainables(pm)
    pm.save(tmp_path / "c.safetensors")
    loaded = vpeft.load(tmp_path / "c.safetensors", base=tiny_vit())
    x = torch.randn(2, 3, 32, 32)
    pm.eval()
    loaded.eval()
    torch.testing.assert_close(loaded(x), pm(x), atol=0, rtol=0)
    plain = pm.merge()
    torch.testing.assert_close(plain.eval()(x), pm(x), atol=1e-5, rtol=1e-5)


def test_failed_apply_leaves_the_model_unchanged() -> None:
    model = BACKBONES["convnext"]()
    model.reset_classifier(7)
    head = model.get_classifier()
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(vpeft.UnsupportedBackboneError):
        vpeft.apply(model, "lora", num_classes=2)
    assert model.get_classifier() is head and model.num_classes == 7
    assert [p.requires_grad for p in model.parameters()] == flags
