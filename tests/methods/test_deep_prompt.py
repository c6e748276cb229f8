"""APT's deep prompt baselines on ViLT: `deep-prompt-kv` (prompts as extra keys/values only)
against a naive softmax over [prompt keys; input keys]; `deep-prompt-concat` is `vpt-deep`."""

from __future__ import annotations

import torch
from torch import nn

import vpeft
from tests.methods.checks import NUM_CLASSES, perturb_trainables
from tests.methods.naive_attention import attention_with_extra, heads
from tests.methods.vl_models import hf_vilt, vilt_inputs


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
