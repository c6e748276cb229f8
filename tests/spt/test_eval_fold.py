"""SPT's sparse deltas and LoRA pairs fold into the frozen weights at eval and are restored.

Checks: folded outputs equal the unfolded ones; frozen weights after train → eval → train are
bit-identical; an eval-mode forward that needs gradients does not fold; a δ changed while folded
is re-folded; the folded forward runs no sparse kernels and counts the plain model's FLOPs (no
LoRA products); gradients after an eval fold equal those of a model never evaluated; files
saved while folded hold the adapter, not folded weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors import safe_open
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import vpeft
from tests.helpers import BACKBONES, images
from tests.methods import checks
from tests.spt.helpers import crafted_plan
from vpeft.core.structure import plain_structure
from vpeft.methods.spt import SparseDelta, SparseLinearDelta
from vpeft.methods.spt.structured import SptLora

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


def _forward_flops(model, x: torch.Tensor, grad: bool = False) -> int:
    with torch.set_grad_enabled(grad), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("backbone", ["vit", "swin"])
def test_folded_lora_costs_the_plain_models_flops(backbone: str) -> None:
    pm = _build("lora", backbone)
    assert any(isinstance(m, SptLora) for m in pm.modules())
    x = images()
    pm.eval()
    with torch.enable_grad():
        unfolded = pm(x).detach()
    unfolded_flops = _forward_flops(pm, x, grad=True)  # δ's gradient wanted: nothing folds
    with torch.no_grad():
        folded = pm(x)
    torch.testing.assert_close(folded, unfolded, rtol=1e-5, atol=1e-5)
    plain_flops = _forward_flops(copy.deepcopy(pm).merge().eval(), x)
    assert _forward_flops(pm, x) == plain_flops < unfolded_flops


def test_gradients_after_an_eval_fold_are_unchanged() -> None:
    pm = _build("lora")
    never = copy.deepcopy(pm)
    x = images()
    pm.eval()
    with torch.no_grad():
        pm(x)  # folds sparse deltas and LoRA pairs
    pm.train()
    for model in (pm, never):
        torch.manual_seed(3)  # same dropout / drop-path masks
        model(x).square().sum().backward()
    grads = {n: p.grad for n, p in never.named_parameters() if p.requires_grad}
    assert any(isinstance(m, SptLora) for m in pm.modules())
    for name, p in pm.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.grad, grads[name]), name


def test_file_saved_while_folded_holds_the_adapter(tmp_path) -> None:
    pm = _build("lora")
    x = images()
    trained = {n: p.detach().clone() for n, p in pm.trainable_parameters().items()}
    pm.eval()
    with torch.no_grad():
        expected = pm(x)  # folded from here on
    pm.save(tmp_path / "spt.safetensors")
    with safe_open(str(tmp_path / "spt.safetensors"), framework="pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys() if k in trained}  # noqa: SIM118
    assert saved.keys() == trained.keys()
    assert all(torch.equal(saved[k], trained[k]) for k in trained)
    loaded = vpeft.load(tmp_path / "spt.safetensors", base=BACKBONES["vit"](0)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)


def test_plain_structure_runs_the_unfolded_backbone() -> None:
    """The disable-adapters context swaps wrappers out; it must not run folded weights."""
    pm, never = _build("lora").eval(), _build("lora").eval()
    x = images()
    with torch.no_grad():
        pm(x)  # folds
        with plain_structure(pm.model):
            plain = pm.model(x)
        with plain_structure(never.model):
            expected = never.model(x)
    torch.testing.assert_close(plain, expected, rtol=0, atol=0)
