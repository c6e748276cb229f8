"""Group-lasso feature selection for VQT and Head2Toe (Head2Toe, Evci et al. 2022; VQT §3.2).

Three stages on a trained feature model (a `PeftModel` whose forward is a `QueryTuning` or
`Head2ToeFeatures` module):

A. train queries + head without lasso — the ordinary training run, done before calling this;
B. freeze the feature extractor, train a *fresh* head with

       L = CE(W f + b, y) + λ Σ_j ‖W[:, j]‖₂            (W: C × F, one group per feature column)

   at 0.5 × the stage-A learning rate;
C. keep the `keep_frac` columns with the largest ‖W[:, j]‖₂ and train a new head on them.

Because the features are frozen in B and C, they are computed **once** (`extract_features`) and
both heads train on the cached matrix: each epoch costs a (N × F)·(F × C) product, not a
backbone pass. The selection is installed into the model (and saved with it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from .head import SelectedLinear
from .head2toe import Head2ToeFeatures
from .query_tuning import QueryTuning

FeatureModule = QueryTuning | Head2ToeFeatures


def feature_module(pm: nn.Module) -> FeatureModule:
    """The VQT / Head2Toe feature module installed in `pm`, or a clear error."""
    module = getattr(pm, "forward_override", None)
    if not isinstance(module, QueryTuning | Head2ToeFeatures):
        raise ConfigError(
            "group-lasso selection needs a model adapted with 'vqt' or 'head2toe' "
            f"(got forward module {type(module).__name__})"
        )
    return module


@torch.no_grad()
def extract_features(
    pm: nn.Module,
    data: torch.Tensor | Iterable[tuple[torch.Tensor, torch.Tensor]],
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features of every image (eval mode, no autograd) and the labels when `data` has them.

    `data` is an image tensor (N, 3, H, W) or an iterable of (images, labels) batches (e.g. a
    `DataLoader`). Features are returned on the CPU.
    """
    module = feature_module(pm)
    was_training = pm.training
    pm.eval()
    device = module.head.weight.device
    try:
        if isinstance(data, torch.Tensor):
            chunks = [module.features(x.to(device)).cpu() for x in data.split(batch_size)]
            return torch.cat(chunks), None
        feats, labels = [], []
        for x, y in data:
            feats.append(module.features(x.to(device)).cpu())
            labels.append(torch.as_tensor(y).cpu())
        return torch.cat(feats), torch.cat(labels)
    finally:
        pm.train(was_training)


def column_norms(weight: torch.Tensor) -> torch.Tensor:
    """‖W[:, j]‖₂ for every input feature j of a (C × F) head weight."""
    return weight.detach().norm(dim=0)


def group_lasso_penalty(weight: torch.Tensor) -> torch.Tensor:
    """Σ_j ‖W[:, j]‖₂ (differentiable)."""
    return weight.norm(dim=0).sum()


def top_columns(norms: torch.Tensor, keep_frac: float) -> torch.Tensor:
    """Indices (ascending) of the round(keep_frac·F) columns with the largest norms (at least 1;
    rounding, not ceiling, so 0.7·320 keeps 224 despite floating-point error)."""
    if not 0.0 < keep_frac <= 1.0:
        raise ConfigError(f"keep_frac must be in (0, 1], got {keep_frac}")
    keep = max(1, min(norms.numel(), round(keep_frac * norms.numel())))
    return norms.topk(keep).indices.sort().values


@dataclass
class HeadTraining:
    """Schedule of the head-only loops (VQT reference: Adam, coupled L2, warm-up + cosine)."""

    lr: float = 0.1
    epochs: int = 100
    weight_decay: float = 0.0
    batch_size: int = 128
    warmup_epochs: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1 or self.weight_decay < 0:
            raise ConfigError(f"invalid head-training schedule {self}")
        if not 0 <= self.warmup_epochs < self.epochs:
            self.warmup_epochs = 0


def train_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    schedule: HeadTraining,
    lasso: float = 0.0,
) -> SelectedLinear:
    """A fresh linear head trained on cached `features` (N, F) with CE + lasso·Σ_j ‖W[:, j]‖₂.

    Adam with coupled L2 `weight_decay` on W only (no decay on b), learning rate warmed up then
    cosine-decayed per epoch. Deterministic for a given `schedule.seed`.
    """
    from ...train.schedule import WarmupCosine  # the training layer sits above the methods

    if features.shape[0] != labels.shape[0]:
        raise ConfigError(f"{features.shape[0]} feature rows but {labels.shape[0]} labels")
    generator = torch.Generator().manual_seed(schedule.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(schedule.seed)
        head = SelectedLinear(features.shape[1], num_classes).to(features.device, features.dtype)
    optimizer = torch.optim.Adam(
        [
            {"params": [head.weight], "weight_decay": schedule.weight_decay},
            {"params": [head.bias], "weight_decay": 0.0},
        ],
        lr=schedule.lr,
    )
    lr = WarmupCosine(schedule.lr, schedule.epochs, schedule.warmup_epochs)
    labels = labels.to(features.device)
    for epoch in range(schedule.epochs):
        lr.apply(optimizer, epoch)
        order = torch.randperm(features.shape[0], generator=generator).to(features.device)
        for batch in order.split(schedule.batch_size):
            loss = F.cross_entropy(head(features[batch]), labels[batch])
            if lasso > 0:
                loss = loss + lasso * group_lasso_penalty(head.weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    head.requires_grad_(False)
    return head


@dataclass
class GroupLassoResult:
    """Outcome of stages B and C."""

    selection: torch.Tensor  # kept feature columns (ascending)
    norms: torch.Tensor  # ‖W[:, j]‖₂ of the stage-B (lasso) head, one per feature
    lasso_head: SelectedLinear  # stage B
    head: SelectedLinear  # stage C, on the kept columns


def select_features(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    schedule: HeadTraining,
    lam: float = 1e-4,
    keep_frac: float = 0.7,
    lasso_lr_factor: float = 0.5,
) -> GroupLassoResult:
    """Stages B and C on cached features: lasso head, column ranking, new head on the kept set."""
    if lam < 0:
        raise ConfigError(f"lam must be >= 0, got {lam}")
    stage_b = HeadTraining(**{**schedule.__dict__, "lr": schedule.lr * lasso_lr_factor})
    lasso_head = train_head(features, labels, num_classes, stage_b, lasso=lam)
    norms = column_norms(lasso_head.weight)
    selection = top_columns(norms, keep_frac)
    head = train_head(features[:, selection], labels, num_classes, schedule)
    return GroupLassoResult(selection.cpu(), norms.cpu(), lasso_head, head)


def install_selection(pm: nn.Module, selection: torch.Tensor, head: nn.Linear) -> None:
    """Make `pm` classify from the columns `selection` with `head`; recorded for `save`/`load`."""
    module = feature_module(pm)
    module.head.load_selection(selection, head.weight, head.bias)
    for applied in reversed(getattr(pm, "methods", [])):
        if hasattr(applied.config, "selection"):
            applied.config.selection = [int(i) for i in selection.tolist()]
            break


def group_lasso_select(
    pm: nn.Module,
    data: torch.Tensor | Iterable[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor | None = None,
    schedule: HeadTraining | None = None,
    lam: float = 1e-4,
    keep_frac: float = 0.7,
    lasso_lr_factor: float = 0.5,
    batch_size: int = 64,
) -> GroupLassoResult:
    """Stages B and C for a stage-A-trained VQT / Head2Toe `pm`; installs the result into `pm`.

    `data` is either precomputed features (N, F) with `labels`, an image tensor with `labels`,
    or an iterable of (images, labels) batches. `schedule.lr` is stage A's (best) learning rate;
    stage B uses `lasso_lr_factor` times it, stage C the rate itself.
    """
    module = feature_module(pm)
    schedule = schedule or HeadTraining()
    if isinstance(data, torch.Tensor) and data.dim() == 2:
        features = data
    else:
        features, found = extract_features(pm, data, batch_size)
        labels = found if found is not None else labels
    if labels is None:
        raise ConfigError("labels are required: pass them with an image or feature tensor")
    if features.shape[1] != module.head.total_features:
        raise ConfigError(
            f"features have {features.shape[1]} columns; the model produces "
            f"{module.head.total_features}"
        )
    result = select_features(
        features, labels, module.head.out_features, schedule, lam, keep_frac, lasso_lr_factor
    )
    install_selection(pm, result.selection, result.head)
    return result
