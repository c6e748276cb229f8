"""`EvalFold`: pieces folded into one layer come back bit-exactly, overlapping regions included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vpeft.core.eval_fold import EvalFold, FoldTarget


class _Piece(EvalFold, nn.Module):
    """Adds `value` to a region of the base's weight (flat indices or a row range)."""

    def __init__(self, region: torch.Tensor | slice, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.region = region
        self.value = nn.Parameter(torch.randn(shape, dtype=torch.float64))

    def _fold_targets(self, base: nn.Module) -> list[FoldTarget]:
        return [(base.weight, self.region, self.value)]


def _layer() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(5, 6, dtype=torch.float64).requires_grad_(False)


@pytest.mark.parametrize("first_unfolded", [0, 1])
def test_overlapping_pieces_restore_exactly_in_any_unfold_order(first_unfolded: int) -> None:
    layer = _layer()
    before = layer.weight.clone()
    rows = _Piece(slice(1, 4), (3, 5)).eval()
    entries = _Piece(torch.tensor([5, 7, 12, 29]), (4,)).eval()  # rows 1, 1, 2, 5: overlaps
    expected = before.clone()
    expected[1:4] += rows.value.detach()
    expected.view(-1)[entries.region] += entries.value.detach()
    with torch.no_grad():
        assert rows.fold_for_eval(layer) and entries.fold_for_eval(layer)
    torch.testing.assert_close(layer.weight, expected, rtol=0, atol=1e-15)
    [rows, entries][first_unfolded].train()
    [rows, entries][1 - first_unfolded].train()
    assert torch.equal(layer.weight, before)


def test_no_fold_in_training_mode_or_when_the_gradient_is_wanted() -> None:
    layer = _layer()
    before = layer.weight.clone()
    piece = _Piece(slice(0, 2), (2, 5))
    with torch.no_grad():
        assert not piece.fold_for_eval(layer)  # training mode
    piece.eval()
    assert not piece.fold_for_eval(layer)  # grad enabled and the piece trains
    assert torch.equal(layer.weight, before)
    with torch.no_grad():
        assert piece.fold_for_eval(layer)
    assert not torch.equal(layer.weight, before)
    assert not piece.fold_for_eval(layer)  # a grad-enabled forward unfolds first
    assert torch.equal(layer.weight, before)


def test_folding_registers_no_module() -> None:
    layer = _layer()
    piece = _Piece(slice(0, 2), (2, 5)).eval()
    with torch.no_grad():
        piece.fold_for_eval(layer)
    assert list(piece.state_dict()) == ["value"]
