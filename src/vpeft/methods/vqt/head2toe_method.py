"""Head2Toe (Evci et al., ICML 2022), the intermediate-feature baseline of VQT: `head2toe`.

Frozen backbone; the input tokens and four taps in every block (after LN1, after MSA, inside
the MLP after the activation, after the MLP) are average-pooled in `pool_groups` token groups,
L2-normalised per tap, concatenated and linearly probed (`vpeft.methods.vqt.head2toe`). Feature
selection by group lasso is `vpeft.methods.vqt.group_lasso_select` (the kept columns are saved with
the model). Trainable: the head only, (D·g + M·(3·D + D_mlp)·g)·C + C. No autograd through the
backbone, so training memory is that of inference plus the head.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.config import option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...errors import ConfigError
from .head2toe import Head2ToeFeatures
from .method import SelectionConfig, drop_classifier


@dataclass
class Head2ToeConfig(SelectionConfig):
    pool_groups: int = option(1, "contiguous token groups each tap is average-pooled into")
    normalize: bool = option(True, "L2-normalise each tap's pooled features")

    def validate(self) -> None:
        super().validate()
        self._require(self.pool_groups >= 1, f"pool_groups must be >= 1, got {self.pool_groups}")


def install_head2toe(ctx: InstallContext, cfg: Head2ToeConfig) -> None:
    ctx.require_family("vit")
    drop_classifier(ctx)
    training = [n for n, p in ctx.model.named_parameters() if p.requires_grad]
    if training:
        raise ConfigError(
            "head2toe probes a frozen backbone, but other installed methods train "
            f"{training[:3]}; apply head2toe to a plain backbone"
        )
    module = Head2ToeFeatures(
        ctx.spec, ctx.num_classes, cfg.pool_groups, cfg.normalize, cfg.selection_tensor()
    )
    ctx.train(module)
    ctx.set_forward(module, module.head)


register(
    MethodInfo(
        name="head2toe",
        family="head",
        paper="Evci et al., Head2Toe: Utilizing Intermediate Representations for Better "
        "Transfer Learning, ICML 2022",
        mergeable=False,
        config=Head2ToeConfig,
        install=install_head2toe,
        summary="pooled features of every block (frozen) + linear head, optional group lasso",
        backbones=("vit",),
    )
)
