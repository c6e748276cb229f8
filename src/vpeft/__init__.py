"""vpeft: parameter-efficient transfer learning for vision and vision-language transformers.

The public names are imported on first use (PEP 562 ``__getattr__``), so that ``import vpeft``
and the command line's ``--help`` do not pay for torch and timm; ``vpeft.apply`` and
``from vpeft import apply`` work as before.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_LAZY: dict[str, str] = {
    "AdapterFileError": "errors",
    "BudgetError": "errors",
    "ConfigError": "errors",
    "DatasetError": "errors",
    "UnknownMethodError": "errors",
    "UnsupportedBackboneError": "errors",
    "VpeftError": "errors",
    "adapt": "adapt",
    "load_adapters": "adapters",
    "with_adapters": "adapters",
    "create_backbone": "factory",
    "available_methods": "methods",
    "get_method": "methods",
    "PeftModel": "model",
    "Summary": "model",
    "apply": "model",
    "load": "model",
}

__all__ = [
    "AdapterFileError",
    "BudgetError",
    "ConfigError",
    "DatasetError",
    "PeftModel",
    "Summary",
    "UnknownMethodError",
    "UnsupportedBackboneError",
    "VpeftError",
    "__version__",
    "adapt",
    "apply",
    "available_methods",
    "create_backbone",
    "get_method",
    "load",
    "load_adapters",
    "with_adapters",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static type checkers and IDEs see the eager imports
    from .adapt import adapt
    from .adapters import load_adapters, with_adapters
    from .errors import (
        AdapterFileError,
        BudgetError,
        ConfigError,
        DatasetError,
        UnknownMethodError,
        UnsupportedBackboneError,
        VpeftError,
    )
    from .factory import create_backbone
    from .methods import available_methods, get_method
    from .model import PeftModel, Summary, apply, load
