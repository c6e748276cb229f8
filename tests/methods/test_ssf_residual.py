"""SSF on the attention projection and fc2 recovers its output from the residual sums.

The stored-output path (`ScaleShiftFunction`) is the reference: same outputs and gradients of
every SSF parameter and of the input (float64; the recovery s' − s differs from z only by the
rounding of the add), exactly one (B, N, D) storage fewer per link, no more saved bytes than
LoRA, and the stored path wherever an add is not exactly s + z (checked in the autograd graph).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from timm.layers import LayerScale
from timm.layers.config import set_reentrant_ckpt, use_reentrant_ckpt

import vpeft
from tests.helpers import BACKBONES, images
from tests.methods import checks
from vpeft.analysis import saved_activation_bytes
from vpeft.methods.ssf.scale_shift import ScaleShift

DEPTH = 3


def _vit(seed: int = 0, **kw: object) -> torch.nn.Module:
    return BACKBONES["vit"](seed, depth=DEPTH, **kw)


def _ssf(**kw: object):
    pm = checks.build("ssf", _vit, init_std=0.2, **kw)
    checks.perturb_trainables(pm, std=0.1)
    return pm.train()


def _links(pm) -> list:
    return [m.branch for m in pm.modules() if isinstance(m, ScaleShift) and m.branch is not None]


def _unlinked(pm):
    """A copy that keeps every branch output (the pre-link implementation)."""
    plain = copy.deepcopy(pm)
    for m in plain.modules():
        if isinstance(m, ScaleShift):
            m.opens = m.closes = m.branch = None
    return plain


def test_every_attention_and_mlp_branch_is_linked() -> None:
    assert len(_links(_ssf())) == 2 * DEPTH  # proj and fc2 of every block (final norm closes)


def test_linked_gradients_equal_the_stored_output_path() -> None:
    pm = _ssf().to(torch.float64)
    reference = _unlinked(pm)
    x = images().double()
    linked, stored = checks.outputs_and_grads(pm, x), checks.outputs_and_grads(reference, x)
    assert linked.keys() == stored.keys()
    for key in linked:
        torch.testing.assert_close(linked[key], stored[key], rtol=1e-10, atol=1e-12, msg=key)


def test_float32_only_the_linked_scales_differ_and_only_by_rounding() -> None:
    """s' − s rounds: dγ of a linked branch is close, every other gradient bit-identical."""
    pm = _ssf()
    x = images()
    linked, stored = checks.outputs_and_grads(pm, x), checks.outputs_and_grads(_unlinked(pm), x)
    scales = {id(m.scale) for m in pm.modules() if isinstance(m, ScaleShift) and m.branch}
    rounded = {f"grad:{n}" for n, p in pm.named_parameters() if id(p) in scales}
    assert len(rounded) == 2 * DEPTH
    for key in linked:
        tolerance = dict(rtol=1e-4, atol=1e-5) if key in rounded else dict(rtol=0, atol=0)
        torch.testing.assert_close(linked[key], stored[key], **tolerance, msg=key)


def test_each_link_saves_one_stream_width_fewer_and_ssf_saves_less_than_lora() -> None:
    x = images(4)
    pm = _ssf()
    tokens = (32 // 8) ** 2 + 1  # patches + class token
    width = pm.spec.embed_dim
    one_storage = x.shape[0] * tokens * width * 4  # (B, N, D) in float32
    linked, stored = saved_activation_bytes(pm, x), saved_activation_bytes(_unlinked(pm), x)
    assert stored - linked == len(_links(pm)) * one_storage
    lora = checks.build("lora", _vit).train()
    assert linked < saved_activation_bytes(lora, x)


def test_no_link_where_drop_path_sits_between() -> None:
    """Stochastic depth grows linearly from 0: block 0 has no drop-path, so only its attention
    branch is linked (its MLP output flows into block 1, whose norm sits after a drop-path)."""
    pm = checks.build("ssf", functools.partial(_vit, drop_path_rate=0.1)).train()
    assert len(_links(pm)) == 1
    pm(images()).sum().backward()  # linked and stored-output paths train side by side


def _assert_same(pm, reference, x: torch.Tensor) -> None:
    linked, stored = checks.outputs_and_grads(pm, x), checks.outputs_and_grads(reference, x)
    assert linked.keys() == stored.keys()
    for key in linked:
        torch.testing.assert_close(linked[key], stored[key], rtol=1e-10, atol=1e-12, msg=key)


def test_an_add_that_is_not_a_plain_sum_keeps_the_branch_output() -> None:
    """A layer scale slipped in after install: the graph check sees a different add, so the
    tap keeps that branch's y (one storage more than when linked), gradients stay exact."""
    pm = _ssf().to(torch.float64)
    x = images().double()
    linked_bytes = saved_activation_bytes(pm, x)
    block = pm.spec.blocks[1].module
    block.ls1 = LayerScale(pm.spec.embed_dim, init_values=0.5).double().requires_grad_(False)
    reference = _unlinked(pm)
    _assert_same(pm, reference, x)
    one_storage = x.shape[0] * 17 * pm.spec.embed_dim * 8  # (B, N, D) float64
    assert saved_activation_bytes(pm, x) - linked_bytes == one_storage


def test_composed_with_a_sequential_adapter_stays_exact() -> None:
    """Houlsby adapters wrap the attention and MLP outputs: every add then differs from
    s + z, and SSF keeps its outputs (the graph check), with unchanged gradients."""
    pm = vpeft.apply(_ssf(), "adapter")
    checks.perturb_trainables(pm, std=0.1)
    pm = pm.train().to(torch.float64)
    _assert_same(pm, _unlinked(pm), images().double())


def test_links_hold_no_tensor_after_a_forward() -> None:
    pm = _ssf()
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            pm(images())
        for link in _links(pm):
            assert link.before is None
            assert link.pending is None


def test_deep_copy_keeps_working_links() -> None:
    pm = _ssf().to(torch.float64)
    twin = copy.deepcopy(pm)
    assert len(_links(twin)) == 2 * DEPTH
    assert not {id(link) for link in _links(twin)} & {id(link) for link in _links(pm)}
    x = images().double()
    assert saved_activation_bytes(twin, x) == saved_activation_bytes(pm, x)
    _assert_same(twin, _unlinked(pm), x)


@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing_gives_the_same_gradients(reentrant: bool) -> None:
    """timm checkpoints one block at a time. Non-reentrant: the cross-block taps save in the
    recomputation what they saved in the forward. Reentrant: the forward records nothing and a
    recomputed block never meets the next block's norm, so its fc2 branch uses its own y."""
    pm = _ssf().to(torch.float64)
    reference = _unlinked(pm)
    pm.spec.model.set_grad_checkpointing(True)
    x = images().double()
    previous = use_reentrant_ckpt()
    set_reentrant_ckpt(reentrant)
    try:
        _assert_same(pm, reference, x)
    finally:
        set_reentrant_ckpt(previous)


def test_residual_links_can_be_turned_off() -> None:
    pm = checks.build("ssf", _vit, residual_links=False)
    assert _links(pm) == []


def test_a_retained_graph_backs_up_twice() -> None:
    """The tap hands s' over again in every backward through a retained graph."""
    pm = _ssf().to(torch.float64)
    reference = _unlinked(pm)
    x = images().double()

    def twice(model) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.sum().backward(retain_graph=True)
        out.square().sum().backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    linked, stored = twice(pm), twice(reference)
    for key in linked:
        torch.testing.assert_close(linked[key], stored[key], rtol=1e-10, atol=1e-12, msg=key)
