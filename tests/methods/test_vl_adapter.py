"""`vl-adapter`: identity at init, placement (language / fusion layers only), closed-form count,
training moves only the adapters, and the APT paper's 3.56M on ViLT-B/32."""

from __future__ import annotations

import torch
from torch import nn

import vpeft
from tests.methods.checks import NUM_CLASSES, perturb_trainables
from tests.methods.vl_models import (
    bridgetower_inputs,
    hf_bridgetower,
    hf_clip,
    hf_vilt,
    vilt_inputs,
)
from vpeft.methods.adapters.bottleneck import ResidualBottleneck


def run(model, inputs):
    torch.manual_seed(0)
    return model(inputs)


def adapters(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, ResidualBottleneck)]


def test_identity_at_init_and_training() -> None:
    for factory, inputs in ((hf_vilt, vilt_inputs), (hf_bridgetower, bridgetower_inputs)):
        torch.manual_seed(100)
        pm = vpeft.apply(factory(0), "vl-adapter", num_classes=NUM_CLASSES).eval()
        torch.manual_seed(100)
        ref = vpeft.apply(factory(0), "linear", num_classes=NUM_CLASSES).eval()
        ref.head.load_state_dict(pm.head.state_dict())
        x = inputs()
        with torch.no_grad():
            torch.testing.assert_close(run(pm, x), run(ref, x), atol=1e-6, rtol=0)
        pm.train()
        trainable = pm.trainable_parameters()
        frozen = {n: t.clone() for n, t in pm.state_dict().items() if n not in trainable}
        start = {n: p.detach().clone() for n, p in trainable.items()}
        opt = torch.optim.Adam(trainable.values(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(run(pm, x), torch.tensor([0, 1])).backward()
            opt.step()
        assert all(not torch.equal(p.detach(), start[n]) for n, p in trainable.items())
        assert all(torch.equal(t, frozen[n]) for n, t in pm.state_dict().items() if n in frozen)
        perturb_trainables(pm)


def test_placement_and_counts() -> None:
    d, m = 32, 4
    per = 2 * d * m + m + d
    vilt = vpeft.apply(hf_vilt(0), "vl-adapter", num_classes=2)
    assert len(adapters(vilt)) == 2 * 2 and vilt.summary().trainable_encoder == 4 * per
    bt = hf_bridgetower(0)
    pm = vpeft.apply(bt, "vl-adapter", num_classes=2)
    # 2 text layers × (attn, mlp) + 4 fusion layers × (attn, cross, mlp)
    assert len(adapters(pm)) == 2 * 2 + 4 * 3
    assert not adapters(bt.vision_model)
    clip = hf_clip(0)
    pm = vpeft.apply(clip, "vl-adapter", num_classes=2)
    assert len(adapters(clip.text_model)) == 4 and not adapters(clip.vision_model)


def test_vilt_b32_matches_the_papers_3_56m() -> None:
    pm = vpeft.apply(vpeft.create_backbone("hf:ViltModel"), "vl-adapter", num_classes=2)
    assert pm.summary().trainable_encoder == 3_559_680
