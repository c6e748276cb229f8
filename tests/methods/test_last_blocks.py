"""`last_blocks=N`: block-wise methods adapt only the last N blocks (VQT Fig. 3b low-memory regime).

Checked against the all-blocks method with the earlier blocks' pieces set to zero (LoRA,
adapters: then they are exact identities), against an explicit token computation (VPT-deep on
ViT), by closed-form counts, by the activations autograd keeps, and for clear errors.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

import vpeft
from tests.helpers import images, tiny_swin, tiny_vit
from tests.methods import checks
from vpeft.analysis import saved_activation_bytes
from vpeft.methods.prompts.layers import ExtendedAttention

vit3 = partial(tiny_vit, depth=3)  # width 32, 2 heads, 16 patches + class token
ZERO_PIECE_METHODS = ("lora", "adapter", "adapter-pfeiffer", "adaptformer", "scaled-pa")


@pytest.mark.parametrize("method", ZERO_PIECE_METHODS)
@pytest.mark.parametrize("factory", [vit3, tiny_swin], ids=["vit", "swin"])
def test_last_blocks_equals_all_blocks_with_the_earlier_pieces_zeroed(method, factory) -> None:
    last = checks.build(method, factory, last_blocks=2)
    checks.perturb_trainables(last)
    every = checks.build(method, factory)
    trained = last.trainable_parameters()
    assert set(trained) < set(every.trainable_parameters())
    every.load_state_dict(last.state_dict(), strict=False)
    with torch.no_grad():
        for name, p in every.trainable_parameters().items():
            if name not in trained:
                p.zero_()
    x = images(2, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(last.eval()(x), every.eval()(x), atol=0, rtol=0)
    if factory is vit3:  # equal blocks: two of three carry 2/3 of the pieces (Swin: below)
        assert 3 * checks.trainable_encoder(method, factory, last_blocks=2) == (
            2 * checks.trainable_encoder(method, factory)
        )


def test_swin_counts_follow_the_stage_widths() -> None:
    # tiny Swin: blocks (stage 0: 2 × width 16, stage 1: 2 × width 32); LoRA r=8 on q and v
    r = 8
    per_block = [2 * r * (c + c) for c in (16, 16, 32, 32)]
    assert checks.trainable_encoder("lora", tiny_swin) == sum(per_block)
    assert checks.trainable_encoder("lora", tiny_swin, last_blocks=3) == sum(per_block[1:])
    pm = checks.build("vpt-deep", tiny_swin, num_tokens=5, last_blocks=2)
    assert pm.summary().trainable_encoder == 2 * 5 * 32  # p · C for the two stage-1 blocks
    wrapped = [isinstance(getattr(b.attention.parent, b.attention.attr), ExtendedAttention)
               for b in pm.spec.blocks]  # fmt: skip
    assert wrapped == [False, False, True, True]


@pytest.mark.parametrize("deep", [True, False])
def test_vit_prompts_enter_at_the_first_prompted_block(deep: bool) -> None:
    """Explicit tokens: blocks 0 plain, prompts inserted before block 1 (and replaced before
    block 2 for deep), removed before the final norm."""
    method = "vpt-deep" if deep else "vpt-shallow"
    pm = checks.build(method, vit3, num_tokens=4, last_blocks=2).eval()
    checks.perturb_trainables(pm, std=0.3)
    assert pm.summary().trainable_encoder == (2 if deep else 1) * 4 * 32
    prompts = [b.prompts.tokens for b in pm.model.blocks if hasattr(b, "prompts")]
    assert len(prompts) == (2 if deep else 1)
    plain = vit3()
    plain.reset_classifier(checks.NUM_CLASSES)
    plain.get_classifier().load_state_dict(pm.head.state_dict())
    plain.eval()
    x = images(2, seed=5)

    def with_tokens(z: torch.Tensor, p: torch.Tensor, drop: int) -> torch.Tensor:
        return torch.cat([z[:, :1], p.expand(z.shape[0], -1, -1), z[:, 1 + drop :]], dim=1)

    with torch.no_grad():
        z = plain.norm_pre(plain._pos_embed(plain.patch_embed(x)))
        z = plain.blocks[0](z)
        z = plain.blocks[1](with_tokens(z, prompts[0], drop=0))
        z = plain.blocks[2](with_tokens(z, prompts[1], drop=4) if deep else z)
        z = plain.norm(torch.cat([z[:, :1], z[:, 5:]], dim=1))
        expected = plain.forward_head(z)
        torch.testing.assert_close(pm(x), expected, atol=1e-6, rtol=1e-6)


def test_autograd_keeps_nothing_before_the_first_adapted_block() -> None:
    factory = partial(tiny_vit, depth=4)
    x = images(4)
    saved = {n: saved_activation_bytes(checks.build("lora", factory, last_blocks=n), x)
             for n in (0, 1, 2, 4)}  # fmt: skip
    assert saved[4] == saved[0]  # last_blocks = depth is every block
    assert 0 < saved[1] < saved[2] < saved[0]
    # blocks are identical in shape: each adapted block keeps the same bytes
    per_block = saved[2] - saved[1]
    assert saved[0] - saved[1] == pytest.approx(3 * per_block, rel=0.02)


@pytest.mark.parametrize("method", ["lora", "adaptformer", "vpt-deep"])
def test_last_blocks_saves_and_loads(method: str, tmp_path: Path) -> None:
    checks.check_save_load(method, vit3, tmp_path, last_blocks=2)


def test_bad_last_blocks_is_a_clear_error() -> None:
    with pytest.raises(vpeft.ConfigError, match="last_blocks=3 but this vit backbone has 2"):
        vpeft.apply(tiny_vit(), "lora", num_classes=3, last_blocks=3)
    with pytest.raises(vpeft.ConfigError, match="last_blocks must be >= 0"):
        vpeft.apply(tiny_vit(), "adapter", num_classes=3, last_blocks=-1)
    model = tiny_vit()
    with pytest.raises(vpeft.ConfigError, match="has 2 blocks"):
        vpeft.apply(model, "vpt-deep", num_classes=3, last_blocks=5)
    assert all(p.requires_grad for p in model.parameters())  # the model is left as given
