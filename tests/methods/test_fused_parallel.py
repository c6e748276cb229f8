"""The fused parallel-branch path (`vpeft.core.parallel`) computes what the padded path computes.

Reference: the pre-fusion maths, y + Σ pad_rows(branch(x)) with each branch's own forward.
Compared in float64, so rounding cannot hide a wrong fast path behind a loose tolerance.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import vpeft
import vpeft.core.wrapper as wrapper_module
from tests.helpers import BACKBONES, images
from tests.methods import checks
from vpeft.core.parallel import add_rows


def _padded(base: Any, y: torch.Tensor, x: torch.Tensor, branches: Any) -> torch.Tensor:
    for branch, rows in branches:
        y = add_rows(y, branch(x), rows)
    return y


def _compare(pm: vpeft.PeftModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same outputs and gradients; the same seed before each (drop-path, dropout masks)."""
    pm.to(torch.float64)
    x = images().double()
    torch.manual_seed(3)
    fused = checks.outputs_and_grads(pm, x)
    with monkeypatch.context() as m:
        m.setattr(wrapper_module, "add_parallel", _padded)
        torch.manual_seed(3)
        padded = checks.outputs_and_grads(pm, x)
    assert fused.keys() == padded.keys()
    for key in fused:
        torch.testing.assert_close(fused[key], padded[key], rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize("backbone", ["vit", "swin", "pvt_v2"])
@pytest.mark.parametrize(
    "options",
    [
        {"rank": 2, "alpha": 5.0},  # q, v slices of a fused qkv; scale 2.5
        {"rank": 3, "targets": ("q", "k", "v", "proj", "fc1", "fc2")},
    ],
)
def test_fused_lora_equals_padded(backbone: str, options: dict, monkeypatch) -> None:
    pm = checks.build("lora", BACKBONES[backbone], **options)
    checks.perturb_trainables(pm, std=0.1)  # non-zero B: otherwise the deltas vanish
    pm.train()
    _compare(pm, monkeypatch)


@pytest.mark.parametrize("method", ["adapter", "adaptformer"])
def test_other_parallel_branches_equal_padded(method: str, monkeypatch) -> None:
    """Branches without low-rank factors are added in place into their rows."""
    pm = checks.build(method, BACKBONES["vit"])
    checks.perturb_trainables(pm, std=0.1)
    pm.train()
    _compare(pm, monkeypatch)


def test_lora_with_active_dropout_equals_padded(monkeypatch) -> None:
    """Active dropout: one mask per branch, so unfused, but still added in place."""
    pm = checks.build("lora", BACKBONES["vit"], rank=2, dropout=0.3)
    checks.perturb_trainables(pm, std=0.1)
    pm.train()
    _compare(pm, monkeypatch)


class _OpLog(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_qv_lora_uses_one_low_rank_product_and_no_padding() -> None:
    """Per block: no full-width pad, one x·[A_q; A_v]ᵀ product and two in-place addmm_."""
    pm = checks.build("lora", BACKBONES["vit"], rank=2)
    pm.eval()
    depth = len(pm.spec.blocks)
    with torch.no_grad(), _OpLog() as log:
        pm(images())
    assert "aten.constant_pad_nd" not in log.ops
    assert log.ops.count("aten.addmm_") == 2 * depth


def test_fused_lora_counts_the_same_flops(monkeypatch) -> None:
    """The FLOP counter sees the in-place `addmm_` products (vpeft.analysis.INPLACE_FORMULAS)."""
    from vpeft.analysis import train_step_flops

    pm = checks.build("lora", BACKBONES["vit"], rank=2, targets=("q", "v", "fc1"))
    pm.train()
    fused = train_step_flops(pm, images())
    with monkeypatch.context() as m:
        m.setattr(wrapper_module, "add_parallel", _padded)
        padded = train_step_flops(pm, images())
    assert fused == padded
