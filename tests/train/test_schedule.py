"""The warm-up + cosine schedule at known points (closed form), per step and per epoch."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from vpeft.errors import ConfigError
from vpeft.train.schedule import WarmupCosine, schedule_for

BASE, WARM, MIN = 1e-3, 1e-6, 1e-5


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0, WARM),
        (5, WARM + (BASE - WARM) * 0.5),  # half-way through a 10-unit warm-up
        (10, BASE),  # end of warm-up: the peak
        (55, (BASE + MIN) / 2),  # half-way through the cosine: cos(π/2) = 0
        (40, MIN + 0.5 * (BASE - MIN) * (1 + math.cos(math.pi / 3))),  # a third of the way
        (100, MIN),
    ],
)
def test_closed_form(t, expected):
    s = WarmupCosine(BASE, total=100, warmup=10, warmup_lr=WARM, min_lr=MIN)
    assert math.isclose(s.lr_at(t), expected, rel_tol=1e-12)


def test_monotone_up_then_down_and_no_warmup():
    s = WarmupCosine(BASE, total=100, warmup=10, warmup_lr=WARM, min_lr=MIN)
    values = [s.lr_at(t) for t in range(101)]
    assert all(a < b for a, b in itertools.pairwise(values[:11]))
    assert all(a > b for a, b in itertools.pairwise(values[10:]))
    plain = WarmupCosine(BASE, total=4)
    assert [plain.lr_at(t) for t in range(4)] == pytest.approx(
        [
            BASE,
            BASE * (1 + math.cos(math.pi / 4)) / 2,
            BASE / 2,
            BASE * (1 + math.cos(3 * math.pi / 4)) / 2,
        ]
    )


def test_units_and_group_scales():
    per_step, per_unit = schedule_for("step", 10, 7, BASE, 2, WARM, MIN)
    assert (per_step.total, per_step.warmup, per_unit) == (70, 14, 1)
    per_epoch, per_unit = schedule_for("epoch", 10, 7, BASE, 2, WARM, MIN)
    assert (per_epoch.total, per_epoch.warmup, per_unit) == (10, 2, 7)
    opt = torch.optim.SGD(
        [
            {"params": [nn.Parameter(torch.zeros(1))]},
            {"params": [nn.Parameter(torch.zeros(1))], "lr_scale": 10.0},
        ],
        lr=0.0,
    )
    lr = per_epoch.apply(opt, 13 // per_unit)  # step 13 is in epoch 1 (0-based): mid warm-up
    assert lr == pytest.approx(WARM + (BASE - WARM) * 0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr, 10 * lr])


def test_invalid():
    with pytest.raises(ConfigError):
        WarmupCosine(BASE, total=0)
    with pytest.raises(ConfigError):
        WarmupCosine(BASE, total=5, warmup=5)
    with pytest.raises(ConfigError):
        schedule_for("iteration", 1, 1, BASE, 0, 0, 0)
