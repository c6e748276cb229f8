"""Group-lasso selection (stages B and C) on planted synthetic features and on real models."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

import vpeft
from tests.helpers import images, tiny_vit
from tests.methods import checks
from vpeft.io import read_safetensors
from vpeft.methods.vqt import (
    HeadTraining,
    column_norms,
    extract_features,
    group_lasso_penalty,
    group_lasso_select,
    select_features,
    top_columns,
    train_head,
)

RELEVANT = torch.tensor([2, 9, 13, 20, 27, 33])
NUM_FEATURES, NUM_CLASSES = 40, 6


def planted(n: int = 1200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c shifts feature RELEVANT[c] by +2; the other 34 columns are pure noise."""
    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(NUM_CLASSES, NUM_FEATURES)
    means[torch.arange(NUM_CLASSES), RELEVANT] = 2.0
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return means[y] + torch.randn(n, NUM_FEATURES, generator=g), y


SCHEDULE = HeadTraining(lr=0.05, epochs=30, batch_size=128, warmup_epochs=3)


def _irrelevant() -> torch.Tensor:
    mask = torch.ones(NUM_FEATURES, dtype=torch.bool)
    mask[RELEVANT] = False
    return mask


def test_penalty_and_ranking_helpers() -> None:
    w = torch.tensor([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]])
    assert torch.equal(column_norms(w), torch.tensor([5.0, 0.0, 1.0]))
    assert group_lasso_penalty(w).item() == 6.0
    assert top_columns(column_norms(w), 0.7).tolist() == [0, 2]  # round(2.1) = 2, ascending
    assert top_columns(column_norms(w), 0.01).tolist() == [0]
    with pytest.raises(vpeft.ConfigError, match="keep_frac"):
        top_columns(column_norms(w), 0.0)


def test_lasso_zeroes_irrelevant_columns_and_plain_training_does_not() -> None:
    x, y = planted()
    lasso = column_norms(train_head(x, y, NUM_CLASSES, SCHEDULE, lasso=0.05).weight)
    plain = column_norms(train_head(x, y, NUM_CLASSES, SCHEDULE, lasso=0.0).weight)
    noise = _irrelevant()
    assert lasso[noise].max() < 0.02 * lasso[~noise].min()
    assert plain[noise].max() > 0.3 * plain[~noise].min()  # without the penalty they stay
    assert top_columns(lasso, len(RELEVANT) / NUM_FEATURES).tolist() == RELEVANT.tolist()


def test_stage_b_and_c_select_the_planted_columns_and_classify() -> None:
    x, y = planted(1600)
    result = select_features(
        x[:1200], y[:1200], NUM_CLASSES, SCHEDULE, lam=0.05, keep_frac=len(RELEVANT) / 40
    )
    assert result.selection.tolist() == RELEVANT.tolist()
    assert result.head.weight.shape == (NUM_CLASSES, len(RELEVANT))
    accuracy = (result.head(x[1200:, result.selection]).argmax(1) == y[1200:]).float().mean()
    assert accuracy > 0.65  # Bayes accuracy of this mixture is about 0.75


def test_head_training_is_deterministic() -> None:
    x, y = planted(300)
    short = HeadTraining(lr=0.05, epochs=3, batch_size=64, warmup_epochs=1, seed=4)
    a, b = (train_head(x, y, NUM_CLASSES, short, lasso=0.01) for _ in range(2))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


@pytest.mark.parametrize("method", ["vqt", "head2toe"])
def test_selection_on_a_model_computes_features_once_and_saves(method: str, tmp_path) -> None:
    pm = checks.build(method, tiny_vit)
    checks.perturb_trainables(pm)
    x = images(24, seed=5)
    y = torch.arange(24) % checks.NUM_CLASSES
    calls = []
    handle = pm.model.patch_embed.register_forward_hook(lambda *a: calls.append(1))
    loader = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
    before = pm.forward_override.feature_dim
    short = HeadTraining(lr=0.05, epochs=4, batch_size=8, warmup_epochs=1)
    result = group_lasso_select(pm, loader, schedule=short, lam=1e-3, keep_frac=0.25)
    handle.remove()
    assert len(calls) == 3  # one backbone pass per batch, shared by stages B and C
    assert result.selection.numel() == round(0.25 * before)
    assert pm.head.in_features == result.selection.numel()
    assert pm.head is pm.forward_override.head
    pm.eval()
    with torch.no_grad():
        features, _ = extract_features(pm, x[:4])
        expected = result.head(features[:, result.selection])
        torch.testing.assert_close(pm(x[:4]), expected, atol=1e-6, rtol=1e-6)
    assert set(pm.trainable_parameters()) >= {"forward_override.head.weight"}
    path = tmp_path / "selected.safetensors"
    pm.save(path)
    tensors, meta = read_safetensors(path)
    assert torch.equal(tensors["__config__.0.selection"], result.selection)
    assert meta["methods"][0]["options"]["selection"] is None  # not as a JSON list
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("forward_override.head.weight").shape[1] == result.selection.numel()
    loaded = vpeft.load(path, base=tiny_vit(0)).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x[:4]), pm(x[:4]))


def test_errors_are_clear() -> None:
    pm = checks.build("lora", tiny_vit, rank=2)
    with pytest.raises(vpeft.ConfigError, match="needs a model adapted with 'vqt' or 'head2toe'"):
        group_lasso_select(pm, torch.zeros(4, 10), torch.zeros(4, dtype=torch.long))
    vqt = checks.build("vqt", tiny_vit)
    with pytest.raises(vpeft.ConfigError, match="columns"):
        group_lasso_select(vqt, torch.zeros(4, 10), torch.zeros(4, dtype=torch.long))
    with pytest.raises(vpeft.ConfigError, match="labels are required"):
        group_lasso_select(vqt, images(2))
