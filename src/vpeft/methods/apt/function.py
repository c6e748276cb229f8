"""APT's Eq. 11–14 as autograd functions that keep only what their backward needs.

    P_k = keys(P, W)          (Eq. 9 / 11)         A = ReLU(X P_kᵀ)           (Eq. 12)
    alpha = max_j A (const)   (Eq. 13)             Z = SA + alpha·(A P)       Y = exp(s)·Z (Eq. 14)

Plain autograd saves, per call, X (for the key gradient), A (for the value gradient and the
ReLU), P_k (for the input gradient) and Z (for the gradient of s). Both functions here save X
and alpha (one number per token); the prompts and key weights are parameters, not activations.
In the backward they recompute P_k from them (p·d·r MACs per batch) and A from X and P_k
(N·p·d MACs per sample, the cost of one of APT's two forward products). With G = ∂L/∂Y and
G_Z = exp(s)·G:

    ∂L/∂SA = G_Z        ∂L/∂s = Σ G_Z ⊙ Z        G_AP = alpha ⊙ G_Z
    ∂L/∂A  = G_AP Pᵀ    ∂L/∂S = ∂L/∂A ⊙ 1[A > 0]  (S = X P_kᵀ, ReLU's gradient as PyTorch's)
    ∂L/∂X  = ∂L/∂S P_k  ∂L/∂P_k = Σ_tokens ∂L/∂Sᵀ X   ∂L/∂P (values) = Σ_tokens Aᵀ G_AP

and ∂L/∂P_k flows to P, W1, W2 (W_p) through the recomputed key transform.

The gradient of s needs Σ G_Z ⊙ Z = Σ G_Z ⊙ SA + Σ G_Z ⊙ ΔX, and Σ G_Z ⊙ ΔX = Σ ∂L/∂A ⊙ A
comes from tensors the backward has anyway. For Σ G_Z ⊙ SA:

* `ApproximatedPromptsFunction` receives SA = proj(attention(X)) as a finished tensor and
  saves Z when s trains (one more N×d tensor per call);
* `FactoredApproximatedPromptsFunction` receives the attention's context O (the output
  projection's input), its two factors — the probabilities and values, O = merge(probs V) —
  and the projection's W_o, b_o, and computes SA = O W_oᵀ + b_o itself. It saves probs and V,
  the very tensors the attention's own probs·V product keeps for its backward (no new storage),
  and recomputes O in the backward (one N×N×d product per sample): with ∂L/∂O = G_Z W_o, which
  it returns as O's gradient anyway, Σ G_Z ⊙ SA = Σ ∂L/∂O ⊙ O + Σ G_Z·b_o.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ...backbones.attention import merge_heads

#: argument positions of `ApproximatedPromptsFunction.apply`
_X, _SA, _S, _P, _TRANSFORM, _WEIGHTS = range(6)
#: argument positions of `FactoredApproximatedPromptsFunction.apply`
_FX, _FO, _FPROBS, _FV, _FW, _FB, _FS, _FP, _FTRANSFORM, _FWEIGHTS = range(10)


def prompt_keys(transform: str, prompts: torch.Tensor, weights: Sequence[torch.Tensor]):
    """P_k from the prompts and the key transform's weights: lowrank P + P W1 W2 (Eq. 11),
    dense P + P W_p (Eq. 9), identity P."""
    if transform == "lowrank":
        down, up = weights
        return prompts + (prompts @ down) @ up
    if transform == "dense":
        return prompts + prompts @ weights[0]
    return prompts


def _delta(
    x: torch.Tensor, prompts: torch.Tensor, transform: str, weights: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha (…, N, 1) and ΔX = alpha·(ReLU(X P_kᵀ) P) (Eq. 12–13)."""
    keys = prompt_keys(transform, prompts, weights).to(x.dtype)
    attn = F.relu(x @ keys.transpose(0, 1))
    alpha = attn.amax(dim=-1, keepdim=True)
    return alpha, alpha * (attn @ prompts.to(x.dtype))


def _delta_backward(
    transform: str,
    x: torch.Tensor,
    alpha: torch.Tensor,
    grad_z: torch.Tensor,
    params: Sequence[torch.Tensor],
    needs_params: Sequence[bool],
    needs_x: bool,
    needs_dot: bool,
) -> tuple[torch.Tensor | None, list[torch.Tensor | None], torch.Tensor | None]:
    """For ∂L/∂ΔX = `grad_z`: ∂L/∂X, the gradients of `params` = [P, *key weights] (None where
    not needed) and Σ grad_z ⊙ ΔX = Σ ∂L/∂A ⊙ A (when `needs_dot`), recomputing P_k and A."""
    prompts = params[0]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(n) for t, n in zip(params, needs_params, strict=True)]
        keys = prompt_keys(transform, leaves[0], leaves[1:]).to(x.dtype)
    plain_keys = keys.detach()
    values = prompts.to(x.dtype)
    attn = F.relu(x @ plain_keys.transpose(0, 1))
    grad_ap = alpha * grad_z
    grad_attn = grad_ap @ values.transpose(0, 1)
    grad_scores = torch.where(attn > 0, grad_attn, 0.0)
    p, d = plain_keys.shape
    grad_x = grad_scores @ plain_keys if needs_x else None
    dot = (grad_attn * attn).sum() if needs_dot else None

    grads: list[torch.Tensor | None] = [None] * len(params)
    trained = [i for i, leaf in enumerate(leaves) if leaf.requires_grad]
    if trained:
        grad_keys = grad_scores.reshape(-1, p).transpose(0, 1) @ x.reshape(-1, d)
        through_keys = torch.autograd.grad(keys, [leaves[i] for i in trained], grad_keys)
        for i, g in zip(trained, through_keys, strict=True):
            grads[i] = g
    if needs_params[0]:
        grad_values = attn.reshape(-1, p).transpose(0, 1) @ grad_ap.reshape(-1, d)
        grads[0] = grads[0] + grad_values.to(prompts.dtype)
    return grad_x, grads, dot


class ApproximatedPromptsFunction(torch.autograd.Function):
    """``apply(x, sa, log_scale, prompts, transform, *key_weights)`` → exp(s)·(SA + ΔX); saves
    X, alpha and (when s trains) Z."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        sa: torch.Tensor,
        log_scale: torch.Tensor,
        prompts: torch.Tensor,
        transform: str,
        *weights: torch.Tensor,
    ) -> torch.Tensor:
        alpha, delta = _delta(x, prompts, transform, weights)
        z = sa + delta
        ctx.transform = transform
        kept_z = z if ctx.needs_input_grad[_S] else None
        ctx.save_for_backward(x, alpha, log_scale, kept_z, prompts, *weights)
        return torch.exp(log_scale).to(sa.dtype) * z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, alpha, log_scale, z, prompts, *weights = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_z = torch.exp(log_scale).to(grad.dtype) * grad
        grad_x, grads, _ = _delta_backward(
            ctx.transform,
            x,
            alpha,
            grad_z,
            [prompts, *weights],
            [needs[_P], *needs[_WEIGHTS:]],
            needs[_X],
            needs_dot=False,
        )
        grad_sa = grad_z if needs[_SA] else None
        grad_s = (
            (grad_z * z).sum().reshape(log_scale.shape).to(log_scale.dtype) if needs[_S] else None
        )
        return (grad_x, grad_sa, grad_s, grads[0], None, *grads[1:])


class FactoredApproximatedPromptsFunction(torch.autograd.Function):
    """``apply(x, context, probs, values, proj_weight, proj_bias, log_scale, prompts, transform,
    *key_weights)`` → exp(s)·(context W_oᵀ + b_o + ΔX), where ``context`` must be
    ``merge_heads(probs @ values)`` (computed by the caller, whose product keeps probs and
    values); saves X, alpha and (for s, W_o) probs and values. Gradients go to X, the context,
    W_o, b_o, s, P and the key weights — probs and values get theirs through the context."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        context: torch.Tensor,
        probs: torch.Tensor,
        values: torch.Tensor,
        proj_weight: torch.Tensor,
        proj_bias: torch.Tensor | None,
        log_scale: torch.Tensor,
        prompts: torch.Tensor,
        transform: str,
        *weights: torch.Tensor,
    ) -> torch.Tensor:
        alpha, delta = _delta(x, prompts, transform, weights)
        z = F.linear(context, proj_weight, proj_bias) + delta
        needs = ctx.needs_input_grad
        recompute = needs[_FS] or needs[_FW]  # both need the context O again
        ctx.transform = transform
        ctx.save_for_backward(
            x,
            alpha,
            probs if recompute else None,
            values if recompute else None,
            proj_weight,
            proj_bias,
            log_scale,
            prompts,
            *weights,
        )
        return torch.exp(log_scale).to(z.dtype) * z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, alpha, probs, values, weight, bias, log_scale, prompts, *weights = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_z = torch.exp(log_scale).to(grad.dtype) * grad
        grad_x, grads, dot = _delta_backward(
            ctx.transform,
            x,
            alpha,
            grad_z,
            [prompts, *weights],
            [needs[_FP], *needs[_FWEIGHTS:]],
            needs[_FX],
            needs_dot=needs[_FS],
        )
        grad_context = grad_z @ weight if needs[_FO] or needs[_FS] else None
        context = merge_heads(probs @ values) if needs[_FS] or needs[_FW] else None
        grad_s = grad_w = grad_b = None
        if needs[_FS]:
            total = (grad_context * context).sum() + dot  # Σ G_Z ⊙ (O W_oᵀ) + Σ G_Z ⊙ ΔX
            if bias is not None:
                total = total + (grad_z * bias).sum()
            grad_s = total.reshape(log_scale.shape).to(log_scale.dtype)
        if needs[_FW]:
            grad_w = grad_z.reshape(-1, grad_z.shape[-1]).transpose(0, 1) @ context.reshape(
                -1, context.shape[-1]
            )
        if needs[_FB]:
            grad_b = grad_z.reshape(-1, grad_z.shape[-1]).sum(0)
        if not needs[_FO]:
            grad_context = None
        return (
            grad_x,
            grad_context,
            None,
            None,
            grad_w,
            grad_b,
            grad_s,
            grads[0],
            None,
            *grads[1:],
        )


def approximated_prompts(
    x: torch.Tensor,
    sa: torch.Tensor,
    log_scale: torch.Tensor,
    prompts: torch.Tensor,
    transform: str,
    weights: Sequence[torch.Tensor],
) -> torch.Tensor:
    """exp(s)·(SA(X) + alpha·(ReLU(X P_kᵀ) P)) with alpha = max_j A a constant (Eq. 12–14),
    saving only X, alpha and (when s trains) Z for the backward."""
    return ApproximatedPromptsFunction.apply(x, sa, log_scale, prompts, transform, *weights)


def factored_approximated_prompts(
    x: torch.Tensor,
    context: torch.Tensor,
    probs: torch.Tensor,
    values: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    log_scale: torch.Tensor,
    prompts: torch.Tensor,
    transform: str,
    weights: Sequence[torch.Tensor],
) -> torch.Tensor:
    """exp(s)·(O W_oᵀ + b_o + ΔX) for the attention context O = merge_heads(probs @ values)
    (Eq. 14 with SA = O W_oᵀ + b_o), saving X, alpha and the attention's own probs and values."""
    return FactoredApproximatedPromptsFunction.apply(
        x, context, probs, values, proj_weight, proj_bias, log_scale, prompts, transform, *weights
    )
