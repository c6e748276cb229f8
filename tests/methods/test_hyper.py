"""Hyperformer, Polyhistor, Polyhistor-Lite: closed forms, training, tasks, files (tiny Swin).

Multi-task mechanics use two classification tasks on the pooled feature: the hypernetwork
methods do not depend on the head, and the tiny Swin keeps every check CPU-fast.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

import vpeft
from tests.helpers import images, tiny_convnext, tiny_swin
from tests.methods import checks
from vpeft.core.wrapper import AdaptedLayer
from vpeft.errors import UnsupportedBackboneError
from vpeft.methods.hyper import (
    AdapterWeights,
    GeneratedAdapter,
    LayerHypernet,
    LiteHypernet,
    adapter_forward,
    kronecker_sum,
    kronecker_sum_vector,
)
from vpeft.tasks import ClassificationTask

METHODS = ["hyperformer", "polyhistor", "polyhistor-lite"]


def two_tasks() -> list[ClassificationTask]:
    return [ClassificationTask("a", num_classes=3), ClassificationTask("b", num_classes=4)]


def build(method: str, seed: int = 0, **options) -> vpeft.PeftModel:
    torch.manual_seed(seed + 100)
    return vpeft.apply(tiny_swin(seed), method, tasks=two_tasks(), **options)


def hypernet(pm: vpeft.PeftModel) -> nn.Module:
    return pm.model.vpeft_hypernet


def adapters(pm: vpeft.PeftModel) -> list[GeneratedAdapter]:
    return [m for m in pm.model.modules() if isinstance(m, GeneratedAdapter)]


# -- closed forms ---------------------------------------------------------------------------
def test_kronecker_sum_is_the_explicit_block_matrix() -> None:
    """Σ_i W̃_i ⊗ α_i written block by block: block (a, b) of size s×s is Σ_i W̃_i[a, b] α_i."""
    g = torch.Generator().manual_seed(0)
    s, a, b = 3, 2, 4
    templates, kernels = torch.randn(s, a, b, generator=g), torch.randn(s, s, s, generator=g)
    by_hand = checks.kron_sum_by_blocks(templates, kernels)
    torch.testing.assert_close(kronecker_sum(templates, kernels), by_hand)
    reference = sum(torch.kron(templates[i], kernels[i]) for i in range(s))
    torch.testing.assert_close(kronecker_sum(templates, kernels), reference)
    vec_t, vec_k = torch.randn(s, a, generator=g), torch.randn(s, s, generator=g)
    vec_hand = torch.zeros(a * s)
    for i in range(s):
        for r in range(a):
            vec_hand[r * s : (r + 1) * s] += vec_t[i, r] * vec_k[i]
    torch.testing.assert_close(kronecker_sum_vector(vec_t, vec_k), vec_hand)


def test_polyhistor_weights_are_products_of_the_two_generated_factors() -> None:
    pm = build("polyhistor", reduction=4, rank=2)
    checks.perturb_trainables(pm)
    net = hypernet(pm)
    assert isinstance(net, LayerHypernet)
    for key in ("b0_mlp", "b3_mlp"):
        gen = net.generators[key]
        z = net.projected(key, "b")
        w = net.weights(key, "b")
        for name in ("down", "up"):
            p, q = gen.factors(name, z)
            assert p.shape[-1] == q.shape[-1] == 2
            torch.testing.assert_close(getattr(w, name), p @ q.T)
            assert torch.linalg.matrix_rank(getattr(w, name)) == 2
        d = w.up.shape[1]
        assert w.down.shape == (d, d // 4) and w.norm_weight.shape == (d,)
        torch.testing.assert_close(w.up_bias, gen.linears["up_bias"](z))


def test_hyperformer_weights_are_one_linear_map_of_the_projected_task_embedding() -> None:
    pm = build("hyperformer", reduction=4)
    checks.perturb_trainables(pm)
    net = hypernet(pm)
    z = net.projectors["b1"](net.task_embeddings[0])  # task "a"
    lin = net.generators["b1_attention"].linears["down"]
    torch.testing.assert_close(net.weights("b1_attention", "a").down, lin(z).view(16, 4))


def test_polyhistor_lite_weights_are_kronecker_sums_of_generated_templates() -> None:
    pm = build("polyhistor-lite")
    checks.perturb_trainables(pm)
    net = hypernet(pm)
    assert isinstance(net, LiteHypernet)
    assert net.scales == {"b0_mlp": 1, "b1_mlp": 1, "b2_mlp": 2, "b3_mlp": 2}
    assert net.layer_embeddings.shape[0] == 1 + 1 + 2 + 2
    # stage 1: the template itself
    t0 = net.templates("b0_mlp", "a")
    torch.testing.assert_close(net.weights("b0_mlp", "a").down, t0["down"][0])
    # stage 2: Σ_i W̃_i ⊗ α_i, each template a product of the generator's two factors
    s, key = 2, "b3_mlp"
    rows = net.layer_embeddings[net.offsets[key] : net.offsets[key] + s]
    z = net.projector(torch.cat([net.task_embeddings[1].expand(s, -1), rows], dim=-1))
    p, q = net.generator.factors("down", z)
    templates = p @ q.transpose(-1, -2)  # (s, D, n)
    kernels = net.kernels[key]
    w = net.weights(key, "b")
    expected = sum(torch.kron(templates[i], kernels.weight[i]) for i in range(s))
    torch.testing.assert_close(w.down, expected)
    up_t = net.templates(key, "b")["up"]
    torch.testing.assert_close(w.up, sum(torch.kron(up_t[i], kernels.weight[i]) for i in range(s)))
    gamma_t = net.templates(key, "b")["norm_weight"]
    torch.testing.assert_close(
        w.norm_weight, sum(torch.kron(gamma_t[i], kernels.norm[i]) for i in range(s))
    )
    assert w.down.shape == (32, 16) and w.up.shape == (16, 32)  # d = 2·D, n = d / λ


def test_generated_adapter_is_the_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    d, n = 8, 3
    w = AdapterWeights(
        *(torch.randn(*shape, generator=g) for shape in ((d, n), (n,), (n, d), (d,), (d,), (d,)))
    )
    h = torch.randn(2, 5, d, generator=g)
    u = F.gelu(h @ w.down + w.down_bias) @ w.up + w.up_bias
    mu, var = u.mean(-1, keepdim=True), u.var(-1, unbiased=False, keepdim=True)
    expected = h + (u - mu) / torch.sqrt(var + 1e-5) * w.norm_weight + w.norm_bias
    torch.testing.assert_close(adapter_forward(h, w, nn.GELU()), expected)


# -- behaviour ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_identity_at_init(method: str) -> None:
    pm = build(method)
    reference = tiny_swin(0).eval()
    x = images()
    pm.eval()
    with torch.no_grad():
        features = reference(x)
        out = pm(x)
        for task, logits in out.items():
            torch.testing.assert_close(logits, pm.heads[task](features), atol=0, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_every_hypernetwork_tensor_trains_and_the_backbone_stays_frozen(method: str) -> None:
    pm = build(method)
    trainable = pm.trainable_parameters()
    net_names = {f"model.vpeft_hypernet.{n}" for n, _ in hypernet(pm).named_parameters()}
    assert net_names <= set(trainable)
    assert set(trainable) - net_names == {n for n in trainable if n.startswith("heads.")}

    def loss_of(out: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(F.cross_entropy(out[t], torch.arange(4) % pm.tasks[t].num_classes) for t in out)

    checks.check_only_trainables_move(pm, loss_of)


@pytest.mark.parametrize("method", METHODS)
def test_tasks_get_different_adapters_and_outputs(method: str) -> None:
    pm = build(method)
    checks.perturb_trainables(pm)
    net = hypernet(pm)
    for module in adapters(pm):
        wa, wb = net.weights(module.key, "a"), net.weights(module.key, "b")
        for name, ta in wa.as_dict().items():
            assert not torch.allclose(ta, getattr(wb, name)), (module.key, name)
    x = images()
    with torch.no_grad(), pm.task_state.active("a"):
        maps_a = pm.model.forward_features(x)
    with torch.no_grad(), pm.task_state.active("b"):
        maps_b = pm.model.forward_features(x)
    assert not torch.allclose(maps_a, maps_b)


@pytest.mark.parametrize("method", METHODS)
def test_save_load_gives_identical_per_task_outputs(method: str, tmp_path) -> None:
    pm = build(method)
    checks.perturb_trainables(pm)
    path = tmp_path / f"{method}.safetensors"
    pm.save(path)
    with safe_open(str(path), framework="pt") as f:
        keys = {k for k in f.keys() if not k.startswith("__")}  # noqa: SIM118
    assert keys == set(pm.trainable_parameters())
    loaded = vpeft.load(path, base=tiny_swin(0))
    pm.eval()
    loaded.eval()
    x = images()
    with torch.no_grad():
        expected, got = pm(x), loaded(x)
    assert set(got) == {"a", "b"}
    for task in expected:
        torch.testing.assert_close(got[task], expected[task], atol=0, rtol=0)
    assert loaded.summary().as_dict() == pm.summary().as_dict()


@pytest.mark.parametrize("method", METHODS)
def test_backbone_runs_once_per_task_and_weights_are_generated_once_per_task(method) -> None:
    pm = build(method)
    assert pm.is_task_specific
    calls = {"embed": 0, "generate": 0}
    pm.model.patch_embed.register_forward_hook(
        lambda *_: calls.__setitem__("embed", calls["embed"] + 1)
    )
    net = hypernet(pm)
    original = net.weights

    def counted(*args, **kwargs):
        calls["generate"] += 1
        return original(*args, **kwargs)

    net.weights = counted
    with torch.no_grad():
        pm(images(batch=4))
    assert calls["embed"] == 2  # two tasks
    assert calls["generate"] == 2 * len(adapters(pm))  # per task and adapter, not per image


def test_hyperformer_places_adapters_after_attention_and_mlp() -> None:
    pm = build("hyperformer")
    for block in pm.spec.blocks:
        assert isinstance(block.module.attn, AdaptedLayer)
        assert isinstance(block.module.mlp, AdaptedLayer)
    pm = build("polyhistor")
    assert not any(isinstance(b.module.attn, AdaptedLayer) for b in pm.spec.blocks)
    assert len(adapters(pm)) == len(pm.spec.blocks)


def test_attention_sites_need_attention() -> None:
    with pytest.raises(UnsupportedBackboneError, match="sites=mlp"):
        vpeft.apply(tiny_convnext(0), "hyperformer", tasks=two_tasks())


def test_single_task_model_works() -> None:
    pm = vpeft.apply(tiny_swin(0), "polyhistor-lite", num_classes=3).eval()
    assert pm.is_task_specific  # the generated adapters read the (only) task
    with torch.no_grad():
        out = pm(images())
        with pm.task_state.active("main"):
            direct = pm.heads["main"](pm.model(images()))
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, direct, atol=0, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_registered_as_multi_task(method: str) -> None:
    assert vpeft.get_method(method).multi_task
