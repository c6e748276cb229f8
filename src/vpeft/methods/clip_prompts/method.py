"""`zero-shot`, `coop` and `cocoop` on a transformers `CLIPModel` (APT's CLIP baselines).

Pinned definitions (docs/methods/clip_prompts.md):
- `zero-shot`: hard prompt "[BOS] template name suffix [EOS]" (`template_ids`, e.g. the tokens
  of "a photo of a", `suffix_ids` "."); logits = exp(t)·cos(image, text). Nothing trains. Other
  methods applied afterwards (APT on the text tower) train through this classifier.
- `coop` (Zhou et al., IJCV 2022): M learnable context vectors (default 16; `init_ids` sets
  M = len(init_ids) and initialises from those tokens' embeddings, e.g. "a photo of a" with
  M = 4) shared by all classes, in the text tower's token-embedding space; random init
  N(0, 0.02²). Trainable: M·d_text.
- `cocoop` (Zhou et al., CVPR 2022): CoOp + meta-net π = Linear(D, D/16)–ReLU–Linear(D/16,
  d_text) from the normalised image feature to a bias on every context vector; M = 4 by
  default. Trainable: M·d + (D·D/16 + D/16) + (D/16·d + d).

Class names come as token ids (`class_token_ids`: one list per class, without BOS/EOS), so no
tokenizer is needed here; BOS / EOS / pad ids default to the text config's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from ...core.config import MethodConfig, option
from ...core.context import InstallContext
from ...core.registry import MethodInfo, register
from ...errors import ConfigError
from .classifier import ClipPromptClassifier, ContextEmbedding, meta_net, prompt_ids

#: std of CoOp's random context init
CONTEXT_STD = 0.02


@dataclass
class ClipPromptConfig(MethodConfig):
    class_token_ids: tuple[tuple[int, ...], ...] = option(
        (), "token ids of every class name (no BOS/EOS), e.g. [[320],[1929,2368]]"
    )
    template_ids: tuple[int, ...] = option((), "hard-prompt tokens before the name (zero-shot)")
    suffix_ids: tuple[int, ...] = option((), "tokens after the class name (e.g. '.')")
    num_context: int = option(16, "M learnable context vectors (coop / cocoop)")
    init_ids: tuple[int, ...] = option((), "init the context from these tokens (M = their count)")

    def validate(self) -> None:
        self._require(len(self.class_token_ids) > 0, "class_token_ids must name every class")
        self._require(self.num_context >= 1, f"num_context must be >= 1, got {self.num_context}")


@dataclass
class CoCoOpConfig(ClipPromptConfig):
    num_context: int = option(4, "M learnable context vectors")


def install_clip_prompts(ctx: InstallContext, cfg: ClipPromptConfig, kind: str) -> None:
    """Replace the model's forward by a `ClipPromptClassifier` over the class prompts."""
    ctx.require_family("hf-clip")
    ctx.require_single_task()
    clip = ctx.spec.backbone
    if ctx.num_classes and ctx.num_classes != len(cfg.class_token_ids):
        raise ConfigError(
            f"{ctx.method}: num_classes={ctx.num_classes} but class_token_ids names "
            f"{len(cfg.class_token_ids)} classes"
        )
    text = clip.text_model
    tcfg = clip.config.text_config
    emb_parent = text.embeddings
    embedding = emb_parent.token_embedding
    if not isinstance(embedding, ContextEmbedding):
        embedding = ContextEmbedding(embedding)
        emb_parent.token_embedding = embedding
    weight = embedding.base.weight
    learn = kind != "zero-shot"
    m = len(cfg.init_ids) or cfg.num_context
    if learn:
        placeholder = list(cfg.init_ids) or [tcfg.pad_token_id or 0] * m
        context_ids = placeholder
    else:
        context_ids = list(cfg.template_ids)
    prompts = prompt_ids(
        cfg.class_token_ids,
        context_ids,
        cfg.suffix_ids,
        tcfg.bos_token_id,
        tcfg.eos_token_id,
        tcfg.pad_token_id or 0,
        tcfg.max_position_embeddings,
    ).to(weight.device)
    context = None
    if learn:
        if cfg.init_ids:
            context = weight[torch.tensor(cfg.init_ids, device=weight.device)].detach().clone()
        else:
            context = torch.randn(m, weight.shape[1], dtype=weight.dtype) * CONTEXT_STD
    net = None
    if kind == "cocoop":
        net = meta_net(clip.config.projection_dim, weight.shape[1]).to(weight.device, weight.dtype)
    module = ClipPromptClassifier(clip, embedding, prompts, context, net)
    if learn:
        ctx.train(module, weight_decay=False)
    ctx.set_forward(module, module)


_PAPERS = {
    "zero-shot": "Radford et al., Learning Transferable Visual Models From Natural Language "
    "Supervision (CLIP), ICML 2021",
    "coop": "Zhou et al., Learning to Prompt for Vision-Language Models (CoOp), IJCV 2022",
    "cocoop": "Zhou et al., Conditional Prompt Learning for Vision-Language Models (CoCoOp), "
    "CVPR 2022",
}
_SUMMARIES = {
    "zero-shot": "CLIP zero-shot classifier over hard text prompts (nothing trains)",
    "coop": "M learnable context vectors shared by all classes in CLIP's text prompt",
    "cocoop": "CoOp + an image-conditioned meta-net biasing the context",
}
for _name, _config in (
    ("zero-shot", ClipPromptConfig),
    ("coop", ClipPromptConfig),
    ("cocoop", CoCoOpConfig),
):
    register(
        MethodInfo(
            name=_name,
            family="prompt",
            paper=_PAPERS[_name],
            mergeable=False,
            config=_config,
            install=partial(install_clip_prompts, kind=_name),
            summary=_SUMMARIES[_name],
            backbones=("hf-clip",),
        )
    )
