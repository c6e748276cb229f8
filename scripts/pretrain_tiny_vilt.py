"""Pretrain the bundled tiny ViLT (`vilt-tiny-synth`) on captioned scenes of the VL suite.

Writes `src/vpeft/assets/vilt_tiny_synth/` (config.json, model.safetensors, tokenizer.json: a
plain transformers folder, ``ViltModel.from_pretrained(folder)``) and `vilt_tiny_synth.json`
(recipe, held-out matching and MLM accuracy, timing).

    python scripts/pretrain_tiny_vilt.py  # CPU; the time is recorded (train_seconds)

Objectives (ViLT's pretraining, Kim et al. 2021 §3.2): image-text matching — each caption with
its image or, half of the time, a random other image; ``rank_output`` (``Linear(D, 1)`` on the
pooled feature, transformers ``ViltForImageAndTextRetrieval``), binary cross-entropy — plus
masked-language modelling on the matched pairs (15% of the word tokens replaced by [MASK],
the words only the image can tell — colours, shapes, sizes, positions, numbers — at
``--grounded-mask-rate``; transformers ``ViltMLMHead``).

From a random start, ITM + MLM alone never left chance here (1500 steps: ITM 50.0%, and
masked colour words predicted at chance, 19.5% with the right image vs 18.9% with a wrong one:
the image pathway learnt nothing). ViLT itself starts from an ImageNet ViT; our stand-in is a
**contrastive warm start** (``--contrastive-steps``): the same encoder run as a dual encoder
(text and image tokens in one sequence, attention between them blocked), symmetric InfoNCE
between the text and the image [CLS]. It teaches both sides to encode colours, shapes and
counts, after which matching leaves chance within ~100 joint steps (`vilt_tiny_synth.json`
records the curve). Both heads are saved beside the backbone under their transformers names,
so ``ViltForImageAndTextRetrieval.from_pretrained(folder)`` scores pairs.
The modality-type embedding has three rows (text, image 1, image 2: NLVR2's pair setting);
row 2 is set to row 1 after pretraining, as ViLT does for NLVR2.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _pretrain_common import adamw, cosine_lr, set_lr
from _vl_pretrain import (
    HELD_OUT_SEED,
    PRETRAIN_SEEDS,
    captioned_scenes,
    environment,
    negative_images,
    save_folder,
    tokenize,
    trim,
)
from transformers import ViltConfig, ViltModel
from transformers.models.vilt.modeling_vilt import ViltMLMHead

from vpeft.data.vl import load_tokenizer
from vpeft.data.vl.datasets import VILT_MEAN, VILT_STD
from vpeft.data.vl.language import NUMBER_WORDS
from vpeft.data.vl.scenes import COLOURS, POSITIONS, SHAPE_PLURALS, SHAPES, SIZES
from vpeft.zoo import ASSETS

MASK_ID, FIRST_WORD_ID = 4, 5  # the suite tokenizer: [PAD] [UNK] [CLS] [SEP] [MASK], words
MAX_TEXT = 40

ARCH = dict(
    hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
    image_size=64, patch_size=16, max_image_length=-1, vocab_size=90,
    max_position_embeddings=MAX_TEXT, modality_type_vocab_size=3,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)  # fmt: skip


def grounded_ids() -> torch.Tensor:
    """Token ids of the words only the image can tell: colours, shapes, sizes, positions and
    numbers (the caption grammar predicts every other word from the text alone)."""
    words = {*COLOURS, *SHAPES, *SHAPE_PLURALS, *SIZES, *NUMBER_WORDS}
    words |= {w for p in POSITIONS for w in p.split()}
    vocab = load_tokenizer().get_vocab()
    return torch.tensor(sorted(vocab[w] for w in words))


def mask_words(
    ids: torch.Tensor, rate: float, gen: torch.Generator,
    grounded: torch.Tensor | None = None, grounded_rate: float = 0.0,
):  # fmt: skip
    """(masked ids, labels with -100 where nothing is predicted): each word is masked with
    probability ``rate``, a word of ``grounded`` with ``grounded_rate`` instead."""
    words = ids >= FIRST_WORD_ID
    p = torch.full(ids.shape, rate)
    if grounded is not None:
        p = torch.where(torch.isin(ids, grounded), grounded_rate, p)
    picked = words & (torch.rand(ids.shape, generator=gen) < p)
    labels = torch.where(picked, ids, torch.full_like(ids, -100))
    return torch.where(picked, torch.full_like(ids, MASK_ID), ids), labels


class Pretrainer(torch.nn.Module):
    def __init__(self, config: ViltConfig) -> None:
        super().__init__()
        self.vilt = ViltModel(config)
        self.rank_output = torch.nn.Linear(config.hidden_size, 1)
        self.mlm_score = ViltMLMHead(config)
        for m in (self.rank_output, *self.mlm_score.modules()):
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=config.initializer_range)
                torch.nn.init.zeros_(m.bias)
        # transformers leaves the image [CLS] and patch positions at zero (ViLT starts from a
        # ViT whose are trained); ViT's own init gives the patches a position from step 0.
        emb = self.vilt.embeddings
        for t in (emb.cls_token, emb.position_embeddings):
            torch.nn.init.trunc_normal_(t, std=config.initializer_range)
        #: contrastive warm start only (`contrastive`); not saved
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))

    def unimodal(self, text: dict, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(text [CLS], image [CLS]) after the final LayerNorm, from one pass of the encoder
        with every attention between text and image tokens blocked: a dual encoder that
        shares all of ViLT's weights."""
        mask = torch.ones(pixels.shape[0], *pixels.shape[-2:], dtype=torch.long)
        emb, keep = self.vilt.embeddings(text["input_ids"], text["attention_mask"], None,
                                         pixels, mask, None, None)  # fmt: skip
        length = text["input_ids"].shape[1]
        side = torch.arange(emb.shape[1]) >= length
        allowed = (side[:, None] == side[None, :]) & keep.bool()[:, None, :]
        additive = torch.zeros(allowed.shape, dtype=emb.dtype).masked_fill(
            ~allowed, torch.finfo(emb.dtype).min
        )[:, None]
        hidden = self.vilt.layernorm(self.vilt.encoder(emb, attention_mask=additive)[0])
        return hidden[:, 0], hidden[:, length]

    def contrastive(self, text: dict, pixels: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE between the `unimodal` text and image [CLS] of matched pairs, the
        other captions of the batch as negatives (CLIP's objective, Radford et al. 2021,
        Fig. 3): it teaches the embeddings and layers to encode colours, shapes and counts on
        both sides before the single-stream pass has to compare them."""
        t, i = (F.normalize(x, dim=-1) for x in self.unimodal(text, pixels))
        logits = self.logit_scale.exp() * t @ i.T
        target = torch.arange(len(t))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def forward(self, text: dict, pixels: torch.Tensor):
        mask = torch.ones(pixels.shape[0], *pixels.shape[-2:], dtype=torch.long)
        out = self.vilt(**text, pixel_values=pixels, pixel_mask=mask)
        length = text["input_ids"].shape[1]
        return self.rank_output(out.pooler_output).squeeze(-1), self.mlm_score(
            out.last_hidden_state[:, :length]
        )


def losses(model, text, images, owner, gen, num_images, grounded, grounded_rate):
    b = len(owner)
    negative = torch.rand(b, generator=gen) < 0.5
    image_idx = torch.where(negative, negative_images(owner, num_images, gen), owner)
    masked, labels = mask_words(text["input_ids"], 0.15, gen, grounded, grounded_rate)
    labels[negative] = -100  # MLM only on matched pairs
    score, mlm = model({**text, "input_ids": masked}, images[image_idx])
    itm = F.binary_cross_entropy_with_logits(score, (~negative).float())
    mlm_loss = F.cross_entropy(mlm.flatten(0, 1), labels.flatten(), ignore_index=-100)
    return itm, mlm_loss, score, negative, mlm, labels


@torch.no_grad()
def held_out(model, batch: int = 100, limit: int | None = None) -> dict[str, float]:
    """Matching accuracy (each caption with its image and with a random other one; chance
    50%) and MLM top-1 (15% of words masked) on the held-out seed's val split (its first
    ``limit`` captions)."""
    model.eval()
    images, captions, owner = captioned_scenes((HELD_OUT_SEED,), "val", VILT_MEAN, VILT_STD)
    captions, owner = captions[:limit], owner[:limit]
    text = tokenize(captions, MAX_TEXT)
    gen = torch.Generator().manual_seed(0)
    correct = pairs = mlm_right = mlm_n = 0
    for i in range(0, len(captions), batch):
        t = trim({k: v[i : i + batch] for k, v in text.items()})
        own = owner[i : i + batch]
        other = negative_images(own, len(images), gen)
        masked, labels = mask_words(t["input_ids"], 0.15, gen)
        # Both halves of the matching score see the same, unmasked caption: scoring the
        # positives on masked text and the negatives on clean text let the [MASK] tokens
        # alone tell them apart.
        pos, _ = model(t, images[own])
        neg, _ = model(t, images[other])
        _, mlm = model({**t, "input_ids": masked}, images[own])
        correct += int((pos > 0).sum() + (neg <= 0).sum())
        pairs += 2 * len(own)
        hit = labels != -100
        mlm_right += int((mlm.argmax(-1)[hit] == labels[hit]).sum())
        mlm_n += int(hit.sum())
    model.train()
    return {"itm_accuracy": correct / pairs, "mlm_accuracy": mlm_right / max(mlm_n, 1),
            "held_out_pairs": pairs}  # fmt: skip


@torch.no_grad()
def colour_grounding(model, batch: int = 100) -> dict[str, float]:
    """Every colour word of the held-out captions masked: top-1 with the caption's own image
    and with a random other one. Only the image tells the colour, so equal values mean the
    model does not look at the image (chance is about 1/6)."""
    model.eval()
    images, captions, owner = captioned_scenes((HELD_OUT_SEED,), "val", VILT_MEAN, VILT_STD)
    text = tokenize(captions, MAX_TEXT)
    vocab = load_tokenizer().get_vocab()
    colours = torch.tensor([vocab[c] for c in COLOURS])
    gen = torch.Generator().manual_seed(0)
    right, n = {"own_image": 0, "other_image": 0}, 0
    for i in range(0, len(captions), batch):
        t = trim({k: v[i : i + batch] for k, v in text.items()})
        own = owner[i : i + batch]
        masked, labels = mask_words(t["input_ids"], 0.0, gen, colours, 1.0)
        hit = labels != -100
        for key, shown in (
            ("own_image", own),
            ("other_image", negative_images(own, len(images), gen)),
        ):
            _, mlm = model({**t, "input_ids": masked}, images[shown])
            right[key] += int((mlm.argmax(-1)[hit] == labels[hit]).sum())
        n += int(hit.sum())
    model.train()
    return {k: round(v / n, 4) for k, v in right.items()} | {"masked_colour_words": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--mlm-weight", type=float, default=1.0)
    parser.add_argument(
        "--grounded-mask-rate",
        type=float,
        default=0.5,
        help="masking rate of colour/shape/size/position/number words",
    )
    parser.add_argument(
        "--contrastive-steps",
        type=int,
        default=400,
        help="steps of dual-encoder InfoNCE before ITM + MLM start",
    )
    parser.add_argument("--patch-size", type=int, default=ARCH["patch_size"])
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="held-out ITM/MLM on 200 captions every N steps (0: never)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSETS / "vilt_tiny_synth")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    images, captions, owner = captioned_scenes(PRETRAIN_SEEDS, "train", VILT_MEAN, VILT_STD)
    text = tokenize(captions, MAX_TEXT)
    arch = {**ARCH, "patch_size": args.patch_size}
    config = ViltConfig(**arch)
    grounded = grounded_ids()
    model = Pretrainer(config)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
    opt = adamw(decay, rest, args.lr, args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()
    log = []
    for step in range(args.steps):
        idx = torch.randint(0, len(captions), (args.batch_size,), generator=gen)
        batch = trim({k: v[idx] for k, v in text.items()})
        set_lr(opt, cosine_lr(step, args.steps, args.warmup_steps, args.lr))
        opt.zero_grad(set_to_none=True)
        if step < args.contrastive_steps:
            loss = model.contrastive(batch, images[owner[idx]])
            loss.backward()
            losses_now = {"contrastive": loss}
        else:
            itm, mlm, *_ = losses(model, batch, images, owner[idx], gen, len(images), grounded,
                                  args.grounded_mask_rate)  # fmt: skip
            (itm + args.mlm_weight * mlm).backward()
            losses_now = {"itm": itm, "mlm": mlm}
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        evaluate = args.eval_every and (step + 1) % args.eval_every == 0
        if step % 100 == 99 or step == args.steps - 1 or evaluate:
            line = {"step": step + 1, **{k: round(v.item(), 4) for k, v in losses_now.items()},
                    "s": round(time.time() - start, 1)}  # fmt: skip
            if evaluate:
                quick = held_out(model, limit=200)
                line |= {k: round(quick[k], 4) for k in ("itm_accuracy", "mlm_accuracy")}
            print(json.dumps(line), flush=True)
            log.append(line)
    emb = model.vilt.embeddings.token_type_embeddings.weight
    with torch.no_grad():
        emb[2] = emb[1]  # ViLT's NLVR2 setting: the second image starts as "image"
    scores = held_out(model)
    config.architectures = ["ViltModel"]
    recipe = {
        "backbone": "vilt-tiny-synth",
        "transformers_class": "ViltModel",
        "config": arch,
        "objectives": f"{args.contrastive_steps} steps of dual-encoder InfoNCE (text [CLS] vs "
        "image [CLS], cross-modal attention blocked), then image-text matching (random "
        "negatives, 50%) + masked LM (15% of words, colour/shape/size/position/number words "
        f"{args.grounded_mask_rate:.0%})",
        "contrastive_steps": args.contrastive_steps,
        "grounded_mask_rate": args.grounded_mask_rate,
        "corpus": f"VL suite 'retrieval' train captions, seeds {list(PRETRAIN_SEEDS)}: "
        f"{len(images)} scenes, {len(captions)} captions",
        "held_out": f"VL suite 'retrieval' val split of seed {HELD_OUT_SEED}",
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()},
        "itm_chance": 0.5,
        "colour_word_mlm": colour_grounding(model),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "mlm_weight": args.mlm_weight,
        "optimizer": "AdamW, grad-norm clip 1.0",
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup_steps": args.warmup_steps,
        "schedule": "cosine, per step",
        "seed": args.seed,
        "mean": list(VILT_MEAN),
        "std": list(VILT_STD),
        **environment(start),
        "log": log,
        "command": f"python scripts/pretrain_tiny_vilt.py --steps {args.steps} --warmup-steps "
        f"{args.warmup_steps} --batch-size {args.batch_size} --lr {args.lr} "
        f"--mlm-weight {args.mlm_weight} --contrastive-steps {args.contrastive_steps} "
        f"--grounded-mask-rate {args.grounded_mask_rate} --patch-size {args.patch_size} "
        f"--eval-every {args.eval_every} --seed {args.seed}",
    }
    state = {k: v for k, v in model.state_dict().items() if k != "logit_scale"}
    save_folder(args.out, config, state, recipe)
    print(json.dumps({k: v for k, v in recipe.items() if k != "log"}, indent=2))


if __name__ == "__main__":
    main()
