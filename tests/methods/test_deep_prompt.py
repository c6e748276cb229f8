"""APT's deep prompt baselines on ViLT and BridgeTower (METER-style): `deep-prompt-kv` (prompts
as extra keys/values only) against a naive softmax over [prompt keys; input keys];
`deep-prompt-concat` is `vpt-deep`."""

from __future__ import annotations

import torch
from torch import nn

import vpeft
from tests.methods.checks import NUM_CLASSES, perturb_trainables
from tests.methods.naive_attention import attention_with_extra, heads
from tests.methods.vl_models import bridgetower_inputs, hf_bridgetower, hf_vilt, vilt_inputs
from vpeft.backbones import describe
from vpeft.backbones.attention import attention_ops


def run(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(0)
    return model(inputs)


def test_deep_prompt_kv_is_extra_keys_and_values_of_the_frozen_projections() -> None:
    pm = vpeft.apply(hf_vilt(0), "deep-prompt-kv", num_classes=2, num_tokens=4).eval()
    layer = pm.model.backbone.encoder.layer[0]
    attn = layer.attention
    inner = attn.base.attention
    prompts = attn.sources["deep_prompt"].prompts.tokens
    x = torch.randn(2, 6, 32)
    mask = torch.zeros(2, 1, 1, 6)
    mask[1, ..., 4:] = torch.finfo(torch.float32).min
    q, k, v = (heads(m(x), 2) for m in (inner.query, inner.key, inner.value))
    ke, ve = (heads(m(prompts)[None], 2)[0] for m in (inner.key, inner.value))
    expected = attn.base.output.dense(attention_with_extra(q, k, v, ke, ve, mask))
    torch.testing.assert_close(attn(x, mask)[0], expected, atol=1e-5, rtol=1e-5)


def test_deep_prompt_counts_and_training() -> None:
    for method in ("deep-prompt-kv", "deep-prompt-concat"):
        torch.manual_seed(100)
        pm = vpeft.apply(hf_vilt(0), method, num_classes=NUM_CLASSES, num_tokens=4)
        assert pm.summary().trainable_encoder == 2 * 4 * 32  # L·p·d
        pm.train()
        trainable = pm.trainable_parameters()
        start = {n: p.detach().clone() for n, p in trainable.items()}
        opt = torch.optim.Adam(trainable.values(), lr=1e-2)
        for _ in range(2):
            opt.zero_grad()
            nn.functional.cross_entropy(run(pm, vilt_inputs()), torch.tensor([0, 1])).backward()
            opt.step()
        assert all(not torch.equal(p.detach(), start[n]) for n, p in trainable.items())
    defaults = vpeft.get_method("deep-prompt-kv").config()
    assert defaults.num_tokens == 200 and defaults.dropout == 0.0


def test_deep_prompt_concat_is_vpt_deep_with_the_papers_defaults() -> None:
    torch.manual_seed(100)
    a = vpeft.apply(hf_vilt(0), "deep-prompt-concat", num_classes=2, num_tokens=4).eval()
    torch.manual_seed(100)
    b = vpeft.apply(hf_vilt(0), "vpt-deep", num_classes=2, num_tokens=4, dropout=0.0).eval()
    perturb_trainables(a)
    perturb_trainables(b)
    with torch.no_grad():
        assert torch.equal(run(a, vilt_inputs()), run(b, vilt_inputs()))


# -- BridgeTower (METER-style co-attention) -----------------------------------------------------
def test_bert_attention_ops_without_extra_keys_is_the_module() -> None:
    """The `hf-bert` operations with zero extra keys reproduce BridgeTower's own self- and
    cross-attention forward (eager), with a padded-key mask (up to float rounding: the keys
    are a concatenated copy, so the matmul may take another kernel path)."""
    bt = hf_bridgetower(0).eval()
    layer = bt.cross_modal_text_layers[0]
    spec = describe(bt)
    block = next(b for b in spec.blocks if b.module is layer)
    g = torch.Generator().manual_seed(2)
    x, other = torch.randn(2, 6, 32, generator=g), torch.randn(2, 9, 32, generator=g)
    mask = torch.zeros(2, 1, 1, 6)
    mask[1, ..., 4:] = torch.finfo(torch.float32).min
    none = torch.zeros(1, 2, 0, 16)
    with torch.no_grad():
        ops = attention_ops(block.attention)
        ours = ops.forward_extra_kv(x, none, none, attention_mask=mask)[0]
        exact = dict(atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours, layer.attention(x, attention_mask=mask)[0], **exact)
        ops = attention_ops(block.cross_attention)
        ours = ops.forward_extra_kv(x, none, none, encoder_hidden_states=other)[0]
        plain = layer.crossattention(x, encoder_hidden_states=other)[0]
        torch.testing.assert_close(ours, plain, **exact)


def test_deep_prompt_kv_on_bridgetower_fusion_self_and_cross_attention() -> None:
    """Prompts in the self- and cross-attention of every fusion layer (as APT), each a naive
    softmax over [prompt keys; keys] followed by the layer's own output (dense, LayerNorm of
    the residual sum); the text tower takes none."""
    torch.manual_seed(100)
    bt = hf_bridgetower(0)
    pm = vpeft.apply(bt, "deep-prompt-kv", num_classes=NUM_CLASSES, num_tokens=4).eval()
    fusion = list(bt.cross_modal_text_layers) + list(bt.cross_modal_image_layers)
    assert pm.summary().trainable_encoder == 2 * len(fusion) * 4 * 32  # 2·L·p·d
    assert all(not hasattr(layer.attention, "sources") for layer in bt.text_model.encoder.layer)
    perturb_trainables(pm, std=1.0)

    layer = bt.cross_modal_image_layers[1]
    g = torch.Generator().manual_seed(3)
    x, text = torch.randn(2, 7, 32, generator=g), torch.randn(2, 5, 32, generator=g)
    text_mask = torch.zeros(2, 1, 1, 5)
    text_mask[1, ..., 3:] = torch.finfo(torch.float32).min
    for attr, source, mask, kwargs in (
        ("attention", x, None, {}),
        ("crossattention", text, text_mask, dict(encoder_hidden_states=text,
                                                 encoder_attention_mask=text_mask)),
    ):  # fmt: skip
        wrapper = getattr(layer, attr)
        inner, out = wrapper.base.self, wrapper.base.output
        prompts = wrapper.sources["deep_prompt"].prompts.tokens
        q = heads(inner.query(x), 2)
        k, v = (heads(m(source), 2) for m in (inner.key, inner.value))
        ke, ve = (heads(m(prompts)[None], 2)[0] for m in (inner.key, inner.value))
        attended = attention_with_extra(q, k, v, ke, ve, mask)
        expected = out.LayerNorm(out.dense(attended) + x)
        with torch.no_grad():
            torch.testing.assert_close(wrapper(x, **kwargs)[0], expected, atol=1e-5, rtol=1e-5)
            plain = wrapper.base(x, **kwargs)[0]
            assert not torch.allclose(wrapper(x, **kwargs)[0], plain, atol=1e-3)

    pm.train()
    trainable = pm.trainable_parameters()
    start = {n: p.detach().clone() for n, p in trainable.items()}
    opt = torch.optim.Adam(trainable.values(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(run(pm, bridgetower_inputs()), torch.tensor([0, 1]))
        loss.backward()
        opt.step()
    assert all(not torch.equal(p.detach(), start[n]) for n, p in trainable.items())
