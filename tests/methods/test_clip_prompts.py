"""zero-shot CLIP, CoOp, CoCoOp on a tiny random `CLIPModel`: identities between them, training
moves only the context / meta-net, save -> load, and APT on the text tower under the hard
prompt (the paper's CLIP setting)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import vpeft
from tests.methods.vl_models import CLIP_BOS, CLIP_EOS, CLIP_PAD, hf_clip

NAMES = [[5, 6], [7], [8, 9, 10]]
TEMPLATE = [1, 2, 3, 4]  # "a photo of a"
DOT = [11]


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def apply(method: str, seed: int = 0, **opts) -> vpeft.PeftModel:
    torch.manual_seed(100)
    return vpeft.apply(
        hf_clip(seed), method, num_classes=3, class_token_ids=NAMES, suffix_ids=DOT, **opts
    )


def test_zero_shot_is_clip_cosine_over_hard_prompts() -> None:
    pm = apply("zero-shot", template_ids=TEMPLATE).eval()
    clip = hf_clip(0).eval()
    rows = [[CLIP_BOS, *TEMPLATE, *n, *DOT, CLIP_EOS] for n in NAMES]
    ids = torch.tensor([r + [CLIP_PAD] * (16 - len(r)) for r in rows])
    with torch.no_grad():
        img = F.normalize(clip.get_image_features(pixel_values=images()).pooler_output, dim=-1)
        txt = F.normalize(clip.get_text_features(input_ids=ids).pooler_output, dim=-1)
        expected = clip.logit_scale.exp() * img @ txt.T
        torch.testing.assert_close(pm(images()), expected, atol=1e-6, rtol=1e-6)
    assert pm.summary().trainable == 0


def test_coop_initialised_from_the_template_equals_zero_shot() -> None:
    zs = apply("zero-shot", template_ids=TEMPLATE).eval()
    coop = apply("coop", init_ids=TEMPLATE).eval()
    assert coop.summary().trainable == 4 * 32  # M·d
    with torch.no_grad():
        torch.testing.assert_close(coop(images()), zs(images()), atol=1e-6, rtol=0)


def test_cocoop_with_a_zero_meta_net_equals_coop() -> None:
    coop = apply("coop", num_context=4).eval()
    cocoop = apply("cocoop").eval()
    net = cocoop.forward_override.meta_net
    with torch.no_grad():
        cocoop.forward_override.context.copy_(coop.forward_override.context)
        net[-1].weight.zero_()
        net[-1].bias.zero_()
        torch.testing.assert_close(cocoop(images()), coop(images()), atol=1e-6, rtol=1e-6)
    # M·d + π: 16→1→32
    assert cocoop.summary().trainable == 4 * 32 + (16 * 1 + 1) + (1 * 32 + 32)


def test_training_moves_only_context_and_meta_net(tmp_path: Path) -> None:
    for method in ("coop", "cocoop"):
        pm = apply(method, num_context=4).train()
        trainable = pm.trainable_parameters()
        frozen = {n: t.clone() for n, t in pm.state_dict().items() if n not in trainable}
        start = {n: p.detach().clone() for n, p in trainable.items()}
        opt = torch.optim.Adam(trainable.values(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(pm(images()), torch.tensor([0, 2])).backward()
            opt.step()
        assert all(not torch.equal(p.detach(), start[n]) for n, p in trainable.items())
        assert all(torch.equal(t, frozen[n]) for n, t in pm.state_dict().items() if n in frozen)
        pm.eval()
        path = tmp_path / f"{method}.safetensors"
        pm.save(path)
        loaded = vpeft.load(path, base=hf_clip(0)).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(images()), pm(images()), atol=0, rtol=0)


def test_apt_on_clip_text_tower_under_the_hard_prompt() -> None:
    """The paper's CLIP setting: APT (p=4, r=2) in the text encoder, hard prompt classifier."""
    pm = apply("zero-shot", template_ids=TEMPLATE)
    zs = apply("zero-shot", template_ids=TEMPLATE).eval()
    vpeft.apply(pm, "apt", num_prompts=4, rank=2)
    assert pm.summary().trainable == 2 * (4 * 32 + 2 * 2 * 32 + 1)  # two text layers
    pm.eval()
    modules = [m for m in pm.modules() if type(m).__name__ == "ApproximatedPrompts"]
    with torch.no_grad():
        for m in modules:
            m.prompts.zero_()
        assert torch.equal(pm(images()), zs(images()))
    pm.train()
    trainable = pm.trainable_parameters()
    with torch.no_grad():
        for p in trainable.values():
            p.add_(0.3 * torch.randn_like(p))
    loss = nn.functional.cross_entropy(pm(images()), torch.tensor([0, 1]))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())
