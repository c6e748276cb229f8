"""MTLoRA (Agiza, Neseem, Reda, CVPR 2024): task-agnostic and task-specific low-rank adaptation
of a hierarchical backbone for dense multi-task learning. See docs/methods/mtlora.md."""

from .layers import MtLoraBlock, MtLoraLinear

__all__ = ["MtLoraBlock", "MtLoraLinear"]
