"""MTLoRA (Agiza, Neseem, Reda, "MTLoRA: A Low-Rank Adaptation Approach for Efficient
Multi-Task Learning", CVPR 2024), as the official code (github.com/scale-lab/MTLoRA) builds it
on Swin for dense multi-task learning; docs/methods/mtlora.md records every choice.

- **TA-LoRA** (task-agnostic, shared by all tasks) on the fused qkv, proj, fc1 and fc2 of every
  block: ``W x + b + s · B A x`` with one A (r × d_in), B (d_out × r) per layer.
- **MT-LoRA** in the last block of every stage: proj, fc1 and fc2 also get one **TS-LoRA**
  (task-specific) per task; the block yields the task-agnostic output (the next stage's input)
  and the active task's output (that stage's tap, read by the task's decoder); see `layers.py`.
  The qkv of that block keeps TA-LoRA only (attention is shared, as in the official code).
- Also trained, as the official defaults do: the patch embedding, every LayerNorm, the
  relative-position-bias tables and the patch-merging reductions (``patch_merging=lora``: a
  TA-LoRA on them instead, MTLoRA+). No biases.
- Scales are applied as given (official configs: 4.0 for TA and TS), not divided by the rank.
- The last stage's task-agnostic output feeds nothing (no next stage; its tap reads the task
  output), so that block's proj / fc1 / fc2 get no TA-LoRA here (the official code creates
  them but they never receive a gradient).

Trainable encoder count (mlp ratio 4, T tasks, stage widths d_i, depths n_i, S stages):
``Σ_i [16 r d_i (n_i − 1) + 4 r d_i + 12 r d_i·[i < S−1] + 12 T r_t d_i] + extras``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ...backbones import LinearSlot
from ...core.config import MethodConfig, option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...core.task_switch import TaskSwitch
from ...core.wrapper import AdaptedLayer
from ...errors import ConfigError, UnsupportedBackboneError
from ..lora.layer import LoraBranch
from .layers import MtLoraBlock, MtLoraLinear

PATCH_MERGING = ("train", "lora", "frozen")


@dataclass
class MtLoraConfig(MethodConfig):
    rank: int = option(16, "rank r of the task-agnostic LoRA (TA-LoRA) of every block")
    task_rank: int = option(4, "rank of each task-specific LoRA (TS-LoRA), last block per stage")
    scale: float = option(4.0, "output scale of TA-LoRA, applied as is (not divided by r)")
    task_scale: float = option(4.0, "output scale of TS-LoRA, applied as is")
    dropout: float = option(0.05, "dropout on the LoRA branch inputs (official: 0.05)")
    patch_merging: str = option(
        "train", "patch-merging reductions: train (MTLoRA), lora (MTLoRA+) or frozen"
    )
    train_norms: bool = option(True, "also train every LayerNorm of the backbone (official)")
    train_patch_embed: bool = option(True, "also train the patch embedding (official)")
    train_relative_bias: bool = option(True, "also train relative-position-bias tables")

    def validate(self) -> None:
        for name in ("rank", "task_rank"):
            value = getattr(self, name)
            self._require(value >= 1, f"{name} must be >= 1, got {value}")
        self._require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        self._require(
            self.patch_merging in PATCH_MERGING,
            f"patch_merging must be one of {list(PATCH_MERGING)}, got {self.patch_merging!r}",
        )


def install_mtlora(ctx: InstallContext, cfg: MtLoraConfig) -> None:
    """TA-LoRA in every block, MT-LoRA (TA + one TS-LoRA per task) in each stage's last block,
    that block's task output routed to the stage's tap; plus the official extra trainables."""
    ctx.require_family("swin")
    assert ctx.task_state is not None
    blocks = ctx.spec.blocks
    last = {b.stage: b.index for b in blocks}  # blocks are in order: the last one wins
    final_stage = max(last)
    plan: list[tuple[LinearSlot, str]] = []  # (slot, "ta" | "mt" | "mt-no-ta")
    for block in blocks:
        m = block.matrices()
        plan.append((_fused_qkv(ctx, m["q"]), "ta"))
        kind = "ta" if block.index != last[block.stage] else "mt"
        if kind == "mt" and block.stage == final_stage:
            kind = "mt-no-ta"
        plan += [(m[role], kind) for role in ("proj", "fc1", "fc2")]
    merging = ctx.spec.patch_merging if cfg.patch_merging == "lora" else []
    for slot, kind in plan + [(s, "ta") for s in merging]:  # every check before any change
        _check_rank(cfg.rank, slot)
        if kind != "ta":
            _check_rank(cfg.task_rank, slot)

    def branch(slot: LinearSlot, rank: int, scale: float) -> LoraBranch:
        made = LoraBranch(slot.in_features, slot.out_features, rank, scale, cfg.dropout)
        return made.to(slot.weight.device, slot.weight.dtype)

    for slot, kind in plan + [(s, "ta") for s in merging]:
        if kind == "ta":
            ta = branch(slot, cfg.rank, cfg.scale)
            AdaptedLayer.wrap(slot.parent, slot.attr).add_parallel("ta_lora", ta, slot.rows)
            ctx.train(ta)
            continue
        shared = branch(slot, cfg.rank, cfg.scale) if kind == "mt" else None
        specific = TaskSwitch(
            ctx.task_state, lambda slot=slot: branch(slot, cfg.task_rank, cfg.task_scale)
        )
        setattr(slot.parent, slot.attr, MtLoraLinear(slot.module, shared, specific))
        ctx.train(*([shared] if shared is not None else []), specific)
    for block in blocks:
        if block.index == last[block.stage]:
            wrapper = MtLoraBlock(block.module)
            _replace_child(ctx.model, block.module, wrapper)
            ctx.spec.tap_sources[block.stage] = wrapper.take_task_map
    _train_extras(ctx, cfg)


def _train_extras(ctx: InstallContext, cfg: MtLoraConfig) -> None:
    """The non-LoRA tensors the official code trains (each once, shared by all tasks)."""
    params: dict[int, nn.Parameter] = {}
    modules: list[nn.Module] = []
    if cfg.train_patch_embed:
        modules.append(ctx.spec.patch_embed)
    if cfg.train_norms:
        modules += ctx.spec.norm_modules()
    for module in modules:
        params.update({id(p): p for p in module.parameters()})
    if cfg.train_relative_bias:
        params.update({id(p): p for p in ctx.spec.relative_position_tables})
    if cfg.patch_merging == "train":
        params.update({id(s.linear.weight): s.linear.weight for s in ctx.spec.patch_merging})
    ctx.train(*params.values())


def _fused_qkv(ctx: InstallContext, q: LinearSlot) -> LinearSlot:
    """The whole fused qkv layer (MTLoRA puts one TA-LoRA on it, d → 3d)."""
    if q.rows is None:
        raise UnsupportedBackboneError(
            f"mtlora adapts one fused qkv projection; the {ctx.spec.family} backbone projects "
            "q, k and v separately"
        )
    return LinearSlot(q.parent, q.attr, "qkv")


def _check_rank(rank: int, slot: LinearSlot) -> None:
    low = min(slot.in_features, slot.out_features)
    if rank > low:
        raise ConfigError(
            f"mtlora rank {rank} is larger than min(d_in, d_out) = {low} of the {slot.role} "
            f"matrix ({slot.out_features} x {slot.in_features}); use a rank <= {low}"
        )


def _replace_child(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put `new` where `old` sits in `root`'s module tree (found by identity)."""
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return
    raise UnsupportedBackboneError("mtlora: a stage's last block is not inside the model")


register(
    MethodInfo(
        name="mtlora",
        family="reparameterization",
        paper="Agiza, Neseem, Reda, MTLoRA: A Low-Rank Adaptation Approach for Efficient "
        "Multi-Task Learning, CVPR 2024",
        mergeable=False,
        config=MtLoraConfig,
        install=install_mtlora,
        summary="shared TA-LoRA in every block + per-task TS-LoRA in each stage's last block, "
        "task-specific stage outputs to the decoders",
        backbones=("swin",),
        multi_task=True,
    )
)
