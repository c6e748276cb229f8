"""Importing this module registers every method shipped with vpeft."""

from . import adapters, head2toe, lora, prefix, selective, spt, ssf, vpt, vqt  # noqa: F401
