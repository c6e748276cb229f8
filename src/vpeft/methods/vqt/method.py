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

from ...core.config import MethodConfig, option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
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
        self._require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")


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
    )
    ctx.train(module)
    # query tokens follow the library's token rule (no decay); the reference decays them
    ctx.train(module.queries, weight_decay=False)
    if module.mix is not None:  # mixing weights are not shrunk towards 0 either
        ctx.train(module.mix, weight_decay=False)
    ctx.set_forward(module, module.head)


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
