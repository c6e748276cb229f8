"""Bottleneck adapters (Houlsby, Pfeiffer, AdaptFormer, scaled parallel): modules and installers."""

from .bottleneck import ACTIVATIONS, Bottleneck, ResidualBottleneck

__all__ = ["ACTIVATIONS", "Bottleneck", "ResidualBottleneck"]
