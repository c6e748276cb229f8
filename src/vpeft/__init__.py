"""vpeft: parameter-efficient transfer learning for vision and vision-language transformers."""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    AdapterFileError,
    BudgetError,
    ConfigError,
    DatasetError,
    UnknownMethodError,
    UnsupportedBackboneError,
    VpeftError,
)
from .methods import available_methods, get_method  # noqa: E402
from .model import PeftModel, Summary, apply, create_backbone, load  # noqa: E402

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
    "apply",
    "available_methods",
    "create_backbone",
    "get_method",
    "load",
]
