"""Sparse deltas: the O(n) autograd Function against dense autograd, and the layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vpeft.core.wrapper import AdaptedLayer
from vpeft.methods.spt import SparseDelta, SparseLinearDelta, SparseMatmul, sparse_matmul
from vpeft.methods.spt import sparse as sparse_module


def _entries(out_f: int, in_f: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(out_f * in_f, generator=g)[:n]
    return flat // in_f, flat % in_f, torch.randn(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("chunk", [3, 1 << 20])
def test_sparse_matmul_matches_dense_autograd(chunk: int, monkeypatch) -> None:
    monkeypatch.setattr(sparse_module, "CHUNK_ELEMENTS", chunk)  # 3: one token per chunk
    rows, cols, values = _entries(7, 5, 9)
    x = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    values.requires_grad_(True)
    y = sparse_matmul(x, values, rows, cols, 7)
    dense_values = values.detach().clone().requires_grad_(True)
    dense = torch.zeros(7, 5, dtype=torch.float64).index_put((rows, cols), dense_values)
    x2 = x.detach().clone().requires_grad_(True)
    y2 = x2 @ dense.t()
    torch.testing.assert_close(y, y2)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(values.grad, dense_values.grad)
    # ∂L/∂δ_i = Σ_tokens G[:, r_i] · X[:, c_i]
    flat_g, flat_x = g.reshape(-1, 7), x.detach().reshape(-1, 5)
    torch.testing.assert_close(values.grad, (flat_g[:, rows] * flat_x[:, cols]).sum(0))


def test_sparse_matmul_gradcheck() -> None:
    rows, cols, values = _entries(4, 3, 5, seed=1)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    values.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, v: SparseMatmul.apply(a, v, rows, cols, 4), (x, values)
    )


def _largest_allocation(fn) -> int:
    """Bytes of the largest single CPU allocation made while `fn` runs (torch profiler)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    return max(e.cpu_memory_usage for e in prof.events())


def test_backward_memory_is_linear_in_n_never_out_by_in() -> None:
    """Autograd keeps x, δ and the indices; the backward's largest allocation is the input
    gradient (tokens × in), far below one dense out × in gradient — which the naive
    `W.index_put(δ)` formulation does allocate (the probe's sanity check)."""
    out_f, in_f, n = 512, 384, 50
    rows, cols, values = _entries(out_f, in_f, n)
    values = values.float().requires_grad_(True)
    x = torch.randn(16, in_f, requires_grad=True)
    saved: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = SparseMatmul.apply(x, values, rows, cols, out_f)
    assert sorted(saved) == sorted([(16, in_f), (n,), (n,), (n,)])
    g = torch.randn_like(y)
    dense_bytes = out_f * in_f * 4
    assert _largest_allocation(lambda: y.backward(g)) <= 16 * in_f * 4 + 1024 < dense_bytes
    assert values.grad.shape == (n,) and x.grad.shape == (16, in_f)
    naive_values = values.detach().clone().requires_grad_(True)

    def naive() -> None:
        weight = torch.zeros(out_f, in_f).index_put((rows, cols), naive_values)
        (x.detach() @ weight.t()).backward(g)

    assert _largest_allocation(naive) >= dense_bytes


def test_sparse_linear_delta_as_a_branch_merges_exactly() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    w_index = torch.tensor([0, 5, 13, 23])
    branch = SparseLinearDelta(linear, w_index, torch.tensor([1, 3]))
    with torch.no_grad():
        branch.weight_delta.copy_(torch.tensor([0.5, -1.0, 2.0, 0.25]))
        branch.bias_delta.copy_(torch.tensor([0.1, -0.2]))
    parent = nn.Sequential(linear)
    AdaptedLayer.wrap(parent, "0").add_parallel("sparse", branch)
    x = torch.randn(3, 2, 6)
    expected_w = linear.weight.detach().clone().view(-1)
    expected_w[w_index] += branch.weight_delta.detach()
    expected_b = linear.bias.detach().clone()
    expected_b[torch.tensor([1, 3])] += branch.bias_delta.detach()
    want = x @ expected_w.view(4, 6).t() + expected_b
    torch.testing.assert_close(parent(x), want)
    merged = parent[0].merged()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged.weight, expected_w.view(4, 6))
    torch.testing.assert_close(merged.bias, expected_b)


def test_sparse_delta_reparametrises_any_module() -> None:
    norm = nn.LayerNorm(5).requires_grad_(False)
    piece = SparseDelta("weight", norm.weight, torch.tensor([1, 4]))
    with torch.no_grad():
        piece.delta.copy_(torch.tensor([0.5, -2.0]))
    parent = nn.Sequential(norm)
    AdaptedLayer.wrap(parent, "0").add_reparam("sparse", piece)
    x = torch.randn(3, 5)
    weight = torch.ones(5)
    weight[1], weight[4] = 1.5, -1.0
    want = nn.functional.layer_norm(x, (5,), weight, norm.bias.detach())
    torch.testing.assert_close(parent(x), want)
    out = parent(x).sum()
    out.backward()
    assert norm.weight.grad is None and piece.delta.grad is not None
    torch.testing.assert_close(parent[0].merged().weight, weight)
    conv = nn.Conv2d(3, 3, 3, groups=3)
    piece = SparseDelta("weight", conv.weight, torch.tensor([0, 26]))
    holder = nn.Sequential(conv)
    AdaptedLayer.wrap(holder, "0").add_reparam("sparse", piece)
    with torch.no_grad():
        piece.delta.fill_(1.0)
    folded = holder[0].merged()
    assert type(folded) is nn.Conv2d
    assert folded.weight.view(-1)[26] == conv.weight.view(-1)[26] + 1
    img = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(holder(img), folded(img))
