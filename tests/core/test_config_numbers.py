"""Option numbers (issue 14, smaller items): G suffix, non-numbers and non-finite values refused,
LoRA rank bounded by the matrix it adapts."""

from __future__ import annotations

import math

import pytest

import vpeft
from tests.helpers import tiny_vit
from vpeft.core.config import _parse_number
from vpeft.errors import ConfigError
from vpeft.methods.lora.method import LoraConfig
from vpeft.methods.spt import parse_budget
from vpeft.methods.spt.method import SptConfig


def test_g_suffix_is_1e9_like_m_and_k() -> None:
    assert _parse_number("1G") == 1e9 and _parse_number("0.5g") == 5e8
    assert SptConfig.from_options({"budget": "1G"}).budget == 1_000_000_000
    assert SptConfig.from_options({"budget": "100M"}).budget == 100_000_000
    assert parse_budget("1G") == 1_000_000_000


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", math.nan, math.inf])
def test_non_finite_numbers_are_config_errors(value) -> None:
    with pytest.raises(ConfigError, match="finite"):
        LoraConfig.from_options({"alpha": value})


@pytest.mark.parametrize("value", [[1, 2], None, {"a": 1}, b"8", 2.5, "2.5", 2**40, "1e12"])
def test_wrong_kinds_of_integer_are_config_errors(value) -> None:
    with pytest.raises(ConfigError, match="rank"):
        LoraConfig.from_options({"rank": value})


def test_lora_rank_above_the_matrix_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"rank 1000000 is larger than min\(d_in, d_out\) = 32"):
        vpeft.apply(tiny_vit(0), "lora", num_classes=3, rank=1_000_000)
    pm = vpeft.apply(tiny_vit(0), "lora", num_classes=3, rank=32)  # full rank is allowed
    assert pm.summary().trainable_encoder > 0
