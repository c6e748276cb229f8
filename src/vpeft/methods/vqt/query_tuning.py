"""`QueryTuning`: the VQT feature module (Tu, Mai, Chao, CVPR 2023, §3.2).

    features(x) = [ f(h_L) , Z'_1 , … , Z'_M ]   each group L2-normalised (reference)
    logits      = W · features(x)[selection] + b

f(h_L) is what the backbone itself feeds its classifier (the final CLS after the encoder norm,
or the average-pooled patches through `fc_norm` for MAE-style models), Z'_m the block-m outputs
of T learnable query tokens (`query_layer.query_block`).

**Memory-efficient training.** The backbone runs its own, unchanged forward pass; a forward
hook on each block's fused `qkv` layer hands over the frozen keys and values it computed (no
extra projection of the real tokens). When no backbone parameter requires a gradient, that
pass runs without autograd and keys/values are stored as compact copies (2·N·D per layer);
only the T query rows per layer and the head are differentiated, so the step costs about one
backbone forward and a tiny backward. When other installed methods train parameters inside the
backbone (VQT on top of AdaptFormer or VPT-deep), the backbone pass runs with autograd instead
and gradients reach those parameters through the final feature and through K_m, V_m.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...backbones.attention import AttentionOps, attention_ops
from ...backbones.spec import BackboneSpec
from .capture import capture_inputs, capture_outputs
from .head import SelectedLinear, normalize_groups
from .query_layer import query_block

KeysValues = tuple[torch.Tensor, torch.Tensor]

#: How one layer's T query outputs (B, T, D) become its feature group (appendix C.4 variants).
REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "concat": lambda z: z.flatten(1),  # T·D per layer (the paper's default)
    "mean": lambda z: z.mean(dim=1),  # D per layer
}

#: Tokens' worth of width each reduction keeps from T query outputs.
REDUCED_TOKENS: dict[str, Callable[[int], int]] = {
    "concat": lambda t: t,
    "mean": lambda t: 1,
    "weighted": lambda t: 1,
}
#: Reductions with learnable weights (held by `QueryTuning.mix`, not in `REDUCTIONS`).
LEARNED_REDUCTIONS: tuple[str, ...] = ("weighted",)


def query_init_bound(patch_size: int, width: int) -> float:
    """v = √(6 / (3·p² + D)): query tokens start uniform(−v, v) (as VPT's prompts)."""
    return math.sqrt(6.0 / (3 * patch_size**2 + width))


class QueryTuning(nn.Module):
    """T learnable query tokens per block + a linear head on the summarised features.

    The backbone is referenced through `spec` (a plain attribute), never registered as a child,
    so its parameters keep their single name under `PeftModel.model`.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_queries: int,
        num_classes: int,
        dropout: float = 0.1,
        reduce: str = "concat",
        selection: torch.Tensor | None = None,
        memory: str = "keys_values",
        mix_init: float | None = None,
    ) -> None:
        super().__init__()
        self.memory = memory
        like = spec.blocks[0].attention.q.weight  # type: ignore[union-attr]
        width, depth = spec.embed_dim, spec.depth
        bound = query_init_bound(spec.patch_size, width)
        self.queries = nn.Parameter(
            torch.empty(depth, num_queries, width, device=like.device, dtype=like.dtype).uniform_(
                -bound, bound
            )
        )
        self.dropout = nn.Dropout(dropout)
        self.reduce = reduce
        #: `weighted`: z_m = Σ_t w_{m,t} Z'_{m,t}, w (M, T) learned, init `mix_init` (default
        #: 1/T = `mean` at init; the reference: 1, equal after the group's L2 normalisation)
        start = 1.0 / num_queries if mix_init is None else mix_init
        self.mix = (
            nn.Parameter(torch.full((depth, num_queries), start).to(like))
            if reduce in LEARNED_REDUCTIONS
            else None
        )
        self.spec = spec
        self.ops: list[AttentionOps] = [
            attention_ops(b.attention)  # type: ignore[arg-type]
            for b in spec.blocks
        ]
        self.head = SelectedLinear(self.feature_dim, num_classes, selection).to(
            like.device, like.dtype
        )

    # -- sizes ----------------------------------------------------------------------------
    @property
    def num_queries(self) -> int:
        return self.queries.shape[1]

    def group_sizes(self) -> list[int]:
        """Width of each feature group: [final, layer 1, …, layer M]."""
        per_layer = REDUCED_TOKENS[self.reduce](self.num_queries) * self.spec.embed_dim
        return [self.spec.num_features] + [per_layer] * self.spec.depth

    @property
    def feature_dim(self) -> int:
        """D + M·T·D for `concat` (before any selection)."""
        return sum(self.group_sizes())

    # -- forward --------------------------------------------------------------------------
    def backbone_trains(self) -> bool:
        """Whether any parameter of the backbone (other methods' modules included) trains."""
        return any(p.requires_grad for p in self.spec.model.parameters())

    def backbone_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, list[KeysValues]]:
        """The model's own forward: its final feature and every block's (K_m, V_m).

        Without autograd (and compact keys/values) unless a backbone parameter trains.
        """
        adapt = torch.is_grad_enabled() and self.backbone_trains()
        slots = self._qkv_slots()
        if self.memory == "recompute" and not adapt:  # keep the qkv inputs only (N·D per layer)
            capture = capture_inputs(slots, lambda i, t: (t,))
        else:
            capture = capture_outputs(
                slots, self._keys_values if adapt else self._compact_keys_values
            )
        with torch.set_grad_enabled(adapt), capture as keys_values:
            final = self.spec.features(x)
        return final, keys_values

    def _qkv_slots(self) -> list[nn.Module]:
        return [b.attention.q.module for b in self.spec.blocks]  # type: ignore[union-attr]

    def _keys_values(self, index: int, fused: torch.Tensor) -> KeysValues:
        _, k, v = self.ops[index].split_qkv(fused)
        return k, v

    def _compact_keys_values(self, index: int, fused: torch.Tensor) -> KeysValues:
        """Own copies of K and V, so the fused (B, N, 3D) output is freed at once."""
        k, v = self._keys_values(index, fused)
        return k.contiguous(), v.contiguous()

    def summaries(self, keys_values: list[KeysValues], batch: int) -> list[torch.Tensor]:
        """Z'_m (B, T, D) of every block from its frozen keys and values."""
        out = []
        for m, (block, ops) in enumerate(zip(self.spec.blocks, self.ops, strict=True)):
            # a copy per sample (own dropout mask); never a view of the parameter, which
            # under no_grad would flag requires_grad without a grad_fn (breaks module hooks)
            tokens = self.dropout(self.queries[m].repeat(batch, 1, 1))
            if len(keys_values[m]) == 1:  # memory="recompute": (qkv input,)
                out.append(self._recomputed_query_block(m, tokens, keys_values[m][0]))
            else:
                out.append(query_block(block, ops, tokens, *keys_values[m]))
        return out

    def _recomputed_query_block(
        self, m: int, tokens: torch.Tensor, qkv_input: torch.Tensor
    ) -> torch.Tensor:
        """`query_block` with K_m, V_m projected again from the layer's qkv input, inside an
        activation checkpoint: the backward keeps only `qkv_input` and recomputes K, V."""
        block, ops, slot = self.spec.blocks[m], self.ops[m], self._qkv_slots()[m]

        def layer(tokens: torch.Tensor, qkv_input: torch.Tensor) -> torch.Tensor:
            _, k, v = ops.split_qkv(slot(qkv_input))
            return query_block(block, ops, tokens, k, v)

        if not torch.is_grad_enabled():
            return layer(tokens, qkv_input)
        return checkpoint(layer, tokens, qkv_input, use_reentrant=False)

    def reduce_layer(self, m: int, z: torch.Tensor) -> torch.Tensor:
        """Block m's feature group from its T query outputs z (B, T, D)."""
        if self.mix is None:
            return REDUCTIONS[self.reduce](z)
        return torch.einsum("t,btd->bd", self.mix[m].to(z.dtype), z)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The concatenated, group-normalised features (B, feature_dim)."""
        final, keys_values = self.backbone_pass(x)
        summaries = self.summaries(keys_values, x.shape[0])
        groups = [final] + [self.reduce_layer(m, z) for m, z in enumerate(summaries)]
        return normalize_groups(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
