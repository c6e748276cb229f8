"""Prompt tokens and extra attention keys/values (VPT, Jia et al. 2022; prefix, Li & Liang 2021).

Two ways to give a frozen transformer learnable context:

- **tokens in the sequence** (ViT, HF ViT / CLIP vision / ViLT, at the places the backbone's
  `TokenPath` names): `PromptInsertion` puts p tokens after the class/register tokens (or after
  the whole sequence), `MaskedPromptInsertion` also extends the key mask (ViLT),
  `PromptReplacement` swaps them for a block's own tokens at its input (VPT-deep), and
  `PromptRemoval` / `PromptRemovalAfter` drop them before the final norm (after the last block)
  so pooling sees the plain token layout;
- **extra keys/values** (Swin windows, PVT-v2 after the spatial reduction, prefix tuning
  everywhere): `ExtendedAttention` wraps a block's attention module and lets every query attend to
  keys/values supplied by its sources (`PromptKeyValues`, `PrefixKeyValues`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...backbones.attention import AttentionOps, attention_ops, split_heads
from ...backbones.spec import AttentionSpec
from ...core.forwarding import ForwardsToWrapped
from ...core.wrapper import AdaptedLayer
from ...errors import ConfigError


def prompt_init_bound(patch_size: int, width: int) -> float:
    """v = √(6 / (3·patch² + D)): Xavier-uniform bound of the patch projection (VPT, §3.2)."""
    return math.sqrt(6.0 / (3 * patch_size**2 + width))


class PromptTokens(nn.Module):
    """p learnable tokens (p, D), init uniform(−v, v), with dropout applied at every use."""

    def __init__(self, num_tokens: int, width: int, bound: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(num_tokens, width).uniform_(-bound, bound))
        self.dropout = nn.Dropout(dropout)

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[0]

    def forward(self, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """(batch, p, D); in training each sample gets its own dropout mask."""
        # repeat, not expand: an expand-view of a parameter made under no_grad confuses
        # FlopCounterMode's module tracker (requires_grad without grad_fn)
        return self.dropout(self.tokens.to(dtype).unsqueeze(0).repeat(batch, 1, 1))


def _splice(x: torch.Tensor, at: int, tokens: torch.Tensor, drop: int) -> torch.Tensor:
    """x[:, :at] ++ tokens ++ x[:, at + drop:] on the token axis."""
    return torch.cat([x[:, :at], tokens, x[:, at + drop :]], dim=1)


def _position(at: int | None, length: int, span: int) -> int:
    """Index of a `span`-token slice: `at`, or the last `span` tokens when `at` is None."""
    return length - span if at is None else at


class PromptInsertion(ForwardsToWrapped):
    """`base` (e.g. ViT's `norm_pre`, HF ViT's `embeddings`), then [x_prefix, P, x_rest] (VPT
    Eq. 1); ``at=None`` appends the prompts after the whole sequence."""

    def __init__(self, base: nn.Module, prompts: PromptTokens, at: int | None) -> None:
        super().__init__()
        self.base = base
        self.prompts = prompts
        self.at = at

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        x = self.base(x, *args, **kwargs)
        at = _position(self.at, x.shape[1], 0)
        return _splice(x, at, self.prompts(x.shape[0], x.dtype), drop=0)


class MaskedPromptInsertion(PromptInsertion):
    """For an entry module returning ``(tokens, key_mask)`` (ViLT's embeddings): inserts the
    prompts into the tokens and ones into the (B, N) mask, so every token attends to them."""

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = self.base(*args, **kwargs)
        at = _position(self.at, x.shape[1], 0)
        prompts = self.prompts(x.shape[0], x.dtype)
        ones = torch.ones_like(mask[:, :1]).expand(-1, prompts.shape[1])
        return _splice(x, at, prompts, drop=0), _splice(mask, at, ones, drop=0)


class PromptReplacement(ForwardsToWrapped):
    """A block whose input prompt slice is replaced by its own prompts (VPT-deep Eq. 2).

    The previous block's `drop` prompt outputs (default: as many as this block's prompts) are
    discarded; ``drop=0`` inserts the prompts instead (the first prompted block when only the
    last blocks are prompted). ``at=None``: the prompts are the last tokens of the sequence.
    Extra block arguments pass through and the block's other attributes and methods are
    reachable on the wrapper.
    """

    WRAPPED = "block"

    def __init__(
        self, block: nn.Module, prompts: PromptTokens, at: int | None, drop: int | None = None
    ) -> None:
        super().__init__()
        self.block = block
        self.prompts = prompts
        self.at = at
        self.drop = prompts.num_tokens if drop is None else drop

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        tokens = self.prompts(x.shape[0], x.dtype)
        at = _position(self.at, x.shape[1], self.drop)
        return self.block(_splice(x, at, tokens, drop=self.drop), *args, **kwargs)


class PromptRemoval(ForwardsToWrapped):
    """Drop the p prompt tokens at `at` (None: the last p), then `base` (the final norm, per
    token: same result)."""

    def __init__(self, base: nn.Module, at: int | None, num_tokens: int) -> None:
        super().__init__()
        self.base = base
        self.at = at
        self.num_tokens = num_tokens

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        at = _position(self.at, x.shape[1], self.num_tokens)
        return _splice(x, at, x[:, :0], drop=self.num_tokens)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.base(self.drop(x), *args, **kwargs)


class PromptRemovalAfter(PromptRemoval):
    """`base` (the last block, when no later module sees the whole sequence, e.g. CLIP
    vision), then drop the p prompt tokens from its output."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.drop(self.base(x, *args, **kwargs))


class PromptKeyValues(nn.Module):
    """VPT prompts as extra keys/values: p tokens in the attention's input space, projected by
    the module's own frozen k/v layers (`ops.key_value`). Their query outputs are never computed.

    Dropout draws one mask per forward, shared by the batch (the tokens are projected once).
    """

    def __init__(self, prompts: PromptTokens) -> None:
        super().__init__()
        self.prompts = prompts

    def forward(self, ops: AttentionOps) -> tuple[torch.Tensor, torch.Tensor]:
        return ops.key_value(self.prompts(1, self.prompts.tokens.dtype))


class PrefixKeyValues(nn.Module):
    """Prefix tuning: learnable keys and values (p, H·d) prepended to one layer's K and V.

    Init N(0, std²) for both, so the prefixes start with small logits (q·k ≈ 0) and small values
    yet both receive gradients; this is not an identity at init (they take attention mass).
    """

    def __init__(self, num_tokens: int, width: int, num_heads: int, std: float) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.randn(num_tokens, width) * std)
        self.values = nn.Parameter(torch.randn(num_tokens, width) * std)
        self.num_heads = num_heads

    def forward(self, ops: AttentionOps) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            split_heads(self.keys.unsqueeze(0), self.num_heads),
            split_heads(self.values.unsqueeze(0), self.num_heads),
        )


class ExtendedAttention(ForwardsToWrapped):
    """A frozen attention module whose queries also attend to the keys/values of `sources`.

    softmax(q [K_e; K]ᵀ·s + [0 | bias]) [V_e; V]: extra keys get zero position bias and are
    visible through every mask (Swin shift mask, PVT after the spatial reduction). The module's
    own forward arguments (`attn_mask`, `mask`, `feat_size`) pass through unchanged, and its
    other attributes and methods (e.g. Swin's ``set_window_size``) are reachable on the wrapper.
    """

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__()
        self.base = spec.module
        self.ops = attention_ops(spec)
        self.sources = nn.ModuleDict()

    @classmethod
    def wrap(cls, spec: AttentionSpec) -> ExtendedAttention:
        """The wrapper around the block's attention, installing one if there is none yet.

        Methods that wrap the whole attention module in an `AdaptedLayer` (e.g. Houlsby's
        adapter after attention) act on its output, so the extended attention goes inside them:
        ``AdaptedLayer(base=ExtendedAttention(attention))`` whichever was installed first.
        """
        holder, attr = spec.parent, spec.attr
        current = getattr(holder, attr)
        while isinstance(current, AdaptedLayer):
            holder, attr, current = current, "base", current.base
        if isinstance(current, cls):
            return current
        if current is not spec.module:
            raise ConfigError(
                f"the attention of this block is already replaced by {type(current).__name__}; "
                "install prompt/prefix methods before methods that replace attention"
            )
        wrapper = cls(spec)
        setattr(holder, attr, wrapper)
        return wrapper

    def add_source(self, name: str, source: nn.Module) -> None:
        if name in self.sources:
            raise ConfigError(f"{name!r} keys/values are already installed in this attention layer")
        self.sources[name] = source

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # transformers layers may pass the input by keyword (CLIP: hidden_states=...)
        x, rest = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
        pairs = [source(self.ops) for source in self.sources.values()]
        k_extra = torch.cat([k for k, _ in pairs], dim=2)
        v_extra = torch.cat([v for _, v in pairs], dim=2)
        return self.ops.forward_extra_kv(x, k_extra, v_extra, *rest, **kwargs)
