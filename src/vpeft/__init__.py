"""vpeft: parameter-efficient transfer learning for vision and vision-language transformers."""

__version__ = "0.1.0"

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
