"""Method families. Each module holds a config dataclass, an installer and one `register` call."""

from .config import MethodConfig, option
from .context import InstallContext
from .registry import MethodInfo, available_methods, get_method, method_infos, register

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
