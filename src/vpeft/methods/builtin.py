"""Importing this module registers every method shipped with vpeft (one module per family)."""

from . import selective  # noqa: F401
from . import vl_adapter as _vl_adapter  # noqa: F401
from .adapters import method as _adapters  # noqa: F401
from .apt import method as _apt  # noqa: F401
from .clip_prompts import method as _clip_prompts  # noqa: F401
from .hyper import method as _hyper  # noqa: F401
from .kronecker import method as _kronecker  # noqa: F401
from .lora import method as _lora  # noqa: F401
from .mtlora import method as _mtlora  # noqa: F401
from .multitask import methods as _multitask  # noqa: F401
from .prompts import deep_kv as _deep_kv  # noqa: F401
from .prompts import prefix as _prefix  # noqa: F401
from .prompts import vpt as _vpt  # noqa: F401
from .spt import method as _spt  # noqa: F401
from .ssf import method as _ssf  # noqa: F401
from .vqt import head2toe_method as _head2toe  # noqa: F401
from .vqt import method as _vqt  # noqa: F401
