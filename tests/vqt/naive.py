"""Reference VQT written the naive way: query tokens appended to every block's input as extra
tokens, with an attention mask so that no token attends to them, everything under autograd.

Used to check the memory-efficient `QueryTuning` (same features, same gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import vpeft


def naive_vqt_features(pm: vpeft.PeftModel, x: torch.Tensor) -> torch.Tensor:
    """Features [f(h_L), Z'_1, …, Z'_M] (each L2-normalised) of a `vqt` model, the slow way.

    Runs the model's top-level modules in order (so wrappers installed by other methods, e.g.
    VPT's prompt insertion/replacement/removal, act as in the model's own forward).
    """
    model, vqt = pm.model, pm.forward_override
    batch, t = x.shape[0], vqt.num_queries
    h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    summaries = []
    for m, block in enumerate(model.blocks):
        n = h.shape[1]
        tokens = torch.cat([h, vqt.queries[m].expand(batch, -1, -1)], dim=1)
        visible = torch.ones(n + t, n + t, dtype=torch.bool)
        visible[:, n:] = False  # nobody attends to the query tokens
        out = block(tokens, attn_mask=visible)
        h, z = out[:, :n], out[:, n:]
        summaries.append(z.flatten(1))
    final = model.forward_head(model.norm(h), pre_logits=True)
    return torch.cat([F.normalize(g, dim=-1) for g in [final, *summaries]], dim=-1)
