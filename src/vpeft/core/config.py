"""Base class of method configs: typed fields with defaults and help, validated on creation."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Self

from ..errors import ConfigError


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with a default and a one-line help text."""
    if isinstance(default, list | dict | set):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs
        )
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


@dataclasses.dataclass
class MethodConfig:
    """Options of one method. Subclasses add fields with `option(...)` and checks in `validate`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` on invalid values. Subclasses extend."""

    # -- helpers for validate() -----------------------------------------------------------
    def _require(self, condition: bool, message: str) -> None:
        if not condition:
            raise ConfigError(f"{type(self).__name__}: {message}")

    # -- conversion -----------------------------------------------------------------------
    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Field name -> help text (for `--help` and docs)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Self:
        """Build from keyword options; strings (from the CLI) are parsed by the field's type."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for {cls.__name__}; valid options: {sorted(names)}"
            )
        values = {k: _coerce(k, v, hints[k]) for k, v in options.items()}
        return cls(**values)

    def to_tensors(self) -> dict[str, Any]:
        """Tensors this config carries beyond JSON options (e.g. an SPT plan's indices)."""
        return {}

    @classmethod
    def from_saved(cls, options: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
        """Keyword options that rebuild this config from a saved file's options and tensors."""
        return dict(options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the options (round-trips through `from_options`)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert `value` (possibly a CLI string) to the annotated type `hint`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() == "none")
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"option {name}={value!r}: " + "; ".join(errors))
    if origin in (tuple, list):
        items = value
        if isinstance(value, str):
            text = value.strip()
            try:
                items = (
                    json.loads(text) if text.startswith("[") else [s for s in text.split(",") if s]
                )
            except (json.JSONDecodeError, RecursionError):
                raise ConfigError(
                    f"option {name} expects a list (a,b or [a, b]), got {value!r}"
                ) from None
        if not isinstance(items, list | tuple):
            raise ConfigError(f"option {name} expects a list, got {value!r}")
        inner = args[0] if args else str
        converted = [_coerce(name, item, inner) for item in items]
        return tuple(converted) if origin is tuple else converted
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"option {name} must be one of {list(args)}, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"option {name} expects true/false, got {value!r}")
    if hint in (int, float):
        return _coerce_number(name, value, hint)
    if hint is str:
        return str(value)
    return value


#: Integer options beyond this magnitude are refused (no size, count or budget is that large;
#: it also keeps huge values from reaching tensor constructors).
MAX_INT_OPTION = 2**31 - 1


def _coerce_number(name: str, value: Any, hint: type) -> int | float:
    """A finite int / float option from a number or a CLI string; `ConfigError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"option {name} expects a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = _parse_number(value)
        except ValueError:
            raise ConfigError(f"option {name} expects a number, got {value!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"option {name} must be a finite number, got {value!r}")
    if hint is float:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"option {name} expects an integer, got {value!r}")
    if abs(value) > MAX_INT_OPTION:
        raise ConfigError(f"option {name}={value!r} is out of range (|value| <= {MAX_INT_OPTION})")
    return int(value)


def _parse_number(text: str) -> float:
    """Parse '8', '0.1', '1e-4', '0.4M', '200k', '1G' (G = 1e9, M = 1e6, k = 1e3)."""
    text = text.strip()
    scale = {"k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9}.get(text[-1:])
    if scale is not None:
        return float(text[:-1]) * scale
    return float(text)
