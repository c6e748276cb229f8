"""A job killed while writing the final adapter leaves `.adapter.safetensors.*.tmp`; the next
start in that folder removes it, as for checkpoints (issue 14, smaller items)."""

from __future__ import annotations

import vpeft
from tests.helpers import tiny_vit
from tests.train.tiny_run import NUM_CLASSES, base_config, tensors
from vpeft.atomic import temporary_prefix
from vpeft.train import train
from vpeft.train.loop import ADAPTER_NAME


def test_stale_adapter_temporary_is_removed_at_the_next_start(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    stale = out / f"{temporary_prefix(out / ADAPTER_NAME)}k1ll3d.tmp"
    stale.write_bytes(b"half an adapter")
    unrelated = out / "notes.tmp"
    unrelated.write_text("mine")
    pm = vpeft.apply(tiny_vit(0), "linear", num_classes=NUM_CLASSES)
    train(pm, tensors(16, 0), None, None, base_config(epochs=1, warmup_epochs=0, out_dir=str(out)))
    assert not stale.exists()
    assert unrelated.exists() and (out / ADAPTER_NAME).is_file()
    assert not list(out.glob(".*.tmp"))
