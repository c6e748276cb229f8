"""VPT-shallow / VPT-deep: shared checks, counts, token layout, discarding, masked equivalence."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import timm
import torch

import vpeft
from tests.helpers import BACKBONES, tiny_pvt, tiny_swin, tiny_vit
from tests.methods import checks
from tests.methods.naive_attention import attention_with_extra, heads, relative_position_bias
from vpeft.methods.prompts.layers import (
    ExtendedAttention,
    PromptInsertion,
    PromptKeyValues,
    PromptReplacement,
    prompt_init_bound,
)

SUPPORTED = ["vit", "swin", "pvt_v2"]
METHODS = ["vpt-shallow", "vpt-deep"]
P = 3
VIT_VARIANTS = {
    "cls-token": tiny_vit,
    "avg-no-cls": partial(tiny_vit, global_pool="avg", class_token=False),
    "avg-cls-2reg": partial(tiny_vit, global_pool="avg", reg_tokens=2),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backbone", SUPPORTED)
def test_vpt_trains_only_prompts_and_round_trips(method: str, backbone: str, tmp_path) -> None:
    factory = BACKBONES[backbone]
    checks.check_training_moves_only_trainables(method, factory, num_tokens=P)
    checks.check_save_load(method, factory, tmp_path, num_tokens=P)


@pytest.mark.parametrize("variant", ["avg-no-cls", "avg-cls-2reg"])
def test_vpt_on_avg_pool_vits_trains_and_round_trips(variant: str, tmp_path) -> None:
    factory = VIT_VARIANTS[variant]
    checks.check_training_moves_only_trainables("vpt-deep", factory, num_tokens=P)
    checks.check_save_load("vpt-deep", factory, tmp_path, num_tokens=P)


@pytest.mark.parametrize("backbone", SUPPORTED)
def test_vpt_closed_form_counts_on_tiny_backbones(backbone: str) -> None:
    factory = BACKBONES[backbone]
    spec = vpeft.backbones.describe(factory(0))
    widths = [b.dim for b in spec.blocks]  # ViT: D per block; Swin / PVT: the stage width
    assert checks.trainable_encoder("vpt-shallow", factory, num_tokens=4) == 4 * widths[0]
    assert checks.trainable_encoder("vpt-deep", factory, num_tokens=4) == 4 * sum(widths)
    pm = checks.build("vpt-deep", factory, num_tokens=4)
    assert pm.summary().head == pm.spec.num_features * checks.NUM_CLASSES + checks.NUM_CLASSES


def _full_size(name: str) -> dict[str, vpeft.PeftModel]:
    """Both variants with p=50 on one random-weight build (deep-copied: building costs seconds)."""
    model = timm.create_model(name, num_classes=0)
    return {
        method: vpeft.apply(copy.deepcopy(model), method, num_classes=10, num_tokens=50)
        for method in METHODS
    }


def test_vpt_counts_and_init_on_full_size_vit_b() -> None:
    pms = _full_size("vit_base_patch16_224")
    assert pms["vpt-deep"].summary().trainable_encoder == 460_800  # 12 × 50 × 768
    assert pms["vpt-shallow"].summary().trainable_encoder == 38_400  # 50 × 768
    pm = pms["vpt-deep"]
    bound = (6 / (3 * 16 * 16 + 768)) ** 0.5
    assert prompt_init_bound(16, 768) == pytest.approx(bound)
    head = {id(p) for p in pm.head.parameters()}
    prompts = [p for p in pm.trainable_parameters().values() if id(p) not in head]
    tokens = torch.cat([p.detach().flatten() for p in prompts])
    assert tokens.numel() == 460_800
    assert tokens.abs().max() <= bound
    assert tokens.abs().max() > 0.99 * bound
    assert tokens.std().item() == pytest.approx(bound / 3**0.5, rel=0.01)  # sd of U(−v, v)


def test_vpt_counts_full_size_swin_t() -> None:
    """Per task, the figures behind Polyhistor's Swin-T table (4 tasks: 0.88M deep, 0.02M)."""
    pms = _full_size("swin_tiny_patch4_window7_224")
    # 50 × (2·96 + 2·192 + 6·384 + 2·768) and 50 × 96
    assert pms["vpt-deep"].summary().trainable_encoder == 220_800
    assert pms["vpt-shallow"].summary().trainable_encoder == 4_800


def _block_inputs(model: torch.nn.Module, blocks: list[torch.nn.Module]) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    handles = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for b in blocks]
    with torch.no_grad():
        model(checks.images())
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("variant", list(VIT_VARIANTS))
@pytest.mark.parametrize("method", METHODS)
def test_vit_token_layout_is_prefix_prompts_patches(method: str, variant: str) -> None:
    factory = VIT_VARIANTS[variant]
    plain = factory(0).eval()
    pm = checks.build(method, factory, num_tokens=P).eval()
    n = plain.num_prefix_tokens
    first = pm.model.norm_pre
    assert isinstance(first, PromptInsertion) and first.at == n
    (x_plain,) = _block_inputs(plain, [plain.blocks[0]])
    x0, x1 = _block_inputs(pm.model, [pm.model.blocks[0], _inner(pm.model.blocks[1])])
    assert x0.shape[1] == x_plain.shape[1] + P
    torch.testing.assert_close(x0[:, :n], x_plain[:, :n], atol=0, rtol=0)
    torch.testing.assert_close(x0[:, n + P :], x_plain[:, n:], atol=0, rtol=0)
    torch.testing.assert_close(x0[:, n : n + P], first.prompts.tokens.expand(2, -1, -1))
    if method == "vpt-deep":  # block 1 sees its own prompts, not block 0's prompt outputs
        own = pm.model.blocks[1].prompts.tokens
        torch.testing.assert_close(x1[:, n : n + P], own.expand(2, -1, -1), atol=0, rtol=0)
    else:
        assert not isinstance(pm.model.blocks[1], PromptReplacement)
    with torch.no_grad():  # features leave with the plain layout (prompts removed)
        assert (
            pm.model.forward_features(checks.images()).shape
            == plain.forward_features(checks.images()).shape
        )


def _inner(block: torch.nn.Module) -> torch.nn.Module:
    return block.block if isinstance(block, PromptReplacement) else block


@pytest.mark.parametrize("variant", list(VIT_VARIANTS))
@pytest.mark.parametrize("method", METHODS)
def test_vit_prompts_hidden_from_attention_give_the_plain_model(method: str, variant: str) -> None:
    """Mask every non-prompt query away from the prompt keys: CLS/patch outputs, pooled features
    and logits must equal the plain model's (checks placement, replacement and removal, and that
    prompts are excluded from average pooling)."""
    factory = VIT_VARIANTS[variant]
    pm = checks.build(method, factory, num_tokens=P).eval()
    checks.perturb_trainables(pm, std=1.0)
    plain = factory(0).eval()
    plain.reset_classifier(checks.NUM_CLASSES)
    plain.get_classifier().load_state_dict(pm.head.state_dict())
    n, x = plain.num_prefix_tokens, checks.images()
    total = plain.patch_embed.num_patches + n + P
    visible = torch.ones(total, total, dtype=torch.bool)
    visible[:, n : n + P] = False
    visible[n : n + P, :] = True  # prompts may look anywhere; nobody looks at them
    with torch.no_grad():
        got = pm.head(pm.model.forward_head(pm.model.forward_features(x, attn_mask=visible)))
        want = plain.forward_head(plain.forward_features(x))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(pm(x), want, atol=1e-4), "unmasked prompts must matter"


@pytest.mark.parametrize("method", METHODS)
def test_vit_prompt_outputs_are_discarded_exactly_where_vpt_says(method: str) -> None:
    """Changing block i's prompt outputs: deep -> no effect for every i (the next block replaces
    them, the last ones are removed); shallow -> changes the logits unless i is the last block."""
    pm = checks.build(method, partial(tiny_vit, depth=3), num_tokens=P).eval()
    checks.perturb_trainables(pm, std=1.0)
    x = checks.images()
    with torch.no_grad():
        reference = pm(x)
    for i, block in enumerate(pm.model.blocks):

        def scramble(module, args, out):
            out = out.clone()
            out[:, 1 : 1 + P] += 10.0 * torch.randn_like(out[:, 1 : 1 + P])
            return out

        handle = _inner(block).register_forward_hook(scramble)
        with torch.no_grad():
            changed = not torch.equal(pm(x), reference)
        handle.remove()
        last = i == len(pm.model.blocks) - 1
        assert changed == (method == "vpt-shallow" and not last), f"block {i}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backbone", SUPPORTED)
def test_every_prompt_tensor_reaches_the_logits(method: str, backbone: str) -> None:
    pm = checks.build(method, BACKBONES[backbone], num_tokens=P).eval()
    x = checks.images()
    prompts = {n: p for n, p in pm.trainable_parameters().items() if not n.startswith("heads.")}
    assert len(prompts) == (pm.spec.depth if method == "vpt-deep" else 1)
    with torch.no_grad():
        base = pm(x)
        for name, p in prompts.items():
            saved = p.clone()
            p.add_(torch.randn_like(p))  # not a constant: LayerNorm would cancel a uniform shift
            assert not torch.allclose(pm(x), base, atol=1e-6), f"{name} does not reach the output"
            p.copy_(saved)


def _prompt_kv(wrapper: ExtendedAttention, project) -> tuple[torch.Tensor, torch.Tensor]:
    source = wrapper.sources["vpt"]
    assert isinstance(source, PromptKeyValues)
    return project(source.prompts.tokens)


def test_swin_prompted_window_attention_equals_explicit_softmax_with_shift() -> None:
    pm = checks.build("vpt-deep", tiny_swin, num_tokens=P).eval()
    block = pm.model.layers[0].blocks[1]
    assert block.shift_size[0] > 0 and block.attn_mask.min() < 0
    wrapper = block.attn
    attn = wrapper.base
    nw, n, c = block.attn_mask.shape[0], block.attn_mask.shape[1], 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * nw, n, c, generator=g)

    def qkv(t: torch.Tensor) -> list[torch.Tensor]:
        return [heads(u, 2) for u in (t @ attn.qkv.weight.T + attn.qkv.bias).chunk(3, -1)]

    q, k, v = qkv(x)
    _, k_p, v_p = qkv(wrapper.sources["vpt"].prompts.tokens[None])  # prompts through W_k, W_v
    rel = relative_position_bias(attn.relative_position_bias_table.detach(), 4)
    bias = rel.unsqueeze(0) + block.attn_mask.repeat(2, 1, 1).unsqueeze(1)
    expected = attn.proj(attention_with_extra(q, k, v, k_p[0], v_p[0], bias))
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x, mask=block.attn_mask), expected, atol=1e-5, rtol=1e-5)


def test_pvt_prompts_are_keys_values_after_the_reduction() -> None:
    pm = checks.build("vpt-deep", tiny_pvt, num_tokens=P).eval()
    wrapper = pm.model.stages[0].blocks[0].attn
    attn = wrapper.base
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 16, generator=g)
    q = heads(x @ attn.q.weight.T + attn.q.bias, 1)
    reduced = attn.norm(attn.sr(x.transpose(1, 2).reshape(2, 16, 8, 8)).flatten(2).transpose(1, 2))

    def kv(t: torch.Tensor) -> list[torch.Tensor]:
        return [heads(u, 1) for u in (t @ attn.kv.weight.T + attn.kv.bias).chunk(2, -1)]

    k, v = kv(reduced)
    k_p, v_p = kv(wrapper.sources["vpt"].prompts.tokens[None])
    expected = attn.proj(attention_with_extra(q, k, v, k_p[0], v_p[0]))
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x, [8, 8]), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["swin", "pvt_v2"])
def test_shallow_on_hierarchical_backbones_prompts_the_first_block_only(backbone: str) -> None:
    pm = checks.build("vpt-shallow", BACKBONES[backbone], num_tokens=P)
    wrapped = [isinstance(b.attention.parent.attn, ExtendedAttention) for b in pm.spec.blocks]
    assert wrapped == [True] + [False] * (pm.spec.depth - 1)
    deep = checks.build("vpt-deep", BACKBONES[backbone], num_tokens=P)
    assert all(isinstance(b.attention.parent.attn, ExtendedAttention) for b in deep.spec.blocks)
    widths = [b.attention.parent.attn.sources["vpt"].prompts.tokens.shape for b in deep.spec.blocks]
    assert widths == [(P, b.dim) for b in deep.spec.blocks]  # stage width per block


def test_prompt_dropout_acts_in_training_only() -> None:
    pm = checks.build("vpt-deep", tiny_vit, num_tokens=P, dropout=0.5)
    x = checks.images()
    with torch.no_grad():
        pm.eval()
        torch.testing.assert_close(pm(x), pm(x), atol=0, rtol=0)
        pm.train()
        torch.manual_seed(0)
        a = pm(x)
        torch.manual_seed(1)
        assert not torch.allclose(a, pm(x))
    off = checks.build("vpt-deep", tiny_vit, num_tokens=P, dropout=0.0).train()
    with torch.no_grad():
        torch.testing.assert_close(off(x), off(x), atol=0, rtol=0)


def test_vpt_composes_with_lora(tmp_path) -> None:
    pm = vpeft.apply(tiny_vit(), "vpt-deep", num_classes=3, num_tokens=P)
    pm = vpeft.apply(pm, "lora", rank=2)
    assert pm.summary().trainable_encoder == 2 * P * 32 + 2 * 2 * 2 * (32 + 32)
    checks.perturb_trainables(pm)
    pm.save(tmp_path / "c.safetensors")
    loaded = vpeft.load(tmp_path / "c.safetensors", base=tiny_vit()).eval()
    x = checks.images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pm.eval()(x), atol=0, rtol=0)


def test_vpt_errors_are_clear() -> None:
    for method in METHODS:
        with pytest.raises(vpeft.ConfigError, match="num_tokens must be >= 1"):
            vpeft.apply(tiny_vit(), method, num_classes=2, num_tokens=0)
        with pytest.raises(vpeft.ConfigError, match="dropout must be in"):
            vpeft.apply(tiny_vit(), method, num_classes=2, dropout=1.0)
        with pytest.raises(vpeft.UnsupportedBackboneError, match="convnext"):
            vpeft.apply(BACKBONES["convnext"](), method, num_classes=2)
        assert not vpeft.get_method(method).mergeable
    pm = checks.build("vpt-shallow", tiny_vit)
    with pytest.raises(vpeft.ConfigError, match="already installed"):
        vpeft.apply(pm, "vpt-deep")
    with pytest.raises(vpeft.VpeftError, match="cannot be folded"):
        pm.merge()
    swin = checks.build("vpt-deep", tiny_swin, num_tokens=P)
    with pytest.raises(vpeft.ConfigError, match="already installed"):
        vpeft.apply(swin, "vpt-shallow")
