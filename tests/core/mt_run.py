"""A tiny two-task run on dict batches; ``python -m tests.core.mt_run OUT`` (also under
torchrun) writes OUT/metrics.jsonl, summary.json and adapter.safetensors."""

from __future__ import annotations

import sys

import torch

import vpeft
from tests.core.test_multitask import TwoLabelSet, _dict_tasks
from tests.helpers import tiny_vit
from vpeft.train import TrainConfig, train


def main(out: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pm = vpeft.apply(tiny_vit(0), "lora", tasks=_dict_tasks(), rank=2)
    config = TrainConfig(
        epochs=2, warmup_epochs=0, lr=3e-3, batch_size=16, out_dir=out, progress=False
    )
    train(pm, TwoLabelSet(41, 1), None, TwoLabelSet(24, 2), config)


if __name__ == "__main__":
    main(sys.argv[1])
