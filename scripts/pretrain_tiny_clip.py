"""Pretrain the bundled tiny CLIP (`clip-tiny-synth`) on captioned scenes of the VL suite.

Writes `src/vpeft/assets/clip_tiny_synth/` (config.json, model.safetensors, tokenizer.json: a
plain transformers folder, ``CLIPModel.from_pretrained(folder)``) and `clip_tiny_synth.json`
(recipe, held-out retrieval R@1 and zero-shot accuracy on the base and new classes, timing).

    python scripts/pretrain_tiny_clip.py  # CPU; the time is recorded (train_seconds)

Objective: CLIP's symmetric InfoNCE (Radford et al. 2021) over a batch of (image, caption)
pairs with a learned temperature; captions of one image in the same batch count as positives
of each other (`vpeft.tasks.vl.info_nce` with image ids). The text tower pools the first
[SEP] (``eos_token_id = 3`` of the suite tokenizer). The class images of the base-to-new
protocol are never seen: zero-shot accuracy measures transfer from scene captions to
"a photo of a {colour shape}." prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _pretrain_common import adamw, cosine_lr, set_lr
from _vl_pretrain import (
    HELD_OUT_SEED,
    PRETRAIN_SEEDS,
    captioned_scenes,
    environment,
    save_folder,
    tokenize,
    trim,
)
from transformers import CLIPConfig, CLIPModel

from vpeft.data.vl import base_classes, classes_split, load_tokenizer, new_classes
from vpeft.data.vl.datasets import CLIP_MEAN, CLIP_STD
from vpeft.tasks.vl import PairEmbeddings, info_nce
from vpeft.zoo import ASSETS

MAX_TEXT = 40
TOWER = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128)
ARCH = dict(
    text_config=dict(TOWER, num_hidden_layers=2, vocab_size=90, max_position_embeddings=MAX_TEXT,
                     pad_token_id=0, bos_token_id=2, eos_token_id=3),
    vision_config=dict(TOWER, num_hidden_layers=3, image_size=64, patch_size=16),
    projection_dim=64,
)  # fmt: skip


def embed(model: CLIPModel, text: dict, pixels: torch.Tensor) -> PairEmbeddings:
    image = model.get_image_features(pixel_values=pixels).pooler_output
    words = model.get_text_features(**text).pooler_output
    scale = model.logit_scale.exp().clamp(max=100.0)
    return PairEmbeddings(
        torch.nn.functional.normalize(image, dim=-1),
        torch.nn.functional.normalize(words, dim=-1),
        scale,
    )


@torch.no_grad()
def held_out(model: CLIPModel) -> dict[str, float]:
    """Image→text / text→image R@1 on the held-out seed's val split (100 images, 500
    captions) and zero-shot top-1 on the base / new class test sets (seed 0)."""
    model.eval()
    images, captions, owner = captioned_scenes((HELD_OUT_SEED,), "val", CLIP_MEAN, CLIP_STD)
    text = trim(tokenize(captions, MAX_TEXT))
    img = torch.nn.functional.normalize(
        model.get_image_features(pixel_values=images).pooler_output, dim=-1
    )
    txt = torch.nn.functional.normalize(model.get_text_features(**text).pooler_output, dim=-1)
    sim = img @ txt.T
    i2t = (owner[sim.argmax(1)] == torch.arange(len(images))).float().mean().item()
    t2i = (sim.argmax(0) == owner).float().mean().item()
    out = {"i2t_r1": i2t, "t2i_r1": t2i}
    tok = load_tokenizer()
    for split, names in (("test_base", base_classes()), ("test_new", new_classes())):
        data = classes_split(split)
        pixels = torch.stack([data[i]["pixel_values"] for i in range(len(data))])
        prompts = tok([f"a photo of a {n}." for n in names], padding=True, return_tensors="pt")
        cls = model.get_text_features(
            input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"]
        ).pooler_output
        emb = model.get_image_features(pixel_values=pixels).pooler_output
        pred = (
            torch.nn.functional.normalize(emb, dim=-1)
            @ torch.nn.functional.normalize(cls, dim=-1).T
        ).argmax(1)
        out[f"zero_shot_{split.removeprefix('test_')}"] = (
            (pred == data.labels).float().mean().item()
        )
        out[f"zero_shot_{split.removeprefix('test_')}_chance"] = 1 / len(names)
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSETS / "clip_tiny_synth")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    images, captions, owner = captioned_scenes(PRETRAIN_SEEDS, "train", CLIP_MEAN, CLIP_STD)
    text = tokenize(captions, MAX_TEXT)
    config = CLIPConfig(**ARCH)
    model = CLIPModel(config)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = adamw(decay, rest, args.lr, args.weight_decay, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(args.seed)
    start, log = time.time(), []
    for step in range(args.steps):
        idx = torch.randint(0, len(captions), (args.batch_size,), generator=gen)
        batch = trim({k: v[idx] for k, v in text.items()})
        loss = info_nce(embed(model, batch, images[owner[idx]]), owner[idx]).mean()
        set_lr(opt, cosine_lr(step, args.steps, args.warmup_steps, args.lr))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 99 or step == args.steps - 1:
            line = {"step": step + 1, "loss": round(loss.item(), 4),
                    "s": round(time.time() - start, 1)}  # fmt: skip
            print(json.dumps(line), flush=True)
            log.append(line)
    scores = held_out(model)
    config.architectures = ["CLIPModel"]
    recipe = {
        "backbone": "clip-tiny-synth",
        "transformers_class": "CLIPModel",
        "config": ARCH,
        "objective": "symmetric InfoNCE, learned temperature (clamped at 100)",
        "corpus": f"VL suite 'retrieval' train captions, seeds {list(PRETRAIN_SEEDS)}: "
        f"{len(images)} scenes, {len(captions)} captions",
        "held_out": f"retrieval: 'retrieval' val split of seed {HELD_OUT_SEED} (100 images, 500 "
        "captions); zero-shot: 'classes' test_base / test_new of seed 0, prompt "
        "'a photo of a {}.'",
        **{k: round(v, 4) for k, v in scores.items()},
        "steps": args.steps,
        "batch_size": args.batch_size,
        "optimizer": "AdamW betas (0.9, 0.98), grad-norm clip 1.0",
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup_steps": args.warmup_steps,
        "schedule": "cosine, per step",
        "seed": args.seed,
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        **environment(start),
        "log": log,
        "command": f"python scripts/pretrain_tiny_clip.py --steps {args.steps} --warmup-steps "
        f"{args.warmup_steps} --batch-size {args.batch_size} --lr {args.lr}",
    }
    save_folder(args.out, config, model.state_dict(), recipe)
    print(json.dumps({k: v for k, v in recipe.items() if k != "log"}, indent=2))


if __name__ == "__main__":
    main()
