"""ViLT (text + image in one sequence, dict inputs): LoRA, adapters, BitFit, prompts, prefix.

`ViltModel` samples the order of its image patches with `torch.multinomial` in every forward;
each forward here is seeded so that two runs see the same order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import vpeft
from tests.backbones.hf_models import hf_vilt, vilt_inputs
from tests.methods.checks import NUM_CLASSES, perturb_trainables

CASES = [
    ("lora", {"rank": 2, "alpha": 4.0}, True),
    ("adapter", {}, True),
    ("adaptformer", {"bottleneck": 4, "dropout": 0.0}, True),
    ("scaled-pa", {"bottleneck": 4}, True),
    ("bitfit", {}, True),
    ("vpt-shallow", {"num_tokens": 3, "dropout": 0.0}, False),
    ("vpt-deep", {"num_tokens": 3, "dropout": 0.0}, False),
    ("prefix", {"num_tokens": 3}, False),
]


def run(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(0)  # ViLT's patch order
    return model(inputs)


def build(method: str, opts: dict) -> vpeft.PeftModel:
    torch.manual_seed(100)
    return vpeft.apply(hf_vilt(0), method, num_classes=NUM_CLASSES, **opts)


@pytest.mark.parametrize(("method", "opts", "identity"), CASES, ids=[c[0] for c in CASES])
def test_vilt_methods(method: str, opts: dict, identity: bool, tmp_path: Path) -> None:
    x = vilt_inputs()
    pm = build(method, opts).eval()
    if identity:
        reference = hf_vilt(0)
        reference.reset_classifier(NUM_CLASSES)
        reference.get_classifier().load_state_dict(pm.head.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(run(pm, x), run(reference.eval(), x), atol=1e-6, rtol=0)

    # training: every trainable tensor moves, frozen ones stay bit-identical
    pm.train()
    trainable = pm.trainable_parameters()
    frozen = {n: t.clone() for n, t in pm.state_dict().items() if n not in trainable}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    opt = torch.optim.Adam(trainable.values(), lr=1e-2)
    y = torch.arange(2) % NUM_CLASSES
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(run(pm, x), y).backward()
        opt.step()
    assert all(not torch.equal(p.detach(), start[n]) for n, p in trainable.items())
    assert all(torch.equal(t, frozen[n]) for n, t in pm.state_dict().items() if n in frozen)

    # save -> load on a fresh backbone (given as a plain ViltModel) -> identical logits
    pm.eval()
    perturb_trainables(pm)
    path = tmp_path / "vilt.safetensors"
    pm.save(path)
    loaded = vpeft.load(path, base=hf_vilt(0).backbone).eval()
    with torch.no_grad():
        torch.testing.assert_close(run(loaded, x), run(pm, x), atol=0, rtol=0)


@pytest.mark.parametrize("method", ["vpt-shallow", "vpt-deep"])
def test_vilt_prompts_follow_the_sequence_and_are_visible(method: str) -> None:
    """Prompts sit after text + image tokens with key-mask 1; padding stays masked."""
    pm = build(method, {"num_tokens": 3, "dropout": 0.0}).eval()
    backbone = pm.model.backbone
    seen: dict[str, torch.Tensor] = {}

    def grab(module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen["x"], seen["mask"] = args[0], args[1]

    backbone.encoder.layer[0].register_forward_pre_hook(grab, with_kwargs=True)
    x = vilt_inputs()
    with torch.no_grad():
        out = (torch.manual_seed(0), backbone(**x))[1]
    n_text, n_image = 6, 1 + 16
    assert seen["x"].shape[1] == n_text + n_image + 3
    torch.testing.assert_close(
        seen["x"][:, -3:], backbone.embeddings.prompts.tokens.expand(2, -1, -1), atol=0, rtol=0
    )
    mask = seen["mask"]  # (B, 1, N, N) additive: 0 where visible
    assert torch.all(mask[:, 0, :, -3:] == 0), "prompts must be visible to every token"
    assert torch.all(mask[1, 0, :, 4:6] < -1e30), "text padding must stay masked"
    assert out.last_hidden_state.shape[1] == n_text + n_image  # removed before the final norm

    # a padded text token never influences the output, prompts or not
    changed = dict(x, input_ids=x["input_ids"].clone())
    changed["input_ids"][1, 5] = (changed["input_ids"][1, 5] + 1) % 50
    with torch.no_grad():
        torch.testing.assert_close(run(pm, changed), run(pm, x), atol=1e-6, rtol=0)


def test_vilt_vpt_last_blocks_is_refused_clearly() -> None:
    with pytest.raises(vpeft.ConfigError, match="key mask"):
        build("vpt-deep", {"num_tokens": 3, "last_blocks": 1})
