"""Methods that train a chosen subset of the backbone's own parameters, or only a head.

- `linear`: linear probe — frozen backbone, new linear head.
- `full`: every parameter trains.
- `partial-k`: the last k blocks (and, as the last block's output norm, the final norm) + head.
- `bitfit` (Ben Zaken et al., 2022): every bias term of the backbone, on Swin including the
  patch-embedding / patch-merging biases and the relative-position-bias tables (the additive
  attention biases; spec/polyhistor.md pins BitFit this way).
- `norm`: affine parameters of every LayerNorm / BatchNorm / GroupNorm.
- `mlp-k`: frozen backbone with a k-layer MLP head.

All are mergeable except `mlp-k` (whose head is not a timm classifier).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..core.config import MethodConfig, option
from ..core.context import InstallContext
from ..core.registry import MethodInfo, register


@dataclass
class NoOptions(MethodConfig):
    """A method without options."""


@dataclass
class PartialConfig(MethodConfig):
    k: int = option(1, "number of final blocks to fine-tune")

    def validate(self) -> None:
        self._require(self.k >= 1, f"k must be >= 1, got {self.k}")


@dataclass
class MlpHeadConfig(MethodConfig):
    k: int = option(3, "number of linear layers in the MLP head (k >= 2)")
    hidden: int = option(0, "hidden width (0 = the backbone's feature width)")

    def validate(self) -> None:
        self._require(self.k >= 2, f"k must be >= 2 (k=1 is the linear probe), got {self.k}")
        self._require(self.hidden >= 0, f"hidden must be >= 0, got {self.hidden}")


def install_linear(ctx: InstallContext, cfg: NoOptions) -> None:
    """Nothing beyond the head (already trainable)."""


def install_full(ctx: InstallContext, cfg: NoOptions) -> None:
    """Every parameter of the backbone's feature path (and the head)."""
    unused = {id(p) for m in ctx.spec.unused for p in m.parameters()}
    ctx.train(*(p for p in ctx.model.parameters() if id(p) not in unused))


def install_partial(ctx: InstallContext, cfg: PartialConfig) -> None:
    depth = ctx.spec.depth
    if cfg.k > depth:
        from ..errors import ConfigError

        raise ConfigError(f"partial-k: k={cfg.k} exceeds the backbone depth {depth}")
    for block in ctx.spec.blocks[depth - cfg.k :]:
        ctx.train(block.module)
    for norm in ctx.spec.final_norms:
        ctx.train(norm)


def _backbone_modules(ctx: InstallContext) -> list[nn.Module]:
    """Backbone modules on the feature path (neither the head nor `spec.unused`)."""
    skip = ctx.spec.excluded_modules()
    return [m for m in ctx.model.modules() if id(m) not in skip]


def install_bitfit(ctx: InstallContext, cfg: NoOptions) -> None:
    """Every `bias` parameter of every backbone module (incl. patch embed / merging on Swin)
    and Swin's relative-position-bias tables."""
    for module in _backbone_modules(ctx):
        bias = module._parameters.get("bias")
        if isinstance(bias, nn.Parameter):
            ctx.train(bias)
    for table in ctx.spec.relative_position_tables:
        ctx.train(table)


def install_norm(ctx: InstallContext, cfg: NoOptions) -> None:
    for norm in ctx.spec.norm_modules():
        ctx.train(norm)


def install_mlp_head(ctx: InstallContext, cfg: MlpHeadConfig) -> None:
    """Replace every task's linear classifier with Linear-ReLU-…-Linear (k layers)."""
    width = cfg.hidden or ctx.spec.num_features
    for task, old in list(ctx.heads.items()):
        if not isinstance(old, nn.Linear):
            from ..errors import UnsupportedBackboneError

            raise UnsupportedBackboneError(
                f"mlp-k replaces a linear classifier; the head of task {task!r} is "
                f"{type(old).__name__}"
            )
        layers: list[nn.Module] = []
        d_in = old.in_features
        for _ in range(cfg.k - 1):
            layers += [nn.Linear(d_in, width), nn.ReLU()]
            d_in = width
        layers.append(nn.Linear(d_in, old.out_features))
        head = nn.Sequential(*layers).to(old.weight.device, old.weight.dtype)
        ctx.heads[task] = head
        ctx.train(head)


_PAPERS = {
    "linear": "linear probing (frozen features + linear classifier)",
    "full": "full fine-tuning",
    "partial-k": "Yosinski et al., How transferable are features in deep neural networks?, 2014",
    "mlp-k": "Jia et al., Visual Prompt Tuning (MLP-k baseline), ECCV 2022",
    "bitfit": "Ben Zaken et al., BitFit, ACL 2022",
    "norm": "Basu et al. / Frankle et al., tuning only normalisation affine parameters",
}

for _name, _family, _merge, _cfg, _install, _summary in (
    ("linear", "head", True, NoOptions, install_linear, "frozen backbone + new linear head"),
    ("full", "full", True, NoOptions, install_full, "every parameter trains"),
    ("partial-k", "selective", True, PartialConfig, install_partial, "last k blocks + head"),
    ("mlp-k", "head", False, MlpHeadConfig, install_mlp_head, "frozen backbone + k-layer MLP"),
    ("bitfit", "selective", True, NoOptions, install_bitfit, "all bias terms"),
    ("norm", "selective", True, NoOptions, install_norm, "norm-layer affine parameters"),
):
    register(MethodInfo(_name, _family, _PAPERS[_name], _merge, _cfg, _install, _summary))
