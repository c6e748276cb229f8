"""The APT module (Wu et al., "Approximated Prompt Tuning for Vision-Language Pre-trained
Models", Eq. 11–14) and how it reaches the attention sub-layer's input.

    P_k   = P + P W1 W2            key transform "lowrank" (Eq. 11); "identity": P_k = P;
                                   "dense": P_k = P + P W_p, W_p ∈ R^{d×d} (Eq. 9)
    A     = ReLU(X P_kᵀ)           (B, N, p): ReLU instead of softmax (Eq. 12)
    alpha = max_j A[..., j]        (B, N, 1), a stop-gradient constant per token (Eq. 13)
    ΔX    = alpha · (A @ P)        values are the raw prompts
    X'    = exp(s) · (SA(X) + ΔX)  (Eq. 14)

X is the attention sub-layer's input (the LN1 output of a pre-norm block, the query-side
stream of a cross-attention) and SA(X) its output after the output projection. The module sits
on the output projection as a sequential piece of an `AdaptedLayer` (before any dropout and
residual add); `AttentionInputTap` on the attention module records X for it. Both run in the
same forward of the same attention, input first. The forward runs through
`function.ApproximatedPromptsFunction`, which saves only X, alpha and (when s trains) SA + ΔX
for the backward; `reference` is the same maths through plain autograd.

Where vpeft runs the attention's maths itself (ViLT's eager attention, `ViltAttentionOps`),
`FactoredAttentionTap` also keeps the context O (the output projection's input) with its
factors, probs and V; when APT is then the only piece on a plain `nn.Linear` projection it runs
`function.FactoredApproximatedPromptsFunction` on O with W_o, b_o, which keeps the attention's
own probs and V instead of SA + ΔX for the gradient of s (one N×d tensor less per layer).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...backbones.attention import ViltAttentionOps, attention_ops, merge_heads
from ...backbones.spec import AttentionSpec
from ...core.forwarding import ForwardsToWrapped
from .function import approximated_prompts, factored_approximated_prompts, prompt_keys

KeyTransform = Literal["lowrank", "identity", "dense"]
KEY_TRANSFORMS: tuple[str, ...] = ("lowrank", "identity", "dense")
#: std of the normal init of P, W1, W2 (and W_p): the reference implementation's effective init
INIT_STD = 0.02


class ApproximatedPrompts(nn.Module):
    """p prompts (p, d), the key transform and the scale s of one attention sub-layer.

    `forward(x, sa)` returns exp(s)·(sa + ΔX(x)). Parameters: P (p·d), W1, W2 (2·d·r,
    lowrank) or W_p (d², dense), s (1, trainable when `learn_scale`, else a buffer).
    """

    def __init__(
        self,
        dim: int,
        num_prompts: int,
        rank: int = 4,
        key_transform: KeyTransform = "lowrank",
        learn_scale: bool = True,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.key_transform = key_transform
        self.prompts = nn.Parameter(torch.randn(num_prompts, dim) * INIT_STD)
        if key_transform == "lowrank":
            self.down = nn.Parameter(torch.randn(dim, rank) * INIT_STD)  # W1
            self.up = nn.Parameter(torch.randn(rank, dim) * INIT_STD)  # W2
        elif key_transform == "dense":
            self.key_weight = nn.Parameter(torch.randn(dim, dim) * INIT_STD)  # W_p
        scale = torch.zeros(())
        if learn_scale:
            self.log_scale = nn.Parameter(scale)
        else:
            self.register_buffer("log_scale", scale)
        self.attn_dropout = attn_dropout
        self.dropout = nn.Dropout(attn_dropout) if attn_dropout > 0 else nn.Identity()

    def key_weights(self) -> list[torch.Tensor]:
        """W1, W2 (lowrank), W_p (dense) or nothing (identity)."""
        if self.key_transform == "lowrank":
            return [self.down, self.up]
        if self.key_transform == "dense":
            return [self.key_weight]
        return []

    def keys(self) -> torch.Tensor:
        """P_k (p, d) from the raw prompts (Eq. 9 / 11)."""
        return prompt_keys(self.key_transform, self.prompts, self.key_weights())

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """ΔX = alpha · (ReLU(X P_kᵀ) @ P), alpha = max over prompts, detached (Eq. 12–13)."""
        keys = self.keys().to(x.dtype)
        attn = F.relu(x @ keys.transpose(0, 1))
        alpha = attn.amax(dim=-1, keepdim=True).detach()
        return alpha * (self.dropout(attn) @ self.prompts.to(x.dtype))

    def reference(self, x: torch.Tensor, sa: torch.Tensor) -> torch.Tensor:
        """exp(s) · (SA(X) + ΔX) (Eq. 14) through plain autograd (saves X, A, P_k and Z)."""
        return torch.exp(self.log_scale).to(sa.dtype) * (sa + self.delta(x))

    def forward(self, x: torch.Tensor, sa: torch.Tensor) -> torch.Tensor:
        """exp(s) · (SA(X) + ΔX) (Eq. 14); the same values as `reference`, through
        `ApproximatedPromptsFunction`, which saves only X, alpha and Z for the backward. Attention
        dropout during training draws a mask the function does not model: `reference` then."""
        if self.training and self.attn_dropout > 0:
            return self.reference(x, sa)
        return approximated_prompts(
            x, sa, self.log_scale, self.prompts, self.key_transform, self.key_weights()
        )

    def forward_factored(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        probs: torch.Tensor,
        values: torch.Tensor,
        proj: nn.Linear,
    ) -> torch.Tensor:
        """exp(s) · (proj(O) + ΔX) for the attention context O = merge_heads(probs @ values):
        `forward(x, proj(context))`, through `FactoredApproximatedPromptsFunction`, which keeps
        probs and values (the attention's own saved tensors) instead of Z for the gradient of s."""
        if self.training and self.attn_dropout > 0:
            return self.reference(x, proj(context))
        return factored_approximated_prompts(
            x, context, probs, values, proj.weight, proj.bias,
            self.log_scale, self.prompts, self.key_transform, self.key_weights(),
        )  # fmt: skip

    def extra_repr(self) -> str:
        p, d = self.prompts.shape
        return f"num_prompts={p}, dim={d}, key_transform={self.key_transform}"


class AttentionInputTap(ForwardsToWrapped):
    """Runs the attention module `base` unchanged and keeps its input X (the first positional
    argument, or ``hidden_states=`` as transformers CLIP passes it)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.last: torch.Tensor | None = None

    @classmethod
    def wrap(cls, parent: nn.Module, attr: str) -> AttentionInputTap:
        """The tap at `parent.attr` (looking through vpeft wrappers named `base`), installing
        one directly around the attention module if there is none yet."""
        module = getattr(parent, attr)
        probe = module
        while True:
            if isinstance(probe, cls):
                return probe
            if not hasattr(probe, "_modules") or "base" not in probe._modules:
                break
            probe = probe._modules["base"]
        tap = cls(module)
        setattr(parent, attr, tap)
        return tap

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.last = args[0] if args else kwargs["hidden_states"]
        return self.base(*args, **kwargs)


class FactoredAttentionTap(AttentionInputTap):
    """`AttentionInputTap` for ViLT's attention, run through vpeft's own eager maths
    (`ViltAttentionOps`, bit-identical to the module's forward): it also keeps, while the
    output projection runs, the context O = merge_heads(probs @ V) with its factors probs and V,
    for `TappedApt.fused_forward`."""

    def __init__(self, base: nn.Module, ops: ViltAttentionOps) -> None:
        super().__init__(base)
        self.ops = ops
        #: (O, probs, V) of the running forward, between the probs·V product and the projection
        self.factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """`ViltAttention`'s forward: (output,) or (output, probs)."""
        self.last = hidden_states
        probs, values = self.ops.context_factors(hidden_states, attention_mask)
        # matmul folds (B, H) into one batch axis; with B > 1 the head-split V (a view) cannot
        # be folded in place, so matmul would save a private copy and APT's function, keeping V,
        # a second storage: made contiguous here, both keep this one tensor
        values = values.contiguous()
        context = merge_heads(torch.matmul(probs, values))
        self.factors = (context, probs, values)
        try:
            out = self.ops.project(context)
        finally:
            self.factors = None
        return (out, probs) if output_attentions else (out,)


def tap_attention(attention: AttentionSpec) -> AttentionInputTap:
    """The tap that records X for APT at `attention`: a `FactoredAttentionTap` directly around
    ViLT's still-plain attention module, else an `AttentionInputTap` (installed once, shared by
    every APT piece on this attention)."""
    parent, attr = attention.parent, attention.attr
    module = getattr(parent, attr)
    if attention.kind == "hf-vilt" and module is attention.module:
        ops = attention_ops(attention)
        assert isinstance(ops, ViltAttentionOps)
        tap: AttentionInputTap = FactoredAttentionTap(module, ops)
        setattr(parent, attr, tap)
        return tap
    return AttentionInputTap.wrap(parent, attr)


class TappedApt(nn.Module):
    """Sequential piece on the output projection: y ↦ apt(X, y) with X read from `tap`."""

    def __init__(self, apt: nn.Module, tap: AttentionInputTap) -> None:
        super().__init__()
        self.apt = apt
        object.__setattr__(self, "tap", tap)  # a reference, not a submodule (named once)

    def take_x(self) -> torch.Tensor:
        x = self.tap.last
        if x is None:
            raise RuntimeError("APT ran before its attention module saw its input")
        self.tap.last = None  # one use per attention call; never a stale X
        return x

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.apt(self.take_x(), y)

    def fused_forward(
        self, base: nn.Module, context: torch.Tensor, *args: object, **kwargs: object
    ) -> torch.Tensor | None:
        """apt(X, base(context)) in one function (`AdaptedLayer` calls this when APT is the only
        piece on the projection `base`) when the tap holds the factors of this very `context`
        and `base` is a plain `nn.Linear` called with the context alone; None (the generic
        path) otherwise, e.g. for other attention kinds (timm's attention module, called with
        `attn_mask`), a wrapped projection, or per-task copies routing a mixed batch."""
        factors = getattr(self.tap, "factors", None)
        run = getattr(self.apt, "forward_factored", None)  # absent while no single task runs
        plain = type(base) is nn.Linear and not args and not kwargs
        if factors is None or factors[0] is not context or not plain or not run:
            return None
        _, probs, values = factors
        return run(self.take_x(), context, probs, values, base)
