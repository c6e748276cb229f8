"""LoRA: the low-rank branch (`layer`) and its installer (`method`)."""

from .layer import LoraBranch

__all__ = ["LoraBranch"]
