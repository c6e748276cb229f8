"""Declarative description of where things live inside a backbone (design.md, layer 4).

Methods talk to these descriptions, never to parameter names. A `LinearSlot` names one
*logical* linear map — e.g. the query projection — even when the backbone fuses q, k and v into
one `qkv` layer; the slot then covers a row range of the fused weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: Logical matrix roles every transformer block may expose.
MATRIX_ROLES: tuple[str, ...] = ("q", "k", "v", "proj", "fc1", "fc2")


@dataclass
class LinearSlot:
    """One logical linear map: `getattr(parent, attr)` restricted to output rows `rows`.

    `rows=None` means the whole layer. For a fused `qkv` layer of width `3·D`, the query slot is
    rows `[0, D)`, the key slot `[D, 2D)`, the value slot `[2D, 3D)`.
    """

    parent: nn.Module
    attr: str
    role: str
    rows: slice | None = None

    @property
    def module(self) -> nn.Module:
        """The module currently installed at this position (possibly a vpeft wrapper)."""
        return getattr(self.parent, self.attr)

    @property
    def linear(self) -> nn.Linear:
        """The frozen base `nn.Linear`, looking through vpeft wrappers."""
        module = self.module
        while hasattr(module, "base"):
            module = module.base
        if not isinstance(module, nn.Linear):
            raise TypeError(f"slot {self.role} is a {type(module).__name__}, not nn.Linear")
        return module

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        if self.rows is None:
            return self.linear.out_features
        return self.rows.stop - self.rows.start

    @property
    def weight(self) -> torch.Tensor:
        """This slot's rows of the frozen weight (a view)."""
        w = self.linear.weight
        return w if self.rows is None else w[self.rows]

    @property
    def bias(self) -> torch.Tensor | None:
        b = self.linear.bias
        if b is None or self.rows is None:
            return b
        return b[self.rows]


@dataclass
class ModuleSite:
    """A settable position in the module tree: `getattr(parent, attr)` (possibly wrapped)."""

    parent: nn.Module
    attr: str

    @property
    def module(self) -> nn.Module:
        return getattr(self.parent, self.attr)


@dataclass
class AttentionSpec:
    """Attention of one block: its module, its logical q/k/v/proj slots and head layout.

    `output` is the site whose output is the attention sub-layer's result *before* the residual
    add — where a sequential adapter goes (Houlsby). timm's attention module returns exactly
    that, so it is the module itself (the default); transformers attention modules return tuples
    or add the residual themselves, so their description points at the output projection.
    `cross` marks a cross-attention (queries from this stream, keys/values from the other).
    """

    module: nn.Module
    parent: nn.Module
    attr: str
    kind: str  # "global" (ViT), "window" (Swin), "spatial-reduction" (PVT-v2), "hf-*" (HF)
    num_heads: int
    head_dim: int
    q: LinearSlot
    k: LinearSlot
    v: LinearSlot
    proj: LinearSlot
    output: ModuleSite | None = None
    cross: bool = False
    #: softmax scale and attention-probability dropout, for modules that do not keep them as
    #: timm's `scale` / `attn_drop` (transformers attention)
    scale: float | None = None
    dropout: float | None = None

    @property
    def output_site(self) -> ModuleSite:
        """Where the sub-layer output (before the residual add) is produced."""
        return self.output if self.output is not None else ModuleSite(self.parent, self.attr)


@dataclass
class MlpSpec:
    """The feed-forward sub-layer of a block, by the two positions adapters need.

    `input` is the site whose module receives the MLP input x̃ (the LN2 output of a pre-norm
    block); `output` the site whose module returns MLP(x̃) *before* the residual add. In timm
    (and HF ViT / CLIP in transformers 5) both are the one `mlp` module. In BERT-style layers
    (ViLT, BridgeTower) the MLP is `intermediate` (fc1 + act) then `output` (fc2 + dropout +
    residual [+ LayerNorm]); there `input` is `intermediate` and `output` is `output.dense`.
    """

    input: ModuleSite
    output: ModuleSite

    @property
    def single(self) -> bool:
        """True when one module is the whole MLP (input and output site coincide)."""
        return self.input.parent is self.output.parent and self.input.attr == self.output.attr


@dataclass
class BlockSpec:
    """One residual block: position, width, and the sub-modules methods attach to.

    `stream` names the token stream a block belongs to in multi-tower models ("vision",
    "text"; BridgeTower's co-attention fusion layers are "fusion-text" / "fusion-image");
    single-stream backbones use "main". A fusion layer has both `attention` (self-attention on
    its own stream) and `cross_attention` (queries from its stream, keys/values from the other).
    """

    index: int
    stage: int
    module: nn.Module
    dim: int
    attention: AttentionSpec | None
    fc1: LinearSlot
    fc2: LinearSlot
    mlp: MlpSpec
    norms: list[nn.Module]
    cross_attention: AttentionSpec | None = None
    stream: str = "main"
    #: the block is ``s₁ = s + proj-output(norms[0](s))``, ``s₂ = s₁ + fc2-output(norms[1](s₁))``
    #: with the attention projection's and fc2's outputs added unchanged (no layer scale,
    #: drop-path or dropout between), and its output is the next block's input: SSF then
    #: recovers those outputs from the residual sums the norms keep (`methods/ssf/residual`)
    plain_residual: bool = False

    @property
    def mlp_parent(self) -> nn.Module:
        """Parent of the single module that is the whole MLP (timm layouts)."""
        return self._single_mlp().parent

    @property
    def mlp_attr(self) -> str:
        return self._single_mlp().attr

    def _single_mlp(self) -> ModuleSite:
        if not self.mlp.single:
            from ..errors import UnsupportedBackboneError

            raise UnsupportedBackboneError(
                f"block {self.index} ({self.stream}) has no single MLP module (its feed-forward "
                "is split into input and output modules); use BlockSpec.mlp.input / .output"
            )
        return self.mlp.input

    def matrices(self) -> dict[str, LinearSlot]:
        """The block's logical matrices by role (q, k, v, proj, fc1, fc2 where present).

        Cross-attention matrices (fusion layers) are not included: see `cross_matrices`.
        """
        out: dict[str, LinearSlot] = {}
        if self.attention is not None:
            a = self.attention
            out.update(q=a.q, k=a.k, v=a.v, proj=a.proj)
        out.update(fc1=self.fc1, fc2=self.fc2)
        return out

    def cross_matrices(self) -> dict[str, LinearSlot]:
        """The cross-attention's q, k, v, proj (empty for blocks without one)."""
        a = self.cross_attention
        return {} if a is None else {"q": a.q, "k": a.k, "v": a.v, "proj": a.proj}


def pre_norm_block(
    index: int,
    stage: int,
    block: nn.Module,
    dim: int,
    attention: AttentionSpec,
    plain_residual: bool = False,
) -> BlockSpec:
    """The usual timm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``
    with ``block.mlp.fc1`` / ``block.mlp.fc2`` (ViT, Swin, PVT-v2)."""
    return BlockSpec(
        index=index,
        stage=stage,
        module=block,
        dim=dim,
        attention=attention,
        fc1=LinearSlot(block.mlp, "fc1", "fc1"),
        fc2=LinearSlot(block.mlp, "fc2", "fc2"),
        mlp=single_mlp(block, "mlp"),
        norms=[block.norm1, block.norm2],
        plain_residual=plain_residual,
    )


def single_mlp(parent: nn.Module, attr: str) -> MlpSpec:
    """An MLP that is one module `parent.attr` (input and output site coincide)."""
    return MlpSpec(ModuleSite(parent, attr), ModuleSite(parent, attr))


@dataclass
class TokenPath:
    """Where the block-level token sequence starts and ends, for methods that add tokens (VPT).

    - `entry`: the module whose output is the first block's input sequence (timm ViT
      `norm_pre`, HF ViT `embeddings`, CLIP `pre_layrnorm`, ViLT `embeddings`).
      `entry_with_mask`: its output is ``(tokens, key_mask)`` (ViLT: the (B, N) mask from which
      the model builds its attention mask) — added tokens then get mask 1 so they are visible.
    - `blocks`: the `nn.ModuleList` holding the blocks in order (slots are replaceable).
    - `exit`: where added tokens leave: before the module that receives the last block's output
      (`exit_after=False`: timm / HF ViT final norm, ViLT `layernorm`), or after the module
      given (`exit_after=True`: CLIP vision, whose post-LN only sees the pooled CLS token).
    - `prompt_at`: index at which added tokens enter the sequence — after the class / register
      tokens for ViT and CLIP; None for "after the whole sequence" (ViLT: after text and image
      tokens, whose lengths vary with the batch).
    """

    entry: ModuleSite
    blocks: nn.ModuleList
    exit: ModuleSite
    prompt_at: int | None
    entry_with_mask: bool = False
    exit_after: bool = False


#: `pool(model, inputs)` -> pooled feature (B, num_features) of a headless backbone.
Pool = Callable[[nn.Module, Any], torch.Tensor]
#: `make(model, batch, img_size, generator)` -> random inputs the backbone accepts
InputMaker = Callable[[nn.Module, int, int | None, torch.Generator], Any]


def timm_pool(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """timm's pre-logits feature: `forward_head(forward_features(x), pre_logits=True)`."""
    return model.forward_head(model.forward_features(inputs), pre_logits=True)


@dataclass
class BackboneSpec:
    """Everything a method needs to know about one backbone instance."""

    family: str
    model: nn.Module
    blocks: list[BlockSpec]
    embed_dim: int
    num_features: int
    patch_size: int
    num_prefix_tokens: int
    patch_embed: nn.Module
    cls_token: nn.Parameter | None
    pos_embed: nn.Parameter | None
    final_norms: list[nn.Module]
    stage_dims: list[int] = field(default_factory=list)
    token_layout: str = "sequence"  # "sequence" (B, N, C), "nhwc" (Swin), "nchw" (ConvNeXt)
    #: feature taps for dense decoders: stage indices (hierarchical) or block indices (ViT);
    #: None = every stage (hierarchical) / four evenly spaced blocks (ViT)
    tap_indices: tuple[int, ...] | None = None
    tokens: TokenPath | None = None
    #: the pooled feature of the headless backbone; see `features`
    pool: Pool = timm_pool
    #: modules of the model that the pooled feature never uses (e.g. HF ViT's pooler when the
    #: feature is the normed CLS token); selective methods leave them frozen
    unused: list[nn.Module] = field(default_factory=list)
    #: the headless backbone when `model` is a `BackboneWithHead` around it
    headless: nn.Module | None = None
    #: the backbone's input fields ("pixel_values"; ViLT: "input_ids", "pixel_values", ...)
    input_names: tuple[str, ...] = ("pixel_values",)
    #: random inputs for profiling (transformers families; None: an image tensor)
    make_inputs: InputMaker | None = None
    #: the modality-type embedding of single-stream VL models (ViLT's text / image type)
    modality_embed: nn.Module | None = None
    #: whether `tap_features` runs `final_norms` (PVT-v2's per-stage norms) or not (Swin, ViT,
    #: ConvNeXt: the final norm serves only the pooled classification path)
    final_norms_in_taps: bool = False
    #: learnable relative-position-bias tables of the attention layers (Swin), in block order
    relative_position_tables: list[nn.Parameter] = field(default_factory=list)
    #: the linear reductions of the patch-merging layers between stages (Swin), in stage order
    patch_merging: list[LinearSlot] = field(default_factory=list)
    #: tap index -> a function returning the map that tap reads instead of the stage output
    #: (B, C, H, W), set by methods whose stages hand one tensor to the next stage and another
    #: to the decoders (MTLoRA: task-agnostic onwards, task-specific to the tap)
    tap_sources: dict[int, Callable[[], torch.Tensor]] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def has_attention(self) -> bool:
        return all(b.attention is not None for b in self.blocks)

    def taps(self) -> list[int]:
        """Indices of the tapped stages / blocks, in order."""
        if self.tap_indices is not None:
            return list(self.tap_indices)
        if self.family == "vit":
            step = max(self.depth // 4, 1)
            return [min(step * (i + 1), self.depth) - 1 for i in range(min(4, self.depth))]
        return list(range(len(self.stage_dims)))

    def tap_channels_and_strides(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(channels, stride w.r.t. the input) of every tapped map (timm's ``feature_info``)."""
        info = getattr(self.model, "feature_info", None) or []
        taps = self.taps()
        if len(info) <= max(taps, default=-1):
            return (), ()
        return (
            tuple(int(info[i]["num_chs"]) for i in taps),
            tuple(int(info[i]["reduction"]) for i in taps),
        )

    def tap_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped maps (B, C, H, W), no final norm (timm ``forward_intermediates``); the
        blocks run through their own (possibly wrapped) modules, so methods apply. A tap with
        a source in `tap_sources` reads that source's map, recorded during the same run."""
        run = getattr(self.model, "forward_intermediates", None)
        if run is None:
            from ..errors import UnsupportedBackboneError

            raise UnsupportedBackboneError(f"{self.family} backbones give no feature maps")
        taps = self.taps()
        maps = list(run(x, indices=taps, intermediates_only=True))
        sources = self.tap_sources
        return [sources[t]() if t in sources else m for t, m in zip(taps, maps, strict=True)]

    def unused_by_taps(self) -> list[nn.Module]:
        """Modules `tap_features` never runs (a dense model never reads them, so never trains
        them): the final norms of Swin, ViT and ConvNeXt."""
        return [] if self.final_norms_in_taps else list(self.final_norms)

    def classifier(self) -> nn.Module:
        """The task head currently installed in the backbone."""
        return self.model.get_classifier()

    def features(self, inputs: Any) -> torch.Tensor:
        """The pooled feature (B, num_features) of `inputs` (a tensor, or a dict of tensors for
        multi-input models), without any head: what a task head sits on.

        timm: the pre-logits feature; HF ViT: the CLS token after the final LayerNorm (as
        `ViTForImageClassification`); CLIP vision: `pooler_output` (post-LN CLS); ViLT /
        BridgeTower: `pooler_output`. The one function the model wrapper calls.
        """
        return self.pool(self.backbone, inputs)

    def example_inputs(
        self, batch: int, img_size: int | None = None, generator: torch.Generator | None = None
    ) -> Any:
        """Random inputs of the backbone's kind (a dict of tensors for text + image models);
        `img_size` None means the configured size. Used by `vpeft profile`."""
        if self.make_inputs is None:
            raise ValueError(f"{self.family}: no example-input maker; pass image tensors")
        return self.make_inputs(self.backbone, batch, img_size, generator or torch.Generator())

    @property
    def backbone(self) -> nn.Module:
        """The headless backbone (`model` itself, or the one a `BackboneWithHead` holds)."""
        return self.model if self.headless is None else self.headless

    def excluded_modules(self) -> set[int]:
        """ids of the modules selective methods never train: the head and `unused` modules."""
        out = {id(m) for m in self.classifier().modules()}
        for module in self.unused:
            out.update(id(m) for m in module.modules())
        return out

    def norm_modules(self) -> list[nn.Module]:
        """Every normalisation layer (LayerNorm / BatchNorm / GroupNorm) of the backbone."""
        skip = self.excluded_modules()
        return [m for m in self.model.modules() if isinstance(m, NORM_TYPES) and id(m) not in skip]


NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
)
