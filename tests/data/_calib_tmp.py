# Temporary calibration script (not a test): pretrain a tiny ViT on synth-source, probe targets.
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, "src")
try:
    import timm
except ImportError:
    sys.path.insert(0, ".venv/lib/python3.11/site-packages")
    import timm

from vpeft.data import synthetic as syn
from vpeft.data.transforms import make_transform

CACHE = os.environ.get("VCACHE", ".cache/vcache")
out_dir = os.environ.get("OUT", "/tmp/out")
os.makedirs(out_dir, exist_ok=True)
dev = "cuda" if torch.cuda.is_available() else "cpu"
EPOCHS = int(os.environ.get("EPOCHS", "30"))
torch.manual_seed(0)
results = {}

t0 = time.time()
timings = {}
for name in syn.all_tasks():
    t = time.time()
    syn.load_task(name, 0, CACHE)
    timings[name] = time.time() - t
print("generation", json.dumps({k: round(v, 2) for k, v in timings.items()}), flush=True)

mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
ev = make_transform(32, mean, std)
aug = make_transform(32, mean, std, augment=True)


def tensors(name, split):
    x, y = syn.load_split(name, split, 0, CACHE).as_tensors()
    return x.to(dev), y.to(dev)


def vit(num_classes):
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32,
        patch_size=4,
        embed_dim=192,
        depth=6,
        num_heads=3,
        num_classes=num_classes,
        drop_path_rate=0.1,
    ).to(dev)


def train(model, x, y, epochs, lr, bs, augment=True, params=None, wd=0.05):
    params = list(model.parameters()) if params is None else params
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    steps = epochs * math.ceil(len(x) / bs)
    warm = max(1, steps // 15)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=dev)
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            xb = aug(x[idx]) if augment else ev(x[idx])
            with torch.autocast(dev, dtype=torch.bfloat16):
                loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


@torch.no_grad()
def predict(model, x, feats=False):
    model.eval()
    outs = []
    for i in range(0, len(x), 1024):
        with torch.autocast(dev, dtype=torch.bfloat16):
            xb = ev(x[i : i + 1024])
            o = (
                model.forward_head(model.forward_features(xb), pre_logits=True)
                if feats
                else model(xb)
            )
        outs.append(o.float())
    return torch.cat(outs)


def acc(model, x, y):
    return (predict(model, x).argmax(1) == y).float().mean().item()


xs, ys = tensors(syn.SOURCE_TASK, "train")
SMOKE = bool(os.environ.get("SMOKE"))
FT_EPOCHS = 1 if SMOKE else 40
if SMOKE:
    xs, ys = xs[:500], ys[:500]
xv, yv = tensors(syn.SOURCE_TASK, "val")
t = time.time()
src = train(vit(64), xs, ys, EPOCHS, 1e-3, 512)
results["source"] = {"val": acc(src, xv, yv), "train": acc(src, xs[:2000], ys[:2000]), "train_s": time.time() - t}
print("source", results["source"], flush=True)
torch.save(src.state_dict(), "/tmp/src.pt")


def probe(ftr, ytr, fva, yva, fte, yte):
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    best = None
    for wd in (1e-4, 1e-3, 1e-2, 1e-1):
        lin = torch.nn.Linear(ftr.shape[1], int(ytr.max()) + 1).to(dev)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=300, line_search_fn="strong_wolfe")

        def closure(lin=lin, opt=opt, wd=wd):
            opt.zero_grad()
            loss = F.cross_entropy(lin((ftr - mu) / sd), ytr) + wd * lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        a = (lin((fva - mu) / sd).argmax(1) == yva).float().mean().item()
        if best is None or a > best[0]:
            best = (a, wd)
    f_all, y_all = torch.cat([ftr, fva]), torch.cat([ytr, yva])
    mu, sd = f_all.mean(0), f_all.std(0) + 1e-6
    lin = torch.nn.Linear(ftr.shape[1], int(ytr.max()) + 1).to(dev)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin((f_all - mu) / sd), y_all) + best[1] * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (lin((fte - mu) / sd).argmax(1) == yte).float().mean().item()


def run_task(name, r, xtr, ytr, xva, yva, xall, yall, xte, yte):
    r["linear"] = probe(
        predict(src, xtr, True), ytr, predict(src, xva, True), yva, predict(src, xte, True), yte
    )
    c = syn.task_info(name).num_classes
    ft = vit(64)
    ft.load_state_dict(torch.load("/tmp/src.pt"))
    ft.reset_classifier(c)
    ft.to(dev)
    r["full_ft"] = acc(train(ft, xall, yall, FT_EPOCHS, 2e-4, 64), xte, yte)
    if os.environ.get("SKIP_SCRATCH"):
        return
    r["scratch"] = acc(train(vit(c), xall, yall, FT_EPOCHS // 2 + 1, 1e-3, 64), xte, yte)


for name in os.environ.get("TASKS", ",".join(syn.TARGET_TASKS)).split(","):
    aug = make_transform(32, mean, std, augment=True, hflip=syn.task_info(name).flip_safe)
    xtr, ytr = tensors(name, "train800")
    xva, yva = tensors(name, "val200")
    xall, yall = tensors(name, "train800val200")
    xte, yte = tensors(name, "test")
    if SMOKE:
        xte, yte = xte[:200], yte[:200]
    r = {}
    try:
        run_task(name, r, xtr, ytr, xva, yva, xall, yall, xte, yte)
    except Exception:
        import traceback

        traceback.print_exc()
    results[name] = r
    print(name, {k: round(v, 3) for k, v in r.items()}, flush=True)

json.dump(results, open(f"{out_dir}/calib.json", "w"), indent=1)
print("total", time.time() - t0)
