"""Bottleneck adapters: adapter (Houlsby), adapter-pfeiffer, adaptformer, scaled-pa."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

import vpeft
from tests.helpers import BACKBONES, images, tiny_convnext, tiny_vit
from tests.methods import checks
from vpeft.core.wrapper import AdaptedLayer, NotMergeableError
from vpeft.methods.adapters.bottleneck import Bottleneck, ResidualBottleneck

METHODS = ["adapter", "adapter-pfeiffer", "adaptformer", "scaled-pa"]
MLP_ONLY = ["adapter-pfeiffer", "adaptformer", "scaled-pa"]
#: adapters per block: Houlsby has two (attention + MLP), the others one (MLP).
SITES = {"adapter": 2, "adapter-pfeiffer": 1, "adaptformer": 1, "scaled-pa": 1}
CASES = [
    (method, backbone)
    for method in METHODS
    for backbone in BACKBONES
    if not (method == "adapter" and backbone == "convnext")
]


def expected_count(method: str, model: nn.Module, bottleneck: int = 0, reduction: int = 0) -> int:
    """Σ_blocks sites · (2·d·m + m + d), d = block width from the backbone description."""
    spec = vpeft.backbones.describe(model)
    total = 0
    for block in spec.blocks:
        m = block.dim // reduction if reduction else bottleneck
        total += SITES[method] * (2 * block.dim * m + m + block.dim)
    return total


@pytest.mark.parametrize(("method", "backbone"), CASES)
def test_adapter_checks(method: str, backbone: str, tmp_path) -> None:
    factory = BACKBONES[backbone]
    checks.check_identity_at_init(method, factory, atol=0)
    checks.check_training_moves_only_trainables(method, factory)
    checks.check_save_load(method, factory, tmp_path)
    pm = checks.build(method, factory)
    with pytest.raises(NotMergeableError, match="cannot be folded"):
        pm.merge()


@pytest.mark.parametrize(("method", "backbone"), CASES)
def test_closed_form_counts(method: str, backbone: str) -> None:
    factory = BACKBONES[backbone]
    default_m = vpeft.get_method(method).config().bottleneck
    model = factory(0)
    assert checks.trainable_encoder(method, factory) == expected_count(method, model, default_m)
    assert checks.trainable_encoder(method, factory, bottleneck=3) == expected_count(
        method, model, 3
    )
    # reduction sets m = d // r per block: on hierarchical backbones m grows with the stage width
    got = checks.trainable_encoder(method, factory, reduction=4)
    assert got == expected_count(method, model, reduction=4)


def test_reduction_follows_stage_width_on_swin() -> None:
    pm = checks.build("adapter", BACKBONES["swin"], reduction=4)
    spec = pm.spec
    widths = [
        (block.dim, AdaptedLayer.wrap(block.mlp_parent, block.mlp_attr).sequential["adapter"])
        for block in spec.blocks
    ]
    assert [a.down.out_features for _, a in widths] == [d // 4 for d, _ in widths]
    assert sorted({d for d, _ in widths}) == [16, 32]  # two stages of different width


@pytest.fixture(scope="module")
def vit_b() -> nn.Module:
    """Random-weight ViT-B/16, built once per worker (each test adapts a copy)."""
    return timm.create_model("vit_base_patch16_224", num_classes=0)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # 12 · (2·768·64 + 64 + 768): the AdaptFormer count for ViT-B/16, bottleneck 64
        ("adaptformer", 1_189_632),
        ("scaled-pa", 12 * (2 * 768 * 96 + 96 + 768)),
        ("adapter", 12 * 2 * (2 * 768 * 8 + 8 + 768)),
        ("adapter-pfeiffer", 12 * (2 * 768 * 8 + 8 + 768)),
    ],
)
def test_vit_b_counts(method: str, expected: int, vit_b: nn.Module) -> None:
    pm = vpeft.apply(copy.deepcopy(vit_b), method, num_classes=100)
    s = pm.summary()
    assert s.trainable_encoder == expected
    assert s.head == 768 * 100 + 100
    assert s.total == sum(p.numel() for p in pm.parameters())


def _adapters(pm: vpeft.PeftModel) -> list[Bottleneck]:
    return [m for m in pm.modules() if isinstance(m, Bottleneck)]


@pytest.mark.parametrize("method", METHODS)
def test_down_projection_is_alive(method: str) -> None:
    """W_up = 0 at init, so W_down's first gradient is 0 — but it must be non-zero from step 2.

    An all-zero init (W_down = W_up = 0) would leave W_down and W_up without gradient forever.
    """
    pm = checks.build(method, tiny_vit, dropout=0.0)
    adapters = _adapters(pm)
    assert len(adapters) == SITES[method] * pm.spec.depth
    for a in adapters:
        bound = 1.0 / a.down.in_features**0.5  # kaiming-uniform(a=√5) bound
        w = a.down.weight
        assert w.abs().max() <= bound and w.abs().max() > 0.5 * bound
        assert torch.count_nonzero(a.up.weight) == 0 and torch.count_nonzero(a.up.bias) == 0
    opt = torch.optim.SGD(pm.trainable_parameters().values(), lr=0.1)
    x, y = images(4), torch.arange(4) % checks.NUM_CLASSES
    pm.train()
    for step in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(pm(x), y).backward()
        for a in adapters:
            assert a.up.weight.grad.abs().sum() > 0, "W_up must receive gradient at once"
            down_grad = a.down.weight.grad.abs().sum()
            assert (down_grad == 0) if step == 0 else (down_grad > 0)
        opt.step()


def _block_reference(pm: vpeft.PeftModel, x: torch.Tensor) -> torch.Tensor:
    """Recompute ViT block 0 by hand from its frozen modules and the adapter tensors."""
    block = pm.model.blocks[0]
    attn, mlp = block.attn, block.mlp
    attn_base = attn.base if isinstance(attn, AdaptedLayer) else attn
    mlp_base = mlp.base if isinstance(mlp, AdaptedLayer) else mlp

    def delta(a: Bottleneck, h: torch.Tensor) -> torch.Tensor:
        return a.scale * (a.up(a.act(a.down(h))))

    a = attn_base(block.norm1(x))
    if isinstance(attn, AdaptedLayer):
        a = a + delta(attn.sequential["adapter"], a)  # Houlsby: on the attention output
    h = x + a
    x_tilde = block.norm2(h)
    m = mlp_base(x_tilde)
    if isinstance(mlp, AdaptedLayer):
        for branch in mlp.parallel.values():
            m = m + delta(branch, x_tilde)  # AdaptFormer / scaled PA: fed the LN2 output
        for seq in mlp.sequential.values():
            m = m + delta(seq, m)  # Houlsby / Pfeiffer: on the MLP output
    return h + m


@pytest.mark.parametrize(
    ("method", "scale"),
    [(m, 1.0) for m in METHODS[:2]] + [("adaptformer", 0.1), ("scaled-pa", 4.0)],
)
def test_placement_matches_the_papers_equations(method: str, scale: float) -> None:
    pm = checks.build(method, tiny_vit)
    checks.perturb_trainables(pm, std=0.2)
    pm.eval()
    assert {a.scale for a in _adapters(pm)} == {scale}
    kinds = {type(a) for a in _adapters(pm)}
    parallel = method in ("adaptformer", "scaled-pa")
    assert kinds == ({Bottleneck} if parallel else {ResidualBottleneck})
    tokens = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = pm.model.blocks[0](tokens)
        want = _block_reference(pm, tokens)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
        # the adapters really act (the check is not vacuous)
        plain = tiny_vit(0).blocks[0].eval()
        assert (got - plain(tokens)).abs().max() > 1e-3


def test_scale_multiplies_the_parallel_branch() -> None:
    torch.manual_seed(0)
    pm1 = checks.build("adaptformer", tiny_vit, scale=0.5)
    pm2 = checks.build("adaptformer", tiny_vit, scale=1.5)
    checks.perturb_trainables(pm1, std=0.2)
    checks.perturb_trainables(pm2, std=0.2)
    base = tiny_vit(0).eval()
    x = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = base.blocks[0].mlp(base.blocks[0].norm2(x))
        d1 = pm1.eval().model.blocks[0].mlp(base.blocks[0].norm2(x)) - ref
        d2 = pm2.eval().model.blocks[0].mlp(base.blocks[0].norm2(x)) - ref
    torch.testing.assert_close(d2, 3.0 * d1, atol=1e-6, rtol=1e-5)
    assert d1.abs().max() > 1e-3


def test_defaults_are_pinned() -> None:
    cfg = {m: vpeft.get_method(m).config() for m in METHODS}
    assert (cfg["adaptformer"].bottleneck, cfg["adaptformer"].scale) == (64, 0.1)
    assert (cfg["adaptformer"].activation, cfg["adaptformer"].dropout) == ("relu", 0.1)
    assert (cfg["scaled-pa"].bottleneck, cfg["scaled-pa"].scale) == (96, 4.0)
    assert (cfg["adapter"].bottleneck, cfg["adapter"].activation) == (8, "gelu")
    assert (cfg["adapter-pfeiffer"].bottleneck, cfg["adapter-pfeiffer"].activation) == (8, "relu")
    assert all(not vpeft.get_method(m).mergeable for m in METHODS)


def test_cli_style_options() -> None:
    pm = vpeft.apply(
        tiny_vit(), "adapter", num_classes=2, bottleneck="4", activation="relu", dropout="0.1"
    )
    cfg = pm.methods[0].config
    assert (cfg.bottleneck, cfg.activation, cfg.dropout) == (4, "relu", 0.1)
    relus = [a for a in _adapters(pm) if isinstance(a.act, nn.ReLU)]
    assert len(relus) == 4


@pytest.mark.parametrize("method", METHODS)
def test_bad_options_are_rejected(method: str) -> None:
    with pytest.raises(vpeft.ConfigError, match="bottleneck must be >= 1"):
        vpeft.apply(tiny_vit(), method, num_classes=2, bottleneck=0)
    with pytest.raises(vpeft.ConfigError, match="reduction must be >= 0"):
        vpeft.apply(tiny_vit(), method, num_classes=2, reduction=-2)
    with pytest.raises(vpeft.ConfigError, match="leaves no bottleneck unit"):
        vpeft.apply(tiny_vit(), method, num_classes=2, reduction=64)  # width 32
    with pytest.raises(vpeft.ConfigError, match="must be one of"):
        vpeft.apply(tiny_vit(), method, num_classes=2, activation="tanh")
    with pytest.raises(vpeft.ConfigError, match=r"dropout must be in \[0, 1\)"):
        vpeft.apply(tiny_vit(), method, num_classes=2, dropout=1.0)
    with pytest.raises(vpeft.UnsupportedBackboneError, match="Supported timm families"):
        vpeft.apply(nn.Sequential(nn.Linear(2, 2)), method, num_classes=2)


@pytest.mark.parametrize("method", ["adaptformer", "scaled-pa"])
@pytest.mark.parametrize("scale", [-0.1, 0.0])
def test_non_positive_scale_is_rejected(method: str, scale: float) -> None:
    with pytest.raises(vpeft.ConfigError, match="scale must be > 0"):
        vpeft.apply(tiny_vit(), method, num_classes=2, scale=scale)


@pytest.mark.parametrize("method", ["adapter", "adapter-pfeiffer"])
def test_sequential_adapters_have_no_scale(method: str) -> None:
    with pytest.raises(vpeft.ConfigError, match="unknown option"):
        vpeft.apply(tiny_vit(), method, num_classes=2, scale=1.0)


def test_houlsby_needs_attention() -> None:
    with pytest.raises(vpeft.UnsupportedBackboneError, match="convnext backbone has none"):
        vpeft.apply(tiny_convnext(), "adapter", num_classes=2)


def test_adaptformer_then_lora_composes(tmp_path) -> None:
    pm = vpeft.apply(tiny_vit(), "adaptformer", num_classes=3, bottleneck=4)
    pm = vpeft.apply(pm, "lora", rank=2, targets=("q", "v", "fc1"))
    assert [m.name for m in pm.methods] == ["adaptformer", "lora"]
    d, depth = 32, 2
    lora = depth * 2 * ((d + d) + (d + d) + (d + 4 * d))  # rank 2 on q, v (d->d), fc1 (d->4d)
    adaptformer = depth * (2 * d * 4 + 4 + d)
    assert pm.summary().trainable_encoder == adaptformer + lora
    mlp = pm.model.blocks[0].mlp
    assert isinstance(mlp, AdaptedLayer) and isinstance(mlp.base.fc1, AdaptedLayer)
    # identity at init (both zero-initialised) ...
    reference = tiny_vit()
    reference.reset_classifier(3)
    reference.get_classifier().load_state_dict(pm.head.state_dict())
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(pm.eval()(x), reference.eval()(x), atol=0, rtol=0)
    # ... both train, and the composition round-trips through a file
    checks.perturb_trainables(pm)
    pm.save(tmp_path / "c.safetensors")
    loaded = vpeft.load(tmp_path / "c.safetensors", base=tiny_vit())
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), pm(x), atol=0, rtol=0)
        assert (pm(x) - reference(x)).abs().max() > 1e-3
    names = set(pm.trainable_parameters())
    assert any("adaptformer" in n for n in names) and any("lora_fc1" in n for n in names)
