"""Shared by the tests that rebuild Polyhistor's parameter table (Liu et al., NeurIPS 2022) with
`summary()` on timm's full-size random-weight backbones and the four PASCAL-Context tasks
(tests/dense/test_param_table.py, tests/methods/test_hyper_counts.py; the `swin_t` / `swin_b`
fixtures are in tests/conftest.py)."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

import vpeft
from vpeft.model import Summary
from vpeft.tasks.dense import pascal_mt_tasks

SWIN_T_DECODERS = 2_549_024  # 4 All-MLP decoders (E = 256) + 4 sets of stage-output norms
SWIN_B_DECODERS = 3_044_384


def pascal_mt_summary(base: nn.Module, method: str, **options: Any) -> Summary:
    """`summary()` of `method` installed on a copy of `base` for the four PASCAL-Context tasks."""
    return vpeft.apply(copy.deepcopy(base), method, tasks=pascal_mt_tasks(), **options).summary()
