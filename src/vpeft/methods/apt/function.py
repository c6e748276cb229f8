"""APT's Eq. 11–14 as one autograd function that keeps only what its backward needs.

    P_k = keys(P, W)          (Eq. 9 / 11)         A = ReLU(X P_kᵀ)           (Eq. 12)
    alpha = max_j A (const)   (Eq. 13)             Z = SA + alpha·(A P)       Y = exp(s)·Z (Eq. 14)

Plain autograd saves, per call, X (for the key gradient), A (for the value gradient and the
ReLU), P_k (for the input gradient) and Z (for the gradient of s). This function saves X, alpha
(one number per token) and — only when s trains — Z; the prompts and key weights are
parameters, not activations. In the backward it recomputes P_k from them (p·d·r MACs per batch)
and A from X and P_k (N·p·d MACs per sample, the cost of one of APT's two forward products).
With G = ∂L/∂Y and G_Z = exp(s)·G:

    ∂L/∂SA = G_Z        ∂L/∂s = Σ G_Z ⊙ Z        G_AP = alpha ⊙ G_Z
    ∂L/∂A  = G_AP Pᵀ    ∂L/∂S = ∂L/∂A ⊙ 1[A > 0]  (S = X P_kᵀ, ReLU's gradient as PyTorch's)
    ∂L/∂X  = ∂L/∂S P_k  ∂L/∂P_k = Σ_tokens ∂L/∂Sᵀ X   ∂L/∂P (values) = Σ_tokens Aᵀ G_AP

and ∂L/∂P_k flows to P, W1, W2 (W_p) through the recomputed key transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

#: argument positions of `ApproximatedPromptsFunction.apply`
_X, _SA, _S, _P, _TRANSFORM, _WEIGHTS = range(6)


def prompt_keys(transform: str, prompts: torch.Tensor, weights: Sequence[torch.Tensor]):
    """P_k from the prompts and the key transform's weights: lowrank P + P W1 W2 (Eq. 11),
    dense P + P W_p (Eq. 9), identity P."""
    if transform == "lowrank":
        down, up = weights
        return prompts + (prompts @ down) @ up
    if transform == "dense":
        return prompts + prompts @ weights[0]
    return prompts


class ApproximatedPromptsFunction(torch.autograd.Function):
    """``apply(x, sa, log_scale, prompts, transform, *key_weights)`` → exp(s)·(SA + ΔX)."""

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
        keys = prompt_keys(transform, prompts, weights).to(x.dtype)
        attn = F.relu(x @ keys.transpose(0, 1))
        alpha = attn.amax(dim=-1, keepdim=True)
        z = sa + alpha * (attn @ prompts.to(x.dtype))
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
        params = [prompts, *weights]
        with torch.enable_grad():
            leaves = [
                t.detach().requires_grad_(needs[i])
                for i, t in zip(
                    (_P, *range(_WEIGHTS, _WEIGHTS + len(weights))), params, strict=True
                )
            ]
            keys = prompt_keys(ctx.transform, leaves[0], leaves[1:]).to(x.dtype)
        plain_keys = keys.detach()
        values = prompts.to(x.dtype)
        attn = F.relu(x @ plain_keys.transpose(0, 1))
        grad_ap = alpha * grad_z
        grad_scores = torch.where(attn > 0, grad_ap @ values.transpose(0, 1), 0.0)
        p, d = plain_keys.shape
        grad_x = grad_scores @ plain_keys if needs[_X] else None
        grad_sa = grad_z if needs[_SA] else None
        grad_s = (
            (grad_z * z).sum().reshape(log_scale.shape).to(log_scale.dtype) if needs[_S] else None
        )

        grads: list[torch.Tensor | None] = [None] * len(params)
        trained = [i for i, leaf in enumerate(leaves) if leaf.requires_grad]
        if trained:
            grad_keys = grad_scores.reshape(-1, p).transpose(0, 1) @ x.reshape(-1, d)
            through_keys = torch.autograd.grad(keys, [leaves[i] for i in trained], grad_keys)
            for i, g in zip(trained, through_keys, strict=True):
                grads[i] = g
        if needs[_P]:
            grad_values = attn.reshape(-1, p).transpose(0, 1) @ grad_ap.reshape(-1, d)
            grads[0] = grads[0] + grad_values.to(prompts.dtype)
        return (grad_x, grad_sa, grad_s, grads[0], None, *grads[1:])


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
