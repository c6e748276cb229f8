"""PHM, Compacter, Compacter++: closed form, the shared checks, per-task rules."""

from __future__ import annotations

import pytest
import torch

import vpeft
from tests.helpers import images, tiny_pvt, tiny_swin
from tests.methods import checks
from vpeft.core.task_switch import TaskSwitch
from vpeft.methods.kronecker import PHMAdapter, PHMLinear, kron_sum
from vpeft.tasks import ClassificationTask

METHODS = ["phm", "compacter", "compacter++"]
#: options that make p divide every bottleneck of the tiny backbones (widths 16 / 32)
TINY = {"phm": {"reduction": 4}, "compacter": {}, "compacter++": {}}


def test_kron_sum_is_the_explicit_block_matrix() -> None:
    """Σ_i A_i ⊗ B_i block by block: block (x, y) of size a×b is Σ_i A_i[x, y] B_i."""
    g = torch.Generator().manual_seed(0)
    p, a, b = 2, 3, 4
    rule, fast = torch.randn(p, p, p, generator=g), torch.randn(p, a, b, generator=g)
    torch.testing.assert_close(kron_sum(rule, fast), checks.kron_sum_by_blocks(rule, fast))


def test_compacter_fast_matrices_are_rank_one() -> None:
    layer = PHMLinear(8, 4, p=2, rank=1)
    fast = layer.fast_matrices()
    assert fast.shape == (2, 4, 2)
    for i in range(2):
        torch.testing.assert_close(
            fast[i], torch.outer(layer.fast_left[i, :, 0], layer.fast_right[i, 0])
        )
        assert torch.linalg.matrix_rank(fast[i]) == 1
    rule = torch.randn(2, 2, 2)
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x, rule), x @ kron_sum(rule, fast) + layer.bias)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("factory", [tiny_swin, tiny_pvt], ids=["swin", "pvt_v2"])
def test_kronecker_checks(method: str, factory, tmp_path) -> None:
    opts = TINY[method]
    checks.check_identity_at_init(method, factory, atol=0, **opts)
    checks.check_training_moves_only_trainables(method, factory, **opts)
    checks.check_save_load(method, factory, tmp_path, **opts)


@pytest.mark.parametrize("method", METHODS)
def test_closed_form_count(method: str) -> None:
    """Σ_adapters [2dn/p (PHM) or 2(d+n)·p (rank one) + n + d + 2d] + p³."""
    opts = TINY[method]
    pm = checks.build(method, tiny_swin, **opts)
    cfg = pm.methods[0].config
    p, total = cfg.hypercomplex, cfg.hypercomplex**3
    for block in pm.spec.blocks:
        d = block.dim
        n = d // cfg.reduction
        fast = 2 * d * n // p if cfg.rank == 0 else 2 * (d + n) * cfg.rank
        total += len(cfg.sites) * (fast + n + 3 * d)
    assert pm.summary().trainable_encoder == total


def test_every_task_has_its_own_rule_shared_by_its_layers() -> None:
    tasks = [ClassificationTask("a", num_classes=3), ClassificationTask("b", num_classes=2)]
    pm = vpeft.apply(tiny_swin(0), "compacter", tasks=tasks)
    rule = pm.model.vpeft_phm_rule
    assert isinstance(rule, TaskSwitch) and set(rule.copies) == {"a", "b"}
    switches = [m for m in pm.model.modules() if isinstance(m, TaskSwitch) and m is not rule]
    adapters = [c for s in switches for c in s.copies.values() if isinstance(c, PHMAdapter)]
    assert adapters and all(a._rule is rule for a in adapters)
    s = pm.summary()
    assert s.encoder_shared == 0 and s.encoder_per_task == s.trainable_encoder
    one = vpeft.apply(tiny_swin(0), "compacter", num_classes=3).summary().trainable_encoder
    assert s.trainable_encoder == 2 * one
    out = pm(images())
    assert set(out) == {"a", "b"}


def test_p_must_divide_the_bottleneck() -> None:
    with pytest.raises(vpeft.errors.ConfigError, match="hypercomplex"):
        vpeft.apply(tiny_swin(0), "phm", num_classes=3, hypercomplex=3)
