"""Is the bundled backbone's pretraining worth anything? A linear probe on frozen features of the
pretrained backbone against the same architecture at random initialisation.

The probe is L2-regularised softmax regression on standardised features (train statistics),
fitted to convergence by L-BFGS from zero weights, so it has no learning rate or epochs to tune
and is deterministic. Features are the backbone's pooled output (timm's class token after the
final norm), computed once per split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import synthetic
from ..data.transforms import data_config_for
from ..zoo import bundled_backbone

Split = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The model's outputs for `images`, in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat(
            [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        )
    finally:
        model.train(was_training)


def linear_probe(train: Split, test: Split, num_classes: int, l2: float = 1e-3) -> float:
    """Test top-1 (%) of softmax regression fitted on ``train = (features, labels)``.

    Loss: mean cross-entropy + ``l2 · ‖W‖²`` (bias not penalised), minimised by L-BFGS (strong
    Wolfe line search, at most 200 iterations).
    """
    mean, std = train[0].mean(0), train[0].std(0) + 1e-6
    x, x_test = (train[0] - mean) / std, (test[0] - mean) / std
    head = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(x), train[1]) + l2 * head.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return 100.0 * (head(x_test).argmax(1) == test[1]).float().mean().item()


@dataclass(frozen=True)
class ProbeRow:
    """Linear-probe test top-1 (%) of the pretrained and the randomly initialised backbone."""

    task: str
    group: str
    chance: float
    pretrained: float
    random_init: float

    @property
    def margin(self) -> float:
        return self.pretrained - self.random_init

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "margin": self.margin}


def transfer_probe(
    tasks: Sequence[str],
    backbone: str = "vit-tiny-synth",
    test_images: int | None = 1000,
    init_seed: int = 0,
) -> list[ProbeRow]:
    """Probe the pretrained `backbone` and the same architecture drawn with `init_seed` on
    train800 → the first `test_images` test images (all when None) of each task."""
    entry = bundled_backbone(backbone)
    pretrained = entry.create(pretrained=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        random_init = entry.create(pretrained=False)
    transform = data_config_for(pretrained).transform()
    rows = []
    for task in tasks:
        info = synthetic.task_info(task)
        train = synthetic.load_split(task, "train800").as_tensors(transform)
        images, labels = synthetic.load_split(task, "test").as_tensors(transform)
        test = (images[:test_images], labels[:test_images]) if test_images else (images, labels)
        acc = [
            linear_probe(
                (features(model, train[0]), train[1]),
                (features(model, test[0]), test[1]),
                info.num_classes,
            )
            for model in (pretrained, random_init)
        ]
        rows.append(ProbeRow(task, info.group, 100.0 / info.num_classes, acc[0], acc[1]))
    return rows
