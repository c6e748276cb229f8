"""Method families, one package (or module) each: a config dataclass, the modules it adds and
the installer, registered by one `register` call. The shared machinery lives in `vpeft.core`;
the registry imports every shipped family (`builtin`) on its first look-up (`get_method`,
`available_methods`, `method_infos`), and no family imports it."""

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
