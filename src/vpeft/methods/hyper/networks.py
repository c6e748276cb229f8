"""The hypernetworks of Hyperformer, Polyhistor and Polyhistor-Lite, and the adapter they feed.

Every trainable tensor of a hypernetwork method lives in one `nn.Module` (`LayerHypernet` or
`LiteHypernet`) registered once on the backbone (``vpeft_hypernet``); the adapters inserted in the
blocks (`GeneratedAdapter`) own no parameters: in their forward they ask the hypernetwork for the
active task's weights of their layer — computed once per call from the task embedding, i.e. once
per task per forward, never per image — and apply them (`adapter_forward`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ...core.task_switch import TaskState
from ..adapters.bottleneck import ACTIVATIONS
from .functional import (
    AdapterWeights,
    adapter_forward,
    adapter_shapes,
    kronecker_sum,
    kronecker_sum_vector,
)
from .generators import TaskProjector, TensorGenerator


@dataclass(frozen=True)
class HypernetOptions:
    """What every hypernetwork builds its parts with: the task-embedding width, the projector's
    hidden width and output width k, and the generators' ψ, init std and LayerNorm zero init."""

    embedding_dim: int
    hidden_dim: int
    k: int
    psi: str
    init_std: float
    zero_init: bool

    def projector(self, in_dim: int) -> TaskProjector:
        """in_dim → hidden → ReLU → k → LN."""
        return TaskProjector(in_dim, self.hidden_dim, self.k)

    def generator(self, shapes: Mapping[str, tuple[int, ...]], rank: int | None) -> TensorGenerator:
        """k → the tensors of `shapes` (matrices as rank-r factor products unless rank is None)."""
        return TensorGenerator(self.k, shapes, rank, self.psi, self.init_std, self.zero_init)


class _TaskIndexed(nn.Module):
    """Holds the task embeddings ``task_embeddings[t]`` (one row per task, N(0, 1))."""

    def __init__(self, state: TaskState, embedding_dim: int) -> None:
        super().__init__()
        self.task_names = tuple(state.tasks)
        self.task_embeddings = nn.Parameter(torch.randn(len(self.task_names), embedding_dim))
        object.__setattr__(self, "_state", state)  # a plain reference, not a submodule

    def task_embedding(self, task: str | None = None) -> torch.Tensor:
        """The embedding V^t of `task` (default: the active task; a single-task model runs its
        backbone without activating the task)."""
        name = task if task is not None else self._state.current
        if name is None:
            name = self.task_names[0] if len(self.task_names) == 1 else self._state.require()
        return self.task_embeddings[self.task_names.index(name)]


class LayerHypernet(_TaskIndexed):
    """Hyperformer (Eq. 2, ``rank=None``) and Polyhistor (Eq. 3, decomposed with rank r).

    Per block its own `TaskProjector` (task embedding → k); per adapter site its own
    `TensorGenerator` (k → the adapter's down/up weights and biases and its LayerNorm).
    ``layers``: adapter key -> (block key, width d, bottleneck n, rank r or None).
    """

    def __init__(
        self,
        state: TaskState,
        layers: Mapping[str, tuple[str, int, int, int | None]],
        options: HypernetOptions,
    ) -> None:
        super().__init__(state, options.embedding_dim)
        self.block_of = {key: block for key, (block, *_rest) in layers.items()}
        self.projectors = nn.ModuleDict(
            {
                block: options.projector(options.embedding_dim)
                for block in dict.fromkeys(self.block_of.values())
            }
        )
        self.generators = nn.ModuleDict(
            {
                key: options.generator(adapter_shapes(d, n), rank)
                for key, (_block, d, n, rank) in layers.items()
            }
        )

    def projected(self, key: str, task: str | None = None) -> torch.Tensor:
        """z = projector_block(V^t), the generator input of adapter `key`."""
        return self.projectors[self.block_of[key]](self.task_embedding(task))

    def weights(self, key: str, task: str | None = None) -> AdapterWeights:
        """The adapter of `key` for `task` (default: the active task)."""
        return AdapterWeights(**self.generators[key](self.projected(key, task)))


class ScalingKernels(nn.Module):
    """Layer-wise scaling kernels of one layer with scale s > 1 (Eq. 4), N(0, 1) at init:
    ``weight`` (s, s, s): one s×s kernel per template, shared by W_down and W_up;
    ``bias`` (s, s): row i scales template i's b_down and b_up;
    ``norm`` (s, s): row i scales template i's LayerNorm γ and β."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(scale, scale, scale))
        self.bias = nn.Parameter(torch.randn(scale, scale))
        self.norm = nn.Parameter(torch.randn(scale, scale))

    def combine(self, templates: Mapping[str, torch.Tensor]) -> AdapterWeights:
        """``W = Σ_i W̃_i ⊗ α_i`` for the matrices, the same with row vectors for the rest."""
        kernel_of = {
            "down": self.weight,
            "up": self.weight,
            "down_bias": self.bias,
            "up_bias": self.bias,
            "norm_weight": self.norm,
            "norm_bias": self.norm,
        }
        out = {}
        for name, t in templates.items():
            kernels = kernel_of[name]
            out[name] = (kronecker_sum if t.dim() == 3 else kronecker_sum_vector)(t, kernels)
        return AdapterWeights(**out)


class LiteHypernet(_TaskIndexed):
    """Polyhistor-Lite (Eq. 5-6): one projector and one decomposed generator shared by all
    layers and tasks, fed [task embedding; layer embedding], emitting template kernels of the
    first stage's size (D, n = D/λ); layer l of scale s(l) = d_l / D combines its s templates
    with its `ScalingKernels` (none at s = 1).

    ``scales``: adapter key -> s(l), in model order; the layer embeddings hold Σ_l s(l) rows,
    rows ``offset(l) … offset(l)+s(l)-1`` belonging to layer l (template index i).
    """

    def __init__(
        self,
        state: TaskState,
        scales: Mapping[str, int],
        template_dim: int,
        template_bottleneck: int,
        rank: int,
        options: HypernetOptions,
    ) -> None:
        super().__init__(state, options.embedding_dim)
        self.scales = dict(scales)
        self.offsets: dict[str, int] = {}
        rows = 0
        for key, s in self.scales.items():
            self.offsets[key] = rows
            rows += s
        self.layer_embeddings = nn.Parameter(torch.randn(rows, options.embedding_dim))
        self.projector = options.projector(2 * options.embedding_dim)
        self.generator = options.generator(adapter_shapes(template_dim, template_bottleneck), rank)
        self.kernels = nn.ModuleDict(
            {key: ScalingKernels(s) for key, s in self.scales.items() if s > 1}
        )

    def templates(self, key: str, task: str | None = None) -> dict[str, torch.Tensor]:
        """Eq. 5: the s(l) template tensors of layer `key` (each with a leading dim s)."""
        s, start = self.scales[key], self.offsets[key]
        layer = self.layer_embeddings[start : start + s]
        task_rows = self.task_embedding(task).expand(s, -1)
        z = self.projector(torch.cat([task_rows, layer], dim=-1))
        return self.generator(z)

    def weights(self, key: str, task: str | None = None) -> AdapterWeights:
        """Eq. 6: the adapter of layer `key` for `task` (default: the active task)."""
        templates = self.templates(key, task)
        if self.scales[key] == 1:  # stage 1: the template itself, no scaling kernel
            return AdapterWeights(**{n: t[0] for n, t in templates.items()})
        return self.kernels[key].combine(templates)


class GeneratedAdapter(nn.Module):
    """A sequential adapter whose tensors the hypernetwork generates for the active task.

    Owns no parameters (the hypernetwork is a plain reference, named once on the backbone);
    ``reads_task`` tells the `PeftModel` to run the backbone once per task."""

    reads_task = True

    def __init__(self, hypernet: nn.Module, key: str, activation: str) -> None:
        super().__init__()
        object.__setattr__(self, "_hypernet", hypernet)
        self.key = key
        self.act = ACTIVATIONS[activation]()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return adapter_forward(h, self._hypernet.weights(self.key), self.act)

    def extra_repr(self) -> str:
        return f"key={self.key!r}"


def layer_key(block_index: int, site: str) -> str:
    """Name of an adapter in the hypernetwork: ``b<block>_<site>`` (e.g. ``b3_mlp``)."""
    return f"b{block_index}_{site}"
