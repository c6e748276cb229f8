"""One transformer layer applied to VQT's query tokens only (Tu et al., CVPR 2023, Eq. 4–5).

For block m with frozen keys K_m and values V_m of the layer's real tokens (read from the
backbone's own forward), the T query tokens P_{m-1} go through the block's own modules:

    Q'   = W_q LN1(P)                                   (Eq. 4)
    A    = softmax(Q' K_mᵀ / √d_h) V_m                   (second half of Eq. 5)
    P₁   = P + DropPath(LS1(W_o A))
    Z'_m = P₁ + DropPath(LS2(MLP(LN2(P₁))))

Nothing attends to the query tokens, so the real tokens — and every feature the backbone
computes — are unchanged. Only these T rows need autograd; K_m and V_m can be plain tensors.
"""

from __future__ import annotations

import torch

from ...backbones.attention import AttentionOps, attend
from ...backbones.spec import BlockSpec


def query_block(
    block: BlockSpec,
    ops: AttentionOps,
    tokens: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
) -> torch.Tensor:
    """Z'_m (B, T, D): the block's output for query `tokens` (B, T, D) over `keys`/`values`.

    `keys` and `values` are (B, H, N, d_h), as the block's attention produced them. The block's
    current modules are used, so wrappers installed by other methods (LoRA on q, an AdaptFormer
    branch beside the MLP) act on the query rows as they act on the real tokens.
    """
    m = block.module
    norm1, norm2 = block.norms
    q, _, _ = ops.qkv(norm1(tokens))
    attended = attend(q, keys, values, ops.scale, dropout=ops.dropout_p())
    h = tokens + m.drop_path1(m.ls1(ops.output(attended)))
    return h + m.drop_path2(m.ls2(block.mlp.output.module(norm2(h))))
