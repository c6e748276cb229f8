"""Efficiency figures: FLOPs (PyTorch's counter + fused attention), activation memory, timing."""

from .flops import (
    ATTENTION_FORMULAS,
    StepFlops,
    attention_flops,
    flop_counter,
    forward_flops,
    output_loss,
    train_step_flops,
)
from .memory import (
    SavedTensorCounter,
    StateBytes,
    TrainingMemory,
    saved_activation_bytes,
    state_bytes,
    training_memory,
)
from .profile import CONTRACT_KEYS, ProfileReport, native_img_size, profile_model

__all__ = [
    "ATTENTION_FORMULAS",
    "CONTRACT_KEYS",
    "ProfileReport",
    "SavedTensorCounter",
    "StateBytes",
    "StepFlops",
    "TrainingMemory",
    "attention_flops",
    "flop_counter",
    "forward_flops",
    "native_img_size",
    "output_loss",
    "profile_model",
    "saved_activation_bytes",
    "state_bytes",
    "train_step_flops",
    "training_memory",
]
