"""Wrappers that stand in for a backbone module and still answer for it.

A method replaces e.g. a Swin block's ``attn`` with a wrapper; the backbone's own code keeps
calling that slot's methods and reading its attributes (``SwinTransformerBlock.set_input_size``
calls ``self.attn.set_window_size``). `ForwardsToWrapped` sends every attribute lookup the
wrapper itself cannot answer to the module it wraps, so those calls reach the frozen module.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn


class ForwardsToWrapped(nn.Module):
    """Attribute lookups not found on the wrapper go to the wrapped child `WRAPPED`."""

    WRAPPED: ClassVar[str] = "base"

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == self.WRAPPED or name.startswith("__"):
                raise
            wrapped = super().__getattr__(self.WRAPPED)  # AttributeError while being built
            return getattr(wrapped, name)
