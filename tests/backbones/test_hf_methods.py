"""Every single-task method meaningful on transformers ViT / CLIP vision passes the same
per-method checks as on timm (tests/methods/checks.py), and the cross-check against timm."""

from __future__ import annotations

import pytest
import timm
import torch

import vpeft
from tests.backbones.hf_models import hf_clip_vision, hf_vit, transformers
from tests.helpers import IMG, images
from tests.methods import checks
from vpeft.backbones.hf_vit import vit_from_timm

FACTORIES = {"hf-vit": hf_vit, "hf-clip-vision": hf_clip_vision}
IDENTITY = [
    ("lora", {"rank": 2, "alpha": 4.0, "targets": ("q", "k", "v", "proj", "fc1", "fc2")}),
    ("adapter", {}),
    ("adapter-pfeiffer", {}),
    ("adaptformer", {"bottleneck": 4, "dropout": 0.0}),
    ("scaled-pa", {"bottleneck": 4}),
    ("ssf", {}),
    ("linear", {}),
    ("bitfit", {}),
    ("norm", {}),
    ("full", {}),
    ("partial-k", {"k": 1}),
]
NOT_IDENTITY = [
    ("vpt-shallow", {"num_tokens": 3, "dropout": 0.0}),
    ("vpt-deep", {"num_tokens": 3, "dropout": 0.0}),
    ("vpt-deep", {"num_tokens": 3, "dropout": 0.0, "last_blocks": 1}),
    ("prefix", {"num_tokens": 3}),
    ("mlp-k", {"k": 2}),
]


@pytest.mark.parametrize("backbone", list(FACTORIES))
@pytest.mark.parametrize(("method", "opts"), IDENTITY, ids=[m for m, _ in IDENTITY])
def test_identity_train_save_merge(backbone: str, method: str, opts: dict, tmp_path) -> None:
    factory = FACTORIES[backbone]
    checks.check_identity_at_init(method, factory, **opts)
    checks.check_training_moves_only_trainables(method, factory, **opts)
    checks.check_save_load(method, factory, tmp_path, **opts)
    if vpeft.get_method(method).mergeable:
        plain = checks.check_merge(method, factory, **opts)
        assert type(plain.backbone) is type(factory(0).backbone)  # a plain transformers model


@pytest.mark.parametrize("backbone", list(FACTORIES))
@pytest.mark.parametrize(("method", "opts"), NOT_IDENTITY, ids=lambda v: str(v))
def test_token_methods_train_and_round_trip(
    backbone: str, method: str, opts: dict, tmp_path
) -> None:
    factory = FACTORIES[backbone]
    checks.check_training_moves_only_trainables(method, factory, **opts)
    checks.check_save_load(method, factory, tmp_path, **opts)


@pytest.mark.parametrize("backbone", list(FACTORIES))
def test_closed_form_counts(backbone: str) -> None:
    factory = FACTORIES[backbone]
    spec = vpeft.backbones.describe(factory(0))
    d, depth, p = 32, 2, 3
    assert checks.trainable_encoder("lora", factory, rank=2) == depth * 2 * 2 * (d + d)
    assert checks.trainable_encoder("vpt-deep", factory, num_tokens=p) == depth * p * d
    assert checks.trainable_encoder("vpt-shallow", factory, num_tokens=p) == p * d
    assert checks.trainable_encoder("prefix", factory, num_tokens=p) == depth * 2 * p * d
    m = 8
    assert checks.trainable_encoder("adapter", factory) == depth * 2 * (2 * d * m + m + d)
    backbone_module = spec.backbone
    unused = {id(q) for u in spec.unused for q in u.parameters()}
    biases = sum(
        mod.bias.numel()
        for mod in backbone_module.modules()
        if isinstance(getattr(mod, "bias", None), torch.nn.Parameter) and id(mod.bias) not in unused
    )
    assert checks.trainable_encoder("bitfit", factory) == biases


def test_hf_vit_pooler_is_left_out() -> None:
    """HF ViT's pooler is not on the CLS-feature path: no method trains it."""
    pm = checks.build("full", hf_vit)
    pooler = {id(q) for q in pm.model.backbone.pooler.parameters()}
    assert pooler and not any(id(q) in pooler for q in pm.trainable_parameters().values())


def test_vpt_prompts_sit_after_cls_and_leave_before_the_final_norm() -> None:
    """HF ViT: the first block sees [CLS, P, patches]; last_hidden_state has no prompts."""
    pm = checks.build("vpt-shallow", hf_vit, num_tokens=3, dropout=0.0)
    seen = {}
    layers = pm.model.backbone.layers
    layers[0].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        out = pm.model.backbone(pixel_values=images())
    prompts = pm.model.backbone.embeddings.prompts.tokens
    x = seen["x"]
    assert x.shape[1] == 1 + 3 + (IMG // 8) ** 2
    torch.testing.assert_close(x[:, 1:4], prompts.expand(2, -1, -1), atol=0, rtol=0)
    assert out.last_hidden_state.shape[1] == 1 + (IMG // 8) ** 2


# -- cross-check with timm ----------------------------------------------------------------
def _timm_and_hf_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A tiny timm ViT and an HF ViTModel holding the same (converted) weights."""
    torch.manual_seed(0)
    tm = timm.create_model(
        "vit_tiny_patch16_224",
        img_size=IMG,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=0,
    ).eval()
    cfg = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        image_size=IMG,
        patch_size=8,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    hf = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
    missing = hf.load_state_dict(vit_from_timm(tm.state_dict(), num_heads=2), strict=True)
    assert not missing.missing_keys
    return tm, hf


def test_timm_and_hf_vit_give_the_same_features() -> None:
    tm, hf = _timm_and_hf_pair()
    x = images()
    with torch.no_grad():
        a = tm(x)
        b = vpeft.backbones.describe(hf).features(x)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("method", "opts"),
    [
        ("lora", {"rank": 2, "alpha": 4.0}),
        ("adapter", {}),
        ("adaptformer", {"bottleneck": 4, "dropout": 0.0}),
        ("vpt-deep", {"num_tokens": 3, "dropout": 0.0}),
        ("prefix", {"num_tokens": 3}),
    ],
)
def test_timm_and_hf_vit_agree_with_the_same_method_weights(method: str, opts: dict) -> None:
    """Same converted weights + the same trained tensors (copied in installation order:
    LoRA A/B on q then v, adapters, prompts, prefixes, then the head) -> the same logits."""
    tm, hf = _timm_and_hf_pair()
    torch.manual_seed(5)
    pt = vpeft.apply(tm, method, num_classes=3, **opts)
    ph = vpeft.apply(hf, method, num_classes=3, **opts)
    x = images()
    ph.eval()
    with torch.no_grad():
        before = ph(x)
    checks.perturb_trainables(pt, std=0.2)
    src, dst = list(pt.trainable_parameters().values()), list(ph.trainable_parameters().values())
    assert [s.shape for s in src] == [d.shape for d in dst]
    with torch.no_grad():
        for s, d in zip(src, dst, strict=True):
            d.copy_(s)
    pt.eval()
    with torch.no_grad():
        expected = pt(x)
        torch.testing.assert_close(ph(x), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(expected, before, atol=1e-3), "the copied weights must matter"
