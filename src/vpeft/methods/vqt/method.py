"""Visual Query Tuning (Tu, Mai, Chao, CVPR 2023): `vqt`.

T learnable query tokens per block attend to the block's frozen keys/values (Eq. 4–5) and pass
through its frozen MLP; their outputs Z'_m (T·D per block) and the backbone's final feature are
L2-normalised per group and concatenated into one linear head (docs/methods/vqt.md). Nothing
attends to the queries, so the backbone's features are bit-identical to the plain model.
Trainable: M·T·D query values + the head ((D + M·T·D)·C + C for `concat`). Not mergeable.

ViT family only (supervised CLS + final norm, MAE-style average pooling + fc_norm, CLIP with
norm_pre): the queries need the block-level token sequence of a global-attention transformer.
Composes with methods installed before it (AdaptFormer, VPT-deep, LoRA, ...): the query rows go
through the adapted modules, and the backbone pass runs with autograd when those train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ...core.config import MethodConfig, option
from ...core.context import InstallContext
from ...core.forwarding import ForwardsToWrapped
from ...core.registry import MethodInfo, register
from ...errors import ConfigError
from .query_tuning import QueryTuning

PAPER = (
    "Tu, Mai, Chao, Visual Query Tuning: Towards Effective Usage of Intermediate "
    "Representations for Parameter and Memory Efficient Transfer Learning, CVPR 2023"
)


@dataclass
class SelectionConfig(MethodConfig):
    """A feature `selection` (set by group lasso) that is saved as a tensor, not as JSON."""

    selection: list[int] | None = option(  # noqa: RUF009 (returns a dataclasses.field)
        None, "feature columns the head reads (set by vpeft.methods.vqt.group_lasso_select)"
    )

    def validate(self) -> None:
        if self.selection is not None:
            self._require(len(self.selection) > 0, "selection must keep at least one feature")
            self._require(min(self.selection) >= 0, "selection indices must be >= 0")

    def selection_tensor(self) -> torch.Tensor | None:
        return None if self.selection is None else torch.tensor(self.selection, dtype=torch.long)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "selection": None}

    def to_tensors(self) -> dict[str, Any]:
        index = self.selection_tensor()
        return {} if index is None else {"selection": index}

    @classmethod
    def from_saved(cls, options: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
        restored = dict(options)
        if "selection" in tensors:
            restored["selection"] = tensors["selection"].tolist()
        return restored


@dataclass
class VqtConfig(SelectionConfig):
    num_queries: int = option(1, "query tokens T per block (paper default 1; 10/20 per task)")
    dropout: float = option(0.1, "dropout on the query tokens during training")
    reduce: Literal["concat", "mean", "weighted"] = option(
        "concat",
        "per-layer summary: concat (T·D, paper), mean over the T outputs (D), or weighted "
        "(learned per-layer weights over the T outputs, init 1/T; D)",
    )
    query_decay: bool = option(
        False,
        "weight-decay the query tokens and weighted-mix weights (the reference does; default: "
        "tokens are not decayed, as VPT's prompts)",
    )
    mix_init: Literal["mean", "ones"] = option(
        "mean", "initial weights of reduce=weighted: mean (1/T, ours) or ones (the reference)"
    )
    embed_dropout: float = option(
        0.0,
        "dropout on the first block's input tokens (patch + position embeddings) in training; "
        "the reference: 0.1",
    )

    memory: Literal["keys_values", "recompute"] = option(
        "keys_values",
        "keys_values: keep every layer's frozen K, V for the query backward (≈1.0× forward "
        "FLOPs); recompute: keep only each layer's qkv input and recompute K, V in the query "
        "pass and its backward (half the activations, + the K, V projections twice)",
    )

    def validate(self) -> None:
        super().validate()
        self._require(
            self.memory in ("keys_values", "recompute"),
            f"memory must be 'keys_values' or 'recompute', got {self.memory!r}",
        )
        self._require(self.num_queries >= 1, f"num_queries must be >= 1, got {self.num_queries}")
        for name in ("dropout", "embed_dropout"):
            value = getattr(self, name)
            self._require(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value}")


def drop_classifier(ctx: InstallContext) -> None:
    """Remove the backbone's own classifier: the feature module's head replaces it."""
    ctx.require_single_task()
    ctx.model.reset_classifier(0)


def install_vqt(ctx: InstallContext, cfg: VqtConfig) -> None:
    """Add the query tokens and head as the model's forward (`ctx.set_forward`)."""
    ctx.require_family("vit")
    drop_classifier(ctx)
    module = QueryTuning(
        ctx.spec,
        cfg.num_queries,
        ctx.num_classes,
        dropout=cfg.dropout,
        reduce=cfg.reduce,
        selection=cfg.selection_tensor(),
        memory=cfg.memory,
        mix_init=1.0 if cfg.mix_init == "ones" else None,
    )
    ctx.train(module)
    # query tokens follow the library's token rule (no decay) unless query_decay= asks for the
    # reference's coupled L2 on them (docs/methods/vqt.md, deviations)
    ctx.train(module.queries, weight_decay=cfg.query_decay)
    if module.mix is not None:
        ctx.train(module.mix, weight_decay=cfg.query_decay)
    if cfg.embed_dropout > 0:
        install_embedding_dropout(ctx, cfg.embed_dropout)
    ctx.set_forward(module, module.head)


class EmbeddingDropout(ForwardsToWrapped):
    """The token-path entry module (timm ViT `norm_pre`), then dropout on its output: the
    reference's dropout on the patch + position embeddings (identity in eval)."""

    def __init__(self, base: nn.Module, p: float) -> None:
        super().__init__()
        self.base = base
        self.dropout = nn.Dropout(p)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.dropout(self.base(x, *args, **kwargs))


def install_embedding_dropout(ctx: InstallContext, p: float) -> None:
    """Wrap the backbone's token-path entry (`BackboneSpec.tokens.entry`) with dropout `p`."""
    path = ctx.spec.tokens
    if path is None:
        raise ConfigError(f"embed_dropout needs a token sequence; {ctx.spec.family} has none")
    site = path.entry
    setattr(site.parent, site.attr, EmbeddingDropout(site.module, p))


register(
    MethodInfo(
        name="vqt",
        family="query",
        paper=PAPER,
        mergeable=False,
        config=VqtConfig,
        install=install_vqt,
        summary="T query tokens per block summarise frozen features for a linear head",
        backbones=("vit",),
    )
)
