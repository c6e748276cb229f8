"""Exception types raised by vpeft. Every message says what was wrong and what to do."""

from __future__ import annotations


class VpeftError(Exception):
    """Base class of every error vpeft raises on purpose."""


class UnknownMethodError(VpeftError, KeyError):
    """A method name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnsupportedBackboneError(VpeftError):
    """A model whose family has no backbone description, or a method/backbone mismatch."""


class ConfigError(VpeftError, ValueError):
    """An invalid method option (wrong type, out of range, unknown key)."""


class AdapterFileError(VpeftError):
    """A saved vpeft file that is corrupted, from an unknown method, or for another backbone."""


class DatasetError(VpeftError):
    """A dataset folder that is missing or does not follow the expected layout."""


class BudgetError(VpeftError, ValueError):
    """A parameter budget that cannot be met."""


class OutputError(VpeftError):
    """An output path that cannot be used: a file where a folder is needed (or the reverse), an
    unwritable location, or a folder locked by another running job."""


class TrainingDivergedError(VpeftError):
    """A training run whose loss became NaN or infinite."""
