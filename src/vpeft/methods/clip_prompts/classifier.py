"""CLIP as a classifier over text prompts, with optional learnable context (CoOp / CoCoOp).

    logits[b, c] = exp(t) · cos(f_img(x_b), f_txt(prompt_c))                  (CLIP, zero-shot)

Prompts are token-id rows ``[BOS] ctx_1 … ctx_M  name_c  suffix  [EOS] pad…``. Zero-shot: the
context tokens are a hard template ("a photo of a"). CoOp (Zhou et al., IJCV 2022): the M
context *embeddings* are learnable vectors shared by all classes — `ContextEmbedding` wraps the
text tower's own `token_embedding` and writes them over positions 1…M, so the rest of CLIP's
text encoder (positions, causal attention, EOS pooling) runs unchanged. CoCoOp (Zhou et al.,
CVPR 2022): every image b shifts the context by π(f_img(x_b)), π = Linear–ReLU–Linear (the
meta-net), so each image has its own C prompts (B·C text encodings per batch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.forwarding import ForwardsToWrapped
from ...errors import ConfigError


class ContextEmbedding(ForwardsToWrapped):
    """The text tower's token embedding, with positions [1, 1 + M) replaced by `context`
    ((M, d) shared, or (rows, M, d) one per prompt row) while a context is set."""

    def __init__(self, base: nn.Embedding) -> None:
        super().__init__()
        self.base = base
        self.context: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.base(ids)
        if self.context is None:
            return x
        ctx = self.context.to(x.dtype).expand(x.shape[0], -1, -1)
        m = ctx.shape[1]
        return torch.cat([x[:, :1], ctx, x[:, 1 + m :]], dim=1)


def prompt_ids(
    class_token_ids: list[list[int]],
    context_ids: list[int],
    suffix_ids: list[int],
    bos: int,
    eos: int,
    pad: int,
    length: int,
) -> torch.Tensor:
    """(C, length) token rows [BOS] context name suffix [EOS] pad…"""
    rows = []
    for name in class_token_ids:
        row = [bos, *context_ids, *name, *suffix_ids, eos]
        if len(row) > length:
            raise ConfigError(
                f"a prompt of {len(row)} tokens exceeds the text tower's {length} positions; "
                "use shorter class names or fewer context tokens"
            )
        rows.append(row + [pad] * (length - len(row)))
    return torch.tensor(rows, dtype=torch.long)


class ClipPromptClassifier(nn.Module):
    """Image tensor -> logits over the classes whose prompts are `prompts` (C, L).

    `context` (M, d) makes it CoOp, plus `meta_net` CoCoOp; neither: zero-shot CLIP. The CLIP
    model is a plain reference (its parameters are named once, in the backbone).
    """

    def __init__(
        self,
        clip: nn.Module,
        embedding: ContextEmbedding,
        prompts: torch.Tensor,
        context: torch.Tensor | None = None,
        meta_net: nn.Module | None = None,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "clip", clip)
        object.__setattr__(self, "embedding", embedding)
        self.register_buffer("prompts", prompts, persistent=False)
        self.context = None if context is None else nn.Parameter(context)
        self.meta_net = meta_net

    def text_features(self, context: torch.Tensor | None, repeat: int = 1) -> torch.Tensor:
        """Normalised text features (repeat·C, D) of the prompts under `context`."""
        ids = self.prompts.repeat(repeat, 1)
        self.embedding.context = context
        try:
            out = self.clip.get_text_features(input_ids=ids).pooler_output
        finally:
            self.embedding.context = None
        return F.normalize(out, dim=-1)

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> torch.Tensor:
        image = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
        image = F.normalize(image, dim=-1)
        scale = self.clip.logit_scale.exp()
        if self.meta_net is None:
            text = self.text_features(self.context)
            return scale * image @ text.T
        b, c = image.shape[0], self.prompts.shape[0]
        shifted = self.context.unsqueeze(0) + self.meta_net(image).unsqueeze(1)  # (B, M, d)
        text = self.text_features(shifted.repeat_interleave(c, dim=0), repeat=b)
        return scale * torch.einsum("bd,bcd->bc", image, text.reshape(b, c, -1))


def meta_net(image_dim: int, context_dim: int, reduction: int = 16) -> nn.Sequential:
    """CoCoOp's π: Linear(D_img, D_img/16) – ReLU – Linear(D_img/16, d_text)."""
    hidden = max(image_dim // reduction, 1)
    return nn.Sequential(
        nn.Linear(image_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, context_dim)
    )
