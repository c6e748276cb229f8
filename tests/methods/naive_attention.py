"""Explicit-softmax reference attention with extra keys/values, written from the equations only.

Used to pin the maths of `ExtendedAttention` (VPT on Swin / PVT-v2, prefix tuning): nothing here
calls vpeft's attention helpers or timm's attention forwards.
"""

from __future__ import annotations

import torch


def heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, H·d) -> (B, H, N, d)."""
    b, n, w = t.shape
    return t.reshape(b, n, num_heads, w // num_heads).permute(0, 2, 1, 3)


def attention_with_extra(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_extra: torch.Tensor,
    v_extra: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q [K_e; K]ᵀ/√d + [0 | bias]) [V_e; V], heads merged: (B, N, H·d).

    q, k, v: (B, H, N|M, d); k_extra, v_extra: (H, p, d); bias: broadcastable to (B, H, N, M).
    """
    b, h, n, d = q.shape
    p = k_extra.shape[1]
    keys = torch.cat([k_extra.unsqueeze(0).expand(b, -1, -1, -1), k], dim=2)
    values = torch.cat([v_extra.unsqueeze(0).expand(b, -1, -1, -1), v], dim=2)
    logits = q @ keys.transpose(-1, -2) / d**0.5
    if bias is not None:
        logits = logits + torch.cat([torch.zeros(*bias.shape[:-1], p), bias], dim=-1)
    weights = torch.exp(logits - logits.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    return (weights @ values).permute(0, 2, 1, 3).reshape(b, n, h * d)


def relative_position_bias(table: torch.Tensor, window: int) -> torch.Tensor:
    """(H, N, N) Swin bias for a square window, from the (2w-1)², H table, by explicit loops."""
    n = window * window
    out = torch.empty(table.shape[1], n, n)
    for i in range(n):
        yi, xi = divmod(i, window)
        for j in range(n):
            yj, xj = divmod(j, window)
            index = (yi - yj + window - 1) * (2 * window - 1) + (xi - xj + window - 1)
            out[:, i, j] = table[index]
    return out
