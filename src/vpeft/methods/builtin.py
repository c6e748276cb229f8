"""Importing this module registers every method shipped with vpeft."""

from . import lora, selective  # noqa: F401
