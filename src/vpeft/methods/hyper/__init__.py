"""Hypernetwork methods: Hyperformer, Polyhistor and Polyhistor-Lite (multi-task)."""

from .functional import AdapterWeights, adapter_forward, kronecker_sum, kronecker_sum_vector
from .networks import GeneratedAdapter, LayerHypernet, LiteHypernet

__all__ = [
    "AdapterWeights",
    "GeneratedAdapter",
    "LayerHypernet",
    "LiteHypernet",
    "adapter_forward",
    "kronecker_sum",
    "kronecker_sum_vector",
]
