"""SPT's sparse deltas fold into the frozen weights at eval and are restored for training.

Checks: folded outputs equal the unfolded ones; frozen weights after train → eval → train are
bit-identical; an eval-mode forward that needs gradients does not fold; a δ changed while folded
is re-folded; the folded forward runs no sparse kernels (it costs what the plain layers cost).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.helpers import BACKBONES, images
from tests.methods import checks
from tests.spt.helpers import crafted_plan
from vpeft.methods.spt import SparseDelta, SparseLinearDelta

SPARSE_OPS = {"aten.index_select", "aten.index_add_", "aten.index_add", "aten.index_put"}


class _OpLog(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _build(structured: str, backbone: str = "vit"):
    factory = BACKBONES[backbone]
    pm = checks.build(f"spt-{structured}", factory, plan=crafted_plan(factory(), structured))
    checks.perturb_trainables(pm)
    assert any(isinstance(m, SparseLinearDelta) for m in pm.modules())
    assert any(isinstance(m, SparseDelta) for m in pm.modules())
    return pm


def _frozen(pm) -> dict[str, torch.Tensor]:
    trainable = set(pm.trainable_parameters())
    return {n: p.detach().clone() for n, p in pm.named_parameters() if n not in trainable}


@pytest.mark.parametrize("structured", ["lora", "adapter"])
def test_eval_folds_and_train_restores_bit_exactly(structured: str) -> None:
    pm = _build(structured)
    x = images()
    before = _frozen(pm)
    pm.eval()
    with torch.enable_grad():
        unfolded = pm(x).detach()  # eval-mode forward that wants δ's gradient: not folded
    assert all(torch.equal(before[n], p) for n, p in _frozen(pm).items())
    with torch.no_grad():
        first = pm(x)  # folds (index ops once)
    with torch.no_grad(), _OpLog() as log:
        folded = pm(x)
    torch.testing.assert_close(first, folded, rtol=0, atol=0)
    assert not (log.ops & SPARSE_OPS), "the folded eval forward still runs sparse kernels"
    assert any(not torch.equal(before[n], p) for n, p in _frozen(pm).items())  # really folded
    torch.testing.assert_close(folded, unfolded, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(pm(x), folded, rtol=0, atol=0)
    pm.train()
    after = _frozen(pm)
    assert after.keys() == before.keys()
    for name in before:
        assert torch.equal(after[name], before[name]), name


def test_eval_forward_with_grad_trains_delta() -> None:
    pm = _build("lora")
    pm.eval()
    with torch.no_grad():
        pm(images())  # fold
    pm(images()).square().sum().backward()  # grad wanted: unfolds, δ gets gradients
    deltas = [m.weight_delta for m in pm.modules() if isinstance(m, SparseLinearDelta)]
    assert all(d.grad is not None and d.grad.abs().sum() > 0 for d in deltas if d is not None)


def test_delta_changed_while_folded_is_refolded() -> None:
    pm = _build("lora")
    pm.eval()
    x = images()
    with torch.no_grad():
        pm(x)
        for p in pm.trainable_parameters().values():
            p.mul_(1.5)  # an in-place update bumps δ's version
        refolded = pm(x)
    with torch.enable_grad():
        unfolded = pm(x).detach()
    torch.testing.assert_close(refolded, unfolded, rtol=1e-5, atol=1e-5)


def test_merge_after_eval_fold_counts_delta_once() -> None:
    pm = _build("lora")
    pm.eval()
    x = images()
    with torch.no_grad():
        folded = pm(x)
        merged = pm.merge()(x)
    torch.testing.assert_close(merged, folded, rtol=1e-5, atol=1e-5)
