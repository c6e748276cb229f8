"""Pretrain the bundled tiny ViLT (`vilt-tiny-synth`) on captioned scenes of the VL suite.

Writes `src/vpeft/assets/vilt_tiny_synth/` (config.json, model.safetensors, tokenizer.json: a
plain transformers folder, ``ViltModel.from_pretrained(folder)``) and `vilt_tiny_synth.json`
(recipe, held-out matching and MLM accuracy, timing).

    python scripts/pretrain_tiny_vilt.py  # CPU; the time is recorded (train_seconds)

Objectives (ViLT's pretraining, Kim et al. 2021 §3.2): image-text matching — each caption with
its image or, half of the time, a random other image; ``rank_output`` (``Linear(D, 1)`` on the
pooled feature, transformers ``ViltForImageAndTextRetrieval``), binary cross-entropy — plus
masked-language modelling on the matched pairs (15% of the word tokens replaced by [MASK],
transformers ``ViltMLMHead``). Both heads are saved beside the backbone under their
transformers names, so ``ViltForImageAndTextRetrieval.from_pretrained(folder)`` scores pairs.
The modality-type embedding has three rows (text, image 1, image 2: NLVR2's pair setting);
row 2 is set to row 1 after pretraining, as ViLT does for NLVR2.
"""

from __future__ import annotations

import argparse
import json
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

from vpeft.data.vl.datasets import VILT_MEAN, VILT_STD
from vpeft.zoo import ASSETS

MASK_ID, FIRST_WORD_ID = 4, 5  # the suite tokenizer: [PAD] [UNK] [CLS] [SEP] [MASK], words
MAX_TEXT = 40

ARCH = dict(
    hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
    image_size=64, patch_size=16, max_image_length=-1, vocab_size=90,
    max_position_embeddings=MAX_TEXT, modality_type_vocab_size=3,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)  # fmt: skip


def mask_words(ids: torch.Tensor, rate: float, gen: torch.Generator):
    """(masked ids, labels with -100 where nothing is predicted)."""
    words = ids >= FIRST_WORD_ID
    picked = words & (torch.rand(ids.shape, generator=gen) < rate)
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

    def forward(self, text: dict, pixels: torch.Tensor):
        mask = torch.ones(pixels.shape[0], *pixels.shape[-2:], dtype=torch.long)
        out = self.vilt(**text, pixel_values=pixels, pixel_mask=mask)
        length = text["input_ids"].shape[1]
        return self.rank_output(out.pooler_output).squeeze(-1), self.mlm_score(
            out.last_hidden_state[:, :length]
        )


def losses(model, text, images, owner, gen, num_images):
    b = len(owner)
    negative = torch.rand(b, generator=gen) < 0.5
    image_idx = torch.where(negative, negative_images(owner, num_images, gen), owner)
    masked, labels = mask_words(text["input_ids"], 0.15, gen)
    labels[negative] = -100  # MLM only on matched pairs
    score, mlm = model({**text, "input_ids": masked}, images[image_idx])
    itm = F.binary_cross_entropy_with_logits(score, (~negative).float())
    mlm_loss = F.cross_entropy(mlm.flatten(0, 1), labels.flatten(), ignore_index=-100)
    return itm, mlm_loss, score, negative, mlm, labels


@torch.no_grad()
def held_out(model, batch: int = 100) -> dict[str, float]:
    """Matching accuracy (each caption with its image and with a random other one; chance
    50%) and MLM top-1 on the held-out seed's val split."""
    model.eval()
    images, captions, owner = captioned_scenes((HELD_OUT_SEED,), "val", VILT_MEAN, VILT_STD)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--mlm-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSETS / "vilt_tiny_synth")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    images, captions, owner = captioned_scenes(PRETRAIN_SEEDS, "train", VILT_MEAN, VILT_STD)
    text = tokenize(captions, MAX_TEXT)
    config = ViltConfig(**ARCH)
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
        itm, mlm, *_ = losses(model, batch, images, owner[idx], gen, len(images))
        set_lr(opt, cosine_lr(step, args.steps, args.warmup_steps, args.lr))
        opt.zero_grad(set_to_none=True)
        (itm + args.mlm_weight * mlm).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 99 or step == args.steps - 1:
            line = {"step": step + 1, "itm": round(itm.item(), 4), "mlm": round(mlm.item(), 4),
                    "s": round(time.time() - start, 1)}  # fmt: skip
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
        "config": ARCH,
        "objectives": "image-text matching (random negatives, 50%) + masked LM (15% of words)",
        "corpus": f"VL suite 'retrieval' train captions, seeds {list(PRETRAIN_SEEDS)}: "
        f"{len(images)} scenes, {len(captions)} captions",
        "held_out": f"VL suite 'retrieval' val split of seed {HELD_OUT_SEED}",
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()},
        "itm_chance": 0.5,
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
        f"--mlm-weight {args.mlm_weight}",
    }
    save_folder(args.out, config, model.state_dict(), recipe)
    print(json.dumps({k: v for k, v in recipe.items() if k != "log"}, indent=2))


if __name__ == "__main__":
    main()
