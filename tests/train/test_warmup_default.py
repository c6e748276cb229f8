"""The warm-up default scales with the run: min(10, 10% of epochs) (issue 14, smaller items)."""

from __future__ import annotations

import pytest

from vpeft.cli.train import train_config_from_cli
from vpeft.errors import ConfigError
from vpeft.train.config import TrainConfig


@pytest.mark.parametrize(
    ("epochs", "warmup"), [(1, 0.1), (5, 0.5), (10, 1.0), (100, 10.0), (300, 10.0)]
)
def test_default_warmup_is_min_10_and_a_tenth_of_the_epochs(epochs: int, warmup: float) -> None:
    assert TrainConfig(epochs=epochs).warmup_epochs == pytest.approx(warmup)
    assert TrainConfig.from_options({"epochs": str(epochs)}).warmup_epochs == pytest.approx(warmup)


def test_short_cli_runs_need_no_warmup_flag_and_an_explicit_one_still_counts() -> None:
    flags = {"epochs": 3, "warmup_epochs": None}
    assert train_config_from_cli(flags, None).warmup_epochs == pytest.approx(0.3)
    assert train_config_from_cli({"epochs": 3, "warmup_epochs": 0.0}, None).warmup_epochs == 0
    with pytest.raises(ConfigError, match="warmup_epochs"):
        train_config_from_cli({"epochs": 3, "warmup_epochs": 5.0}, None)
