"""FLOPs of a forward pass and of one training step, from PyTorch's own FLOP counter.

Convention: **2 FLOPs per multiply-accumulate**, as `torch.utils.flop_counter` counts, so a
ViT-B/16 forward at 224² is 35.13 GFLOPs (papers that quote MACs, e.g. VPT's 17.6 "GFLOPs" or
APT's counts, report half). Only matrix products are counted — linear layers, convolutions and
attention's two batched products; normalisation, softmax, activations and element-wise ops are
ignored (< 1% on transformers).

Why attention needs help: on CPU, `F.scaled_dot_product_attention` dispatches to
`aten._scaled_dot_product_flash_attention_for_cpu`, which the stock counter does not know, so it
silently counts 0 for it (ViT-B/16 comes out 33.70 instead of 35.13 GFLOPs). `ATTENTION_FORMULAS`
maps every fused attention kernel, forward and backward, to one closed form:

    forward   = 2·B·H·Nq·Nk·d_qk  (Q Kᵀ)  +  2·B·H·Nq·Nk·d_v  (P V)
    backward  = 2 × forward      (dP = dO Vᵀ, dV = Pᵀ dO, dQ = dS K, dK = dSᵀ Q)

The backward is the algorithmic count, the same as what the unfused ("math") attention yields
through its `bmm`s; the score recomputation that flash kernels do internally is not counted (the
stock CUDA formulas count it), so the figures do not depend on which kernel ran.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def attention_flops(
    query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int]
) -> int:
    """FLOPs of softmax(Q Kᵀ) V for (…, Nq, d) queries, (…, Nk, d) keys and (…, Nk, d_v) values.

    The leading dimensions of the query (batch × heads) count the products; keys/values with
    fewer heads (grouped-query attention) are broadcast to the query heads, as the kernels do.
    """
    batch_heads = prod(query_shape[:-2])
    n_q, d_qk = query_shape[-2], query_shape[-1]
    n_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * batch_heads * n_q * n_k * (d_qk + d_v)


def _fused_attention_forward(
    query: Sequence[int], key: Sequence[int], value: Sequence[int], *args: Any, **kwargs: Any
) -> int:
    return attention_flops(query, key, value)


def _fused_attention_backward(
    grad_out: Sequence[int],
    query: Sequence[int],
    key: Sequence[int],
    value: Sequence[int],
    *args: Any,
    **kwargs: Any,
) -> int:
    return 2 * attention_flops(query, key, value)


def _ops(*names: str) -> list[Any]:
    """The aten overload packets among `names` that this torch build has."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


#: aten op -> FLOP formula over argument shapes (see the module docstring).
ATTENTION_FORMULAS: dict[Any, Callable[..., int]] = {
    **{
        op: _fused_attention_forward
        for op in _ops(
            "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_flash_attention",
            "_scaled_dot_product_efficient_attention",
            "_scaled_dot_product_cudnn_attention",
            "_scaled_dot_product_fused_attention_overrideable",
        )
    },
    **{
        op: _fused_attention_backward
        for op in _ops(
            "_scaled_dot_product_flash_attention_for_cpu_backward",
            "_scaled_dot_product_flash_attention_backward",
            "_scaled_dot_product_efficient_attention_backward",
            "_scaled_dot_product_cudnn_attention_backward",
            "_scaled_dot_product_fused_attention_overrideable_backward",
        )
    },
}


def _inplace_addmm(
    self_shape: Sequence[int], a_shape: Sequence[int], b_shape: Sequence[int], *a: Any, **k: Any
) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


#: In-place products the stock counter skips (it registers `addmm`, not `addmm_`); vpeft's fused
#: LoRA path (`vpeft.core.parallel`) adds its low-rank deltas with `addmm_`.
INPLACE_FORMULAS: dict[Any, Callable[..., int]] = {op: _inplace_addmm for op in _ops("addmm_")}


def flop_counter() -> FlopCounterMode:
    """A silent `FlopCounterMode` that also counts fused attention kernels and `addmm_`."""
    return FlopCounterMode(display=False, custom_mapping={**ATTENTION_FORMULAS, **INPLACE_FORMULAS})


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step, split into the forward and the backward pass."""

    forward: int
    backward: int

    @property
    def train_step(self) -> int:
        """Forward + backward (the optimiser update is element-wise and not counted)."""
        return self.forward + self.backward


def output_loss(output: Any) -> torch.Tensor:
    """A scalar loss touching every floating tensor of a model output: Σ mean(t²).

    Generic on purpose (logits, tuples, dicts of dense predictions): profiling needs a backward
    through every output, not a meaningful objective; its cost is element-wise (not counted).
    """
    terms = [t.float().square().mean() for t in _tensors(output) if t.is_floating_point()]
    if not terms:
        raise TypeError(f"model output {type(output).__name__} holds no floating tensor")
    loss = terms[0]
    for term in terms[1:]:
        loss = loss + term
    return loss


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in _tensors(v)]
    if isinstance(output, list | tuple):
        return [t for v in output for t in _tensors(v)]
    return []


def forward_flops(model: nn.Module, inputs: torch.Tensor) -> int:
    """FLOPs of `model(inputs)` (whole batch), run without autograd."""
    with torch.no_grad(), flop_counter() as counter:
        model(inputs)
    return counter.get_total_flops()


def train_step_flops(
    model: nn.Module,
    inputs: torch.Tensor,
    loss_fn: Callable[[Any], torch.Tensor] = output_loss,
) -> StepFlops:
    """FLOPs of forward + backward of `loss_fn(model(inputs))` (whole batch).

    Gradients are left in the `.grad` fields; the caller decides whether to keep them. Autograd
    only runs the products it needs: a frozen layer whose input needs no gradient costs nothing
    in the backward, one whose input does costs 1× its forward (input gradient), a trainable
    one 2× (input and weight gradient).
    """
    with flop_counter() as counter:
        loss = loss_fn(model(inputs))
        forward = counter.get_total_flops()
        if loss.requires_grad:
            loss.backward()
        total = counter.get_total_flops()
    return StepFlops(forward=forward, backward=total - forward)
