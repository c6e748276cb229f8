"""`TrainConfig` and its helpers; defined in `vpeft.core.train_config`, which imports no torch, so
that the command line can build ``vpeft train --help`` from it without importing the training
loop (importing this module runs `vpeft.train`'s ``__init__``, which does)."""

from ..core.train_config import TRAJECTORY_FIELDS, TrainConfig, default_warmup_epochs

__all__ = ["TRAJECTORY_FIELDS", "TrainConfig", "default_warmup_epochs"]
