"""VQT mechanics on tiny ViTs: equivalence with the naive implementation, untouched backbone,
closed-form counts, training/saving checks, unsupported backbones, variants."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import vpeft
from tests.helpers import BACKBONES, images, tiny_vit
from tests.methods import checks
from tests.vqt.naive import naive_vqt_features
from vpeft.methods.vqt import PRIOR_BIAS, QueryTuning, query_init_bound
from vpeft.train.optim import decay_decisions

#: the three ViT flavours the paper uses: supervised (CLS + final norm), MAE-style (average
#: pooling + fc_norm), CLIP-style (norm_pre before the blocks).
VIT_FLAVOURS = {
    "supervised": {},
    "mae": {"global_pool": "avg"},
    "clip": {"pre_norm": True},
}


def flavour(name: str, depth: int = 2):
    def factory(seed: int = 0, **kw: object):
        return tiny_vit(seed, depth=depth, **{**VIT_FLAVOURS[name], **kw})

    return factory


def _perturbed(method_opts: dict, factory=tiny_vit, seed: int = 0) -> vpeft.PeftModel:
    pm = checks.build("vqt", factory, seed=seed, **method_opts)
    checks.perturb_trainables(pm, std=0.3)
    return pm.eval()


def test_flavours_are_what_they_claim() -> None:
    mae, clip = flavour("mae")(), flavour("clip")()
    assert type(mae.fc_norm).__name__ == "LayerNorm" and type(mae.norm).__name__ == "Identity"
    assert type(clip.norm_pre).__name__ == "LayerNorm"


@pytest.mark.parametrize("name", list(VIT_FLAVOURS))
@pytest.mark.parametrize("num_queries", [1, 3])
def test_features_and_gradients_match_naive_masked_tokens(name: str, num_queries: int) -> None:
    pm = _perturbed({"num_queries": num_queries}, flavour(name, depth=3))
    vqt = pm.forward_override
    x = images(3)
    fast = vqt.features(x)
    slow = naive_vqt_features(pm, x)
    assert fast.shape == (3, 32 + 3 * num_queries * 32)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    weights = torch.randn(fast.shape[1], generator=torch.Generator().manual_seed(3))
    (g_fast,) = torch.autograd.grad((fast * weights).sum(), vqt.queries)
    (g_slow,) = torch.autograd.grad((slow * weights).sum(), vqt.queries)
    assert g_fast.abs().max() > 1e-3  # non-vacuous
    torch.testing.assert_close(g_fast, g_slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(VIT_FLAVOURS))
def test_backbone_outputs_bit_identical(name: str) -> None:
    factory = flavour(name)
    plain = factory(0).eval()
    pm = _perturbed({"num_queries": 2}, factory)
    x = images(2)
    with torch.no_grad():
        expected_tokens = plain.forward_features(x)
        expected_final = plain.forward_head(expected_tokens, pre_logits=True)
        assert torch.equal(pm.model.forward_features(x), expected_tokens)
        final, keys_values = pm.forward_override.backbone_pass(x)
    assert torch.equal(final, expected_final)
    # the final feature group is the backbone's own feature, normalised
    feats = pm.forward_override.features(x)
    assert torch.equal(feats[:, :32], F.normalize(expected_final, dim=-1))
    # the keys/values handed to the queries are the block's own
    block = plain.blocks[0]
    with torch.no_grad():
        qkv = block.attn.qkv(block.norm1(plain.norm_pre(plain._pos_embed(plain.patch_embed(x)))))
    k_ref = qkv.reshape(2, -1, 3, 2, 16).permute(2, 0, 3, 1, 4)[1]
    assert torch.equal(keys_values[0][0], k_ref)


def test_memory_efficient_path_saves_only_keys_values_of_real_tokens() -> None:
    """Without trainable backbone parameters, the only token-sized tensors kept for backward
    are K_m and V_m (one compact copy each per block) — nothing of the backbone's token path."""
    pm = vpeft.apply(tiny_vit(img_size=64), "vqt", num_classes=3).train()
    x = torch.randn(2, 3, 64, 64)
    n_tokens = 65
    shapes: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pm(x).sum().backward()
    token_sized = [s for s in shapes if n_tokens in s]
    assert sorted(token_sized) == [(2, 2, n_tokens, 16)] * 4  # K and V of 2 blocks (B, H, N, d)
    assert all(p.grad is None for p in pm.model.parameters())
    assert pm.forward_override.queries.grad is not None


def test_closed_form_counts_tiny() -> None:
    for t in (1, 4):
        pm = checks.build("vqt", tiny_vit, num_queries=t)
        s = pm.summary()
        assert s.trainable_encoder == 2 * t * 32
        assert s.head == (32 + 2 * t * 32) * 3 + 3
        assert s.total == sum(p.numel() for p in pm.parameters())
    s = checks.build("vqt", tiny_vit, num_queries=4, reduce="mean").summary()
    assert s.trainable_encoder == 2 * 4 * 32 and s.head == (32 + 2 * 32) * 3 + 3


def test_vit_b_counts_and_reference_init() -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", num_classes=0)
    backbone = sum(p.numel() for p in model.parameters())
    pm = vpeft.apply(model, "vqt", num_classes=50, num_queries=8)
    s = pm.summary()
    assert s.trainable_encoder == 12 * 8 * 768  # 73,728 query values
    assert s.head == (768 + 12 * 8 * 768) * 50 + 50
    assert s.total == backbone + s.trainable  # the unused timm classifier is gone
    vqt: QueryTuning = pm.forward_override
    bound = math.sqrt(6 / (3 * 16 * 16 + 768))
    assert query_init_bound(16, 768) == pytest.approx(bound)
    q = vqt.queries.detach()
    assert q.abs().max() <= bound and q.abs().max() > 0.95 * bound
    assert q.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # uniform(−v, v)
    w = vqt.head.weight.detach()
    assert w.std().item() == pytest.approx(math.sqrt(2 / 50), rel=0.02)  # kaiming fan_out = C
    assert torch.all(vqt.head.bias == PRIOR_BIAS)
    assert pytest.approx(-4.59512, abs=1e-5) == PRIOR_BIAS


@pytest.mark.parametrize("name", ["supervised", "mae"])
def test_trains_only_its_tensors_and_round_trips(name: str, tmp_path) -> None:
    factory = flavour(name)
    checks.check_training_moves_only_trainables("vqt", factory, num_queries=2)
    checks.check_save_load("vqt", factory, tmp_path, num_queries=2)


def test_parameter_names_are_unique_and_backbone_not_duplicated() -> None:
    pm = checks.build("vqt", tiny_vit)
    names = list(pm.state_dict())
    assert len(names) == len(set(names))
    assert not [n for n in names if n.startswith("forward_override.") and "blocks" in n]
    assert sorted(pm.trainable_parameters()) == [
        "forward_override.head.bias",
        "forward_override.head.weight",
        "forward_override.queries",
    ]
    assert pm.head is pm.forward_override.head
    assert pm.model.get_classifier().__class__.__name__ == "Identity"


def test_dropout_only_in_training_and_eval_is_deterministic() -> None:
    pm = checks.build("vqt", tiny_vit, dropout=0.5)
    x = images(2)
    pm.eval()
    with torch.no_grad():
        assert torch.equal(pm(x), pm(x))
        pm.train()
        torch.manual_seed(0)
        a = pm(x)
        torch.manual_seed(1)
        b = pm(x)
    assert not torch.equal(a, b)


def test_mean_reduction_matches_naive_means() -> None:
    pm = _perturbed({"num_queries": 3, "reduce": "mean"})
    concat = _perturbed({"num_queries": 3})  # same seeds -> same queries
    x = images(2)
    with torch.no_grad():
        full = naive_vqt_features(concat, x)
        got = pm.forward_override.features(x)
    layers = [full[:, 32 + i * 96 : 32 + (i + 1) * 96].reshape(2, 3, 32) for i in range(2)]
    # the naive features are normalised per layer; undo by comparing directions of the means
    for i, z in enumerate(layers):
        torch.testing.assert_close(
            got[:, 32 * (i + 1) : 32 * (i + 2)], F.normalize(z.mean(1), dim=-1), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("backbone", ["swin", "convnext", "pvt_v2"])
def test_other_backbones_are_rejected_clearly(backbone: str) -> None:
    for method in ("vqt", "head2toe"):
        with pytest.raises(vpeft.UnsupportedBackboneError, match="supported: \\['vit'\\]"):
            vpeft.apply(BACKBONES[backbone](), method, num_classes=3)


def test_options_are_validated() -> None:
    with pytest.raises(vpeft.ConfigError, match="num_queries must be >= 1"):
        vpeft.apply(tiny_vit(), "vqt", num_classes=3, num_queries=0)
    with pytest.raises(vpeft.ConfigError, match="must be one of"):
        vpeft.apply(tiny_vit(), "vqt", num_classes=3, reduce="max")
    pm = vpeft.apply(tiny_vit(), "vqt", num_classes=3)
    with pytest.raises(vpeft.ConfigError, match="already does"):
        vpeft.apply(pm, "vqt")


def test_weighted_reduction_starts_as_mean_then_mixes_with_learned_weights(tmp_path) -> None:
    """`reduce='weighted'`: z_m = Σ_t w_{m,t} Z'_{m,t}; w init 1/T reproduces `mean` exactly."""
    t, depth, width = 3, 2, 32
    weighted = checks.build("vqt", tiny_vit, num_queries=t, reduce="weighted").eval()
    mean = checks.build("vqt", tiny_vit, num_queries=t, reduce="mean").eval()
    vqt = weighted.forward_override
    assert vqt.mix.shape == (depth, t) and torch.all(vqt.mix == 1.0 / t)
    s = weighted.summary()
    assert s.trainable_encoder == depth * t * width + depth * t  # queries + mixing weights
    assert s.head == (width + depth * width) * 3 + 3  # D per layer, as `mean`
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(weighted(x), mean(x), atol=1e-6, rtol=1e-6)
        vqt.mix.copy_(torch.tensor([[0.7, -0.2, 1.5], [0.0, 2.0, 0.3]]))
        final, keys_values = vqt.backbone_pass(x)
        summaries = vqt.summaries(keys_values, 3)  # eval: no query dropout
        by_hand = [final] + [
            sum(vqt.mix[m, i] * z[:, i] for i in range(t)) for m, z in enumerate(summaries)
        ]
        expected = torch.cat([F.normalize(g, dim=-1) for g in by_hand], dim=-1)
        torch.testing.assert_close(vqt.features(x), expected, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(weighted(x), mean(x), atol=1e-3)
    (grad,) = torch.autograd.grad(weighted(x).logsumexp(-1).sum(), vqt.mix)
    assert grad.abs().min() > 0  # every weight reaches the loss
    decisions = {d.name: d for d in decay_decisions(weighted)}
    assert not decisions["forward_override.mix"].decay
    weighted.save(tmp_path / "w.safetensors")
    loaded = vpeft.load(tmp_path / "w.safetensors", base=tiny_vit()).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), weighted(x), atol=0, rtol=0)
