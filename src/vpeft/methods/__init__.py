"""Method families, one package (or module) each: a config dataclass, the modules it adds and
the installer, registered by one `register` call. The shared machinery lives in `vpeft.core`;
importing this package registers every shipped family (`builtin`), and no family imports it."""

from ..core.config import MethodConfig, option
from ..core.context import InstallContext
from ..core.registry import MethodInfo, available_methods, get_method, method_infos, register

__all__ = [
    "InstallContext",
    "MethodConfig",
    "MethodInfo",
    "available_methods",
    "get_method",
    "method_infos",
    "option",
    "register",
]

from . import builtin  # noqa: F401  (registers the shipped methods)
