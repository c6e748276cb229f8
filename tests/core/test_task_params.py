"""`TaskParameterCopies`: the slots of the originals are cached, and found again when the model's
structure changes (a new owner, a slot rewritten in place, a module put back by `apply_swaps`)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from vpeft.core.structure import apply_swaps
from vpeft.core.task_params import TaskParameterCopies


def _model_and_copies() -> tuple[nn.Sequential, TaskParameterCopies]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    copies = TaskParameterCopies(("a", "b"))
    for layer in (model[0], model[2]):
        copies.add(layer.bias)
    with torch.no_grad():
        for i, p in enumerate(copies.tasks["a"]):
            p.add_(i + 1.0)
    return model, copies


def _swapped_biases(model: nn.Module, copies: TaskParameterCopies) -> dict[str, nn.Parameter]:
    with copies.swapped_in(model, "a"):
        return {n: m.bias for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def test_swap_uses_the_cached_slots_and_gives_the_copies_outputs() -> None:
    model, copies = _model_and_copies()
    x = torch.randn(5, 3)
    a = copies.tasks["a"]
    expected = torch.func.functional_call(model, {"0.bias": a[0], "2.bias": a[1]}, (x,))
    first = copies.slots(model)
    assert first == [[(model[0], "bias")], [(model[2], "bias")]]
    assert copies.slots(model) is first  # nothing changed: no new scan
    with copies.swapped_in(model, "a"):
        torch.testing.assert_close(model(x), expected, atol=0, rtol=0)
    assert model[0].bias is copies.originals()[0] and model[2].bias is copies.originals()[1]
    assert copies.slots(model) is first


def test_a_new_owner_of_an_original_is_found() -> None:
    model, copies = _model_and_copies()
    first = copies.slots(model)
    model.append(nn.Linear(4, 2))
    model[3].bias = model[2].bias  # tied: a second slot holding the original
    assert copies.slots(model) is not first
    got = _swapped_biases(model, copies)
    assert got["2"] is copies.tasks["a"][1] and got["3"] is copies.tasks["a"][1]
    assert model[3].bias is copies.originals()[1]


def test_a_slot_rewritten_in_place_is_not_restored_to_the_original() -> None:
    model, copies = _model_and_copies()
    copies.slots(model)
    other = nn.Parameter(torch.zeros(2))
    model[2]._parameters["bias"] = other  # no registration hook runs
    got = _swapped_biases(model, copies)
    assert got["0"] is copies.tasks["a"][0] and got["2"] is other
    assert model[2].bias is other


def test_a_module_put_back_by_apply_swaps_is_found() -> None:
    model, copies = _model_and_copies()
    undo = apply_swaps([((model, "2"), nn.Identity())])
    assert copies.slots(model) == [[(model[0], "bias")], []]
    apply_swaps(undo)
    got = _swapped_biases(model, copies)
    assert got["2"] is copies.tasks["a"][1]


def test_another_model_gets_its_own_slots_and_copies_do_not_carry_the_cache() -> None:
    model, copies = _model_and_copies()
    copies.slots(model)
    twin = copy.deepcopy(model)
    assert copies.slots(twin) == [[], []]  # the twin holds copies of the originals, not them
    clone = copy.deepcopy(copies)
    assert clone._slot_cache is None
