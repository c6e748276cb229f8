"""Training and evaluation: optimisers, schedules, the loop, checkpoints, distributed runs."""

from .checkpoint import CheckpointError
from .config import TrainConfig
from .evaluate import EvalResult, evaluate
from .loop import TrainResult, train
from .optim import build_optimizer, decay_decisions, no_weight_decay, param_groups
from .schedule import WarmupCosine

__all__ = [
    "CheckpointError",
    "EvalResult",
    "TrainConfig",
    "TrainResult",
    "WarmupCosine",
    "build_optimizer",
    "decay_decisions",
    "evaluate",
    "no_weight_decay",
    "param_groups",
    "train",
]
