"""Kronecker (hypercomplex) adapters: PHM, Compacter, Compacter++."""

from .layers import PHMAdapter, PHMLinear, PHMRule, kron_sum

__all__ = ["PHMAdapter", "PHMLinear", "PHMRule", "kron_sum"]
