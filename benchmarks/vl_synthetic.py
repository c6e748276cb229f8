"""PETL methods on the bundled VL backbones and the procedural VL suite (issue 12 evidence).

For every task × method × seed: the test metric after the last epoch, trainable parameters,
the extra forward FLOPs over the frozen model with only its head (``linear``) and the saved
training activations, both from `vpeft.analysis.profile_model` on a real batch. CLIP runs the
base-to-new protocol: train on the base classes, score base and new, harmonic mean; zero-shot
is the frozen model with the hand-written prompt.

    python benchmarks/vl_synthetic.py --methods linear,vpt-shallow,vpt-deep,lora,adapter,\\
        scaled-pa,full --tasks vqa,nlvr2,retrieval,clip --seeds 0,1 --out docs/results/vl

Any registered method name is accepted (APT, CoOp, CoCoOp once registered); a method that
does not apply to a backbone is recorded as skipped with its error. ``--opt METHOD:KEY=VALUE``
passes method options. Small training subsets and galleries keep CPU runs short.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset, default_collate

import vpeft
from vpeft.analysis.profile import profile_model
from vpeft.cli.vl_data import vl_data
from vpeft.data.vl import new_classes
from vpeft.data.vl.datasets import RetrievalDataset
from vpeft.errors import VpeftError
from vpeft.factory import create_backbone
from vpeft.tasks.vl import RetrievalTask, base_to_new
from vpeft.train import TrainConfig, train
from vpeft.train.evaluate import evaluate_tasks
from vpeft.train.rng import seed_everything

#: methods that replace CLIP's classifier by their own prompts over class-name token ids
CLIP_PROMPT_METHODS = ("coop", "cocoop")
HEADLINE = {"vqa": "vqa/vqa_score", "nlvr2": "nlvr2/top1", "retrieval": "retrieval/rsum",
            "clip": "clip/top1"}  # fmt: skip


def _subset(data: Any, n: int, seed: int) -> Any:
    if n <= 0 or n >= len(data):
        return data
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return Subset(data, order[:n].tolist())


def _small_gallery(full: RetrievalDataset, images: int) -> RetrievalDataset:
    """The first `images` images of an 'all'-pairs gallery and their captions."""
    keep = [t for t in range(full.num_texts) if full.caption_image[t] < images]

    class _First:
        def __len__(self) -> int:
            return images

        def __call__(self, i: int) -> torch.Tensor:
            return full.images(i)

    ds = RetrievalDataset.__new__(RetrievalDataset)
    ds.__dict__.update(full.__dict__)
    ds.images, ds.num_images, ds.num_texts = _First(), images, len(keep)
    ds.caption_image = full.caption_image[keep]
    ds.encoded = {k: v[keep] for k, v in full.encoded.items()}
    ds.texts = [full.texts[t] for t in keep]
    return ds


def _options(opts: list[str], method: str) -> dict[str, str]:
    out = {}
    for item in opts:
        name, _, pair = item.partition(":")
        if name == method:
            key, _, value = pair.partition("=")
            out[key] = value
    return out


def _class_prompt_options(model: Any, class_names: tuple[str, ...]) -> dict[str, Any]:
    """CoOp / CoCoOp prompts "[ctx] name ." (the task's "a photo of a {}." without its
    hand-written words): class-name and suffix token ids from the backbone's tokenizer."""
    from vpeft.backbones.text import tokenizer_for

    tokenizer = tokenizer_for(model)
    ids = lambda text: tuple(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    return {"class_token_ids": tuple(ids(n) for n in class_names), "suffix_ids": ids(".")}


def _with_classes(pm: Any, method: str, class_names: tuple[str, ...], args: Any) -> Any:
    """`pm` scoring `class_names`: the task's class set replaced (the prompts are the task's),
    or — CoOp / CoCoOp, whose prompts are built at install — the method re-installed on a fresh
    backbone for the new names with the trained context (and meta-net) copied over."""
    task = pm.tasks["clip"].with_classes(class_names)
    if method not in CLIP_PROMPT_METHODS:
        pm.tasks["clip"] = task
        return pm
    fresh = create_backbone(args.clip)
    opts = {**_options(args.opt, method), **_class_prompt_options(fresh, class_names)}
    new = vpeft.apply(fresh, method, tasks=[task], **opts)
    new.forward_override.load_state_dict(pm.forward_override.state_dict())
    return new


def _profile(pm: Any, batch: dict[str, Any], task: Any) -> dict[str, int]:
    from vpeft.train.batches import model_inputs

    report = profile_model(pm, inputs=model_inputs(batch, {task.name: task}), steps=1, warmup=0)
    return {"forward_flops": report.forward_flops, "saved_activation_bytes":
            report.saved_activation_bytes, "batch": report.batch}  # fmt: skip


def run_one(task_name: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    part = "clip-base" if task_name == "clip" else task_name
    model = create_backbone(args.clip if task_name == "clip" else args.vilt)
    vl = vl_data(part, model, ("train", "test"))
    train_set = _subset(vl.splits["train"], args.train_size, seed)
    test_set = vl.splits["test"]
    task = vl.task
    if task_name == "retrieval":
        test_set = _small_gallery(test_set, args.gallery)
        task = RetrievalTask("retrieval", num_images=test_set.num_images,
                             num_texts=test_set.num_texts)  # fmt: skip
    elif task_name != "clip":
        test_set = _subset(test_set, args.test_size, 0)
    seed_everything(seed)
    opts = _options(args.opt, method)
    if method in CLIP_PROMPT_METHODS:
        opts.update(_class_prompt_options(model, task.class_names))
    pm = vpeft.apply(model, "linear" if method == "zero-shot" else method, tasks=[task],
                     **opts)  # fmt: skip
    row: dict[str, Any] = {"task": task_name, "method": method, "seed": seed,
                           **pm.summary().as_dict()}  # fmt: skip
    if args.opt and _options(args.opt, method):
        row["options"] = _options(args.opt, method)  # the --opt values (not the derived ones)
    batch = default_collate([train_set[i] for i in range(min(8, len(train_set)))])
    if method != "zero-shot":  # nothing trains: no training step to profile
        row.update(_profile(pm, batch, task))
    start = time.time()
    if method != "zero-shot":
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=0.01, warmup_epochs=min(1, args.epochs - 1),
                             seed=seed, progress=False, save_adapter=False,
                             eval_batch_size=64)  # fmt: skip
        result = train(pm, train_set, None, test_set, config)
        last = result.history[-1]
        row["test"] = {k.removeprefix("test/"): v for k, v in last.items() if k.startswith("test/")}
    else:
        scores = evaluate_tasks(pm, test_set, 64, "cpu")
        row["test"] = {f"{t}/{k}": v for t, s in scores.items() for k, v in s.values.items()}
    row["headline"] = row["test"][HEADLINE[task_name]]
    if task_name == "clip":
        new_pm = _with_classes(pm, method, tuple(new_classes()), args)
        new_set = vl_data("clip-new", model, ("test",)).splits["test"]
        scores = evaluate_tasks(new_pm, new_set, 64, "cpu")
        row["base_to_new"] = base_to_new(row["test"]["clip/top1"], scores["clip"].values)
        row["headline"] = row["base_to_new"]["hm"]
    row["train_seconds"] = round(time.time() - start, 1)
    return row


def _mean_std(values: list[float]) -> str:
    m = sum(values) / len(values)
    if len(values) == 1:
        return f"{m:.1f}"
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{m:.1f} ± {s:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per task and method, the headline metric (mean ± std over seeds), trainable
    parameters, extra forward MFLOPs per sample over ``linear`` and saved activations."""
    base = {(r["task"]): r for r in rows if r["method"] == "linear" and "forward_flops" in r}
    lines = ["| task | method | metric (seeds) | trainable | extra fwd MFLOPs / sample | "
             "saved activations KiB / sample |", "|---|---|---|---|---|---|"]  # fmt: skip
    keys = sorted({(r["task"], r["method"]) for r in rows if "headline" in r},
                  key=lambda k: (k[0], [r["method"] for r in rows].index(k[1])))  # fmt: skip
    for task, method in keys:
        mine = [r for r in rows if (r["task"], r["method"]) == (task, method) and "headline" in r]
        r0 = mine[0]
        ref = base.get(task)
        extra = (
            f"{(r0['forward_flops'] - ref['forward_flops']) / r0['batch'] / 1e6:.2f}"
            if ref and "forward_flops" in r0
            else "-"
        )
        saved = f"{r0['saved_activation_bytes'] / r0['batch'] / 1024:.0f}" if "batch" in r0 else "-"
        metric = _mean_std([r["headline"] for r in mine])
        if task == "retrieval":  # ViLT's TR (image -> text) and IR (text -> image) R@1
            tr = _mean_std([r["test"]["retrieval/i2t_r1"] for r in mine])
            ir = _mean_std([r["test"]["retrieval/t2i_r1"] for r in mine])
            metric = f"TR@1 {tr} / IR@1 {ir} / rsum {metric}"
        if task == "clip":
            b = _mean_std([r["base_to_new"]["base"] for r in mine])
            n = _mean_std([r["base_to_new"]["new"] for r in mine])
            metric = f"base {b} / new {n} / HM {metric}"
        lines.append(
            f"| {task} | {method} | {metric} ({len(mine)}) | {r0['trainable']:,} | {extra} | "
            f"{saved} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods", default="linear,vpt-shallow,vpt-deep,lora,adapter,scaled-pa,full"
    )
    parser.add_argument("--tasks", default="vqa,nlvr2,retrieval,clip")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-size", type=int, default=1000, help="0: the whole split")
    parser.add_argument("--test-size", type=int, default=500, help="0: the whole split")
    parser.add_argument("--gallery", type=int, default=20, help="ViLT retrieval test images")
    parser.add_argument("--vilt", default="vilt-tiny-synth", help="backbone of vqa/nlvr2/retrieval")
    parser.add_argument("--clip", default="clip-tiny-synth", help="backbone of clip")
    parser.add_argument("--opt", action="append", default=[], help="METHOD:KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("docs/results/vl"))
    parser.add_argument("--rows", type=Path, action="append", default=[],
                        help="results.json of earlier runs: merge their rows into one "
                        "results.json and table.md under --out, training nothing")  # fmt: skip
    args = parser.parse_args()
    if args.rows:
        rows = [row for path in args.rows for row in json.loads(path.read_text())]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
        (args.out / "table.md").write_text(table(rows) + "\n")
        print(table(rows))
        return

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in vpeft.available_methods() and m != "zero-shot"]
    if unknown:
        parser.error(f"unknown methods {unknown}; registered: {vpeft.available_methods()}")
    if "clip" in args.tasks.split(",") and "zero-shot" not in methods:
        methods = ["zero-shot", *methods]
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for task in args.tasks.split(","):
        for method in methods:
            if method == "zero-shot" and task != "clip":
                continue
            for seed in [int(s) for s in args.seeds.split(",")]:
                try:
                    row = run_one(task, method, seed, args)
                except (VpeftError, NotImplementedError, RuntimeError) as err:
                    row = {"task": task, "method": method, "seed": seed, "skipped": str(err)}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "test"}), flush=True)
                (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    (args.out / "table.md").write_text(table(rows) + "\n")


if __name__ == "__main__":
    main()
