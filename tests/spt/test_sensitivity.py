"""SPT stage 1: the sensitivity pass against an independent torch.func computation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

import vpeft
from tests.helpers import images, tiny_swin, tiny_vit
from vpeft.backbones import describe
from vpeft.methods.spt import (
    Sensitivity,
    compute_sensitivity,
    find_candidates,
    random_sensitivity,
    sensitivity_batches,
)


def _model_with_head(seed: int = 0):
    model = tiny_vit(seed)
    torch.manual_seed(3)
    model.reset_classifier(3)
    return model.eval()


def _batches(n: int = 3, size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [
        (images(size, seed=10 + i), torch.randint(0, 3, (size,), generator=g)) for i in range(n)
    ]


def _independent(model, batches, per_sample: bool = False) -> dict[str, torch.Tensor]:
    """Σ over batches of (∇ mean CE)², one torch.func gradient per batch (or per sample)."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, x, y):
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in batches:
        pairs = zip(x.split(1), y.split(1), strict=True) if per_sample else [(x, y)]
        for xs, ys in pairs:
            for n, g in grad(loss)(params, xs, ys).items():
                total[n] += g * g
    return total


@pytest.mark.parametrize("per_sample", [False, True])
def test_scores_equal_independent_per_batch_gradients(per_sample: bool) -> None:
    model, batches = _model_with_head(), _batches()
    got = compute_sensitivity(model, batches, per_sample=per_sample)
    want = _independent(model, batches, per_sample)
    candidates = find_candidates(model, describe(model))
    assert set(got.scores) == set(candidates.params)
    for name, score in got.scores.items():
        torch.testing.assert_close(score, want[name], rtol=1e-4, atol=1e-12)
        assert score.dtype == torch.float32
    assert got.meta["samples"] == 12 and got.meta["batches"] == 3
    assert sum(float(s.sum()) for s in got.scores.values()) > 0


def test_per_sample_and_batch_scores_differ() -> None:
    model, batches = _model_with_head(), _batches()
    a = compute_sensitivity(model, batches).scores["blocks.0.mlp.fc1.weight"]
    b = compute_sensitivity(model, batches, per_sample=True).scores["blocks.0.mlp.fc1.weight"]
    assert not torch.allclose(a, b)


def test_fused_qkv_is_scored_as_three_units() -> None:
    model = _model_with_head()
    sens = compute_sensitivity(model, _batches(1))
    units = find_candidates(model, describe(model)).by_key()
    qkv = sens.scores["blocks.1.attn.qkv.weight"]
    d = model.embed_dim
    for i, role in enumerate(("q", "k", "v")):
        unit = units[f"blocks.1.attn.qkv.weight[{role}]"]
        assert (unit.kind, unit.role, unit.block, unit.shape) == ("matrix", role, 1, (d, d))
        torch.testing.assert_close(sens.unit_scores(unit), qkv[i * d : (i + 1) * d].reshape(-1))
        bias = units[f"blocks.1.attn.qkv.bias[{role}]"]
        assert (bias.kind, bias.shape, bias.offset) == ("vector", (d,), i * d)


def test_excluded_tensors_are_not_scored() -> None:
    model = _model_with_head()
    names = set(compute_sensitivity(model, _batches(1)).scores)
    assert not any(n.startswith(("patch_embed.", "head.")) for n in names)
    assert {"cls_token", "pos_embed"}.isdisjoint(names)
    expected = {n for n, _ in model.named_parameters()} - {"cls_token", "pos_embed"}
    expected -= {n for n, _ in model.named_parameters() if n.startswith(("patch_embed", "head"))}
    assert names == expected  # everything else is a candidate, norms included
    swin = tiny_swin()
    swin.reset_classifier(3)
    swin_names = set(find_candidates(swin, describe(swin)).params)
    tables = {n for n, _ in swin.named_parameters() if n.endswith("relative_position_bias_table")}
    assert tables and tables.isdisjoint(swin_names)
    assert any(n.endswith("downsample.reduction.weight") for n in swin_names)


def test_model_is_left_untouched_and_head_is_fresh_and_seeded() -> None:
    model = tiny_vit()
    before = copy.deepcopy(model.state_dict())
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    a = compute_sensitivity(model, _batches(1), num_classes=3, head_seed=1)
    b = compute_sensitivity(model, _batches(1), num_classes=3, head_seed=1)
    c = compute_sensitivity(model, _batches(1), num_classes=3, head_seed=2)
    for n, t in model.state_dict().items():
        assert torch.equal(t, before[n])
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert model.num_classes == 0
    name = "blocks.1.mlp.fc2.weight"
    assert torch.equal(a.scores[name], b.scores[name])
    assert not torch.equal(a.scores[name], c.scores[name])


def test_gradients_are_freed_and_only_candidates_require_grad() -> None:
    model = _model_with_head()
    compute_sensitivity(model, _batches(1), copy_model=False)
    assert all(p.grad is None for p in model.parameters())
    candidates = set(find_candidates(model, describe(model)).params)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == candidates


def test_eval_mode_default_is_deterministic_train_mode_is_not() -> None:
    model = tiny_vit(drop_path_rate=0.5)
    model.reset_classifier(3)
    name = "blocks.0.mlp.fc1.weight"
    a = compute_sensitivity(model, _batches(1)).scores[name]
    b = compute_sensitivity(model, _batches(1)).scores[name]
    assert torch.equal(a, b)
    torch.manual_seed(0)
    c = compute_sensitivity(model, _batches(1), train_mode=True).scores[name]
    torch.manual_seed(1)
    d = compute_sensitivity(model, _batches(1), train_mode=True).scores[name]
    assert not torch.equal(c, d)


def test_batches_take_the_first_samples_in_order_or_a_seeded_subset() -> None:
    x = torch.arange(10, dtype=torch.float32).view(10, 1)
    y = torch.arange(10)
    batches = sensitivity_batches((x, y), samples=7, batch_size=3)
    assert [b[1].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    dataset = torch.utils.data.TensorDataset(x, y)
    from_dataset = [b[1].tolist() for b in sensitivity_batches(dataset, 5, 2)]
    assert from_dataset == [[0, 1], [2, 3], [4]]
    seeded = next(iter(sensitivity_batches((x, y), 6, 6, seed=1)))[1].tolist()
    assert seeded == next(iter(sensitivity_batches(dataset, 6, 6, seed=1)))[1].tolist()
    assert seeded != list(range(6))
    assert len(sensitivity_batches((x, y), samples=50, batch_size=4)) == 3  # all 10 samples
    with pytest.raises(vpeft.ConfigError, match="empty"):
        sensitivity_batches((x[:0], y[:0]))


def test_save_load_round_trip_and_wrong_kind(tmp_path) -> None:
    sens = compute_sensitivity(_model_with_head(), _batches(1), source="unit test")
    sens.save(tmp_path / "s.safetensors")
    back = Sensitivity.load(tmp_path / "s.safetensors")
    assert back.meta == sens.meta and back.meta["source"] == "unit test"
    assert all(torch.equal(back.scores[n], s) for n, s in sens.scores.items())
    pm = vpeft.apply(tiny_vit(), "linear", num_classes=2)
    pm.save(tmp_path / "adapter.safetensors")
    with pytest.raises(vpeft.AdapterFileError, match="not an SPT sensitivity file"):
        Sensitivity.load(tmp_path / "adapter.safetensors")


def test_random_sensitivity_is_labelled_seeded_and_low_resolution() -> None:
    model = tiny_vit()
    a = random_sensitivity(model, num_classes=4, batches=2, img_size=16)
    b = random_sensitivity(model, num_classes=4, batches=2, img_size=16)
    assert a.meta["source"] == "random-data" and a.meta["img_size"] == [16, 16]
    assert a.meta["samples"] == 4
    assert all(torch.equal(a.scores[n], b.scores[n]) for n in a.scores)
    assert model.patch_embed.img_size == (32, 32)  # the model itself keeps its input size
    a.check_matches(find_candidates(model, describe(model)))


def test_scores_for_another_backbone_are_rejected() -> None:
    sens = compute_sensitivity(_model_with_head(), _batches(1))
    other = tiny_vit(depth=3)
    with pytest.raises(vpeft.ConfigError, match="do not fit this backbone"):
        sens.check_matches(find_candidates(other, describe(other)))
