"""Importing this module registers every task kind shipped with vpeft."""

from . import classification, dense, vl  # noqa: F401
