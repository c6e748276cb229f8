"""One row per method across the ViLT tasks of `vl_synthetic.py` (the issue-12 table in
docs/results/vl.md): VQA score, NLVR2 accuracy, TR@1 / IR@1 (mean ± sd over seeds), encoder
parameters that train, extra forward MFLOPs and saved activations per sample per task.

    python benchmarks/vilt_table.py docs/results/vl/vilt/results.json

Rows are read as `vl_synthetic.py` writes them; a (task, method) with several rows of one seed
is an error (merge the runs you mean, not every run)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

TASKS = ("vqa", "nlvr2", "retrieval")
LABELS = {
    "linear": "classifier only",
    "vpt-shallow": "shallow prompt (p=50)",
    "deep-prompt-kv": "deep prompt (p=200, extra K/V)",
    "apt": "APT (p=200, r=4)",
    "lora": "LoRA (r=8, q and v)",
    "vl-adapter": "VL-Adapter",
    "scaled-pa": "Scaled PA",
    "full": "full tuning",
}


def _mean_sd(values: list[float]) -> str:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0
    return f"{m:.1f} ± {sd:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    def of(task: str, method: str) -> list[dict[str, Any]]:
        mine = [r for r in rows if (r["task"], r["method"]) == (task, method) and "headline" in r]
        seeds = [r["seed"] for r in mine]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"{task}/{method}: several rows of one seed {sorted(seeds)}")
        return mine

    base = {t: of(t, "linear")[0] for t in TASKS}
    out = [
        "| method | trainable (encoder) | VQA score | NLVR2 acc | TR@1 | IR@1 | extra fwd MFLOPs "
        "/ sample (VQA / NLVR2 / ITM) | saved act. KiB / sample (VQA / NLVR2 / ITM) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    methods = [m for m in LABELS if all(of(t, m) for t in TASKS)]
    for m in methods:
        got = {t: of(t, m) for t in TASKS}
        first = {t: got[t][0] for t in TASKS}
        added = {t: first[t]["forward_flops"] - base[t]["forward_flops"] for t in TASKS}
        extra = " / ".join(f"{added[t] / first[t]['batch'] / 1e6:+.2f}" for t in TASKS)
        saved = " / ".join(
            f"{got[t][0]['saved_activation_bytes'] / got[t][0]['batch'] / 1024:.0f}" for t in TASKS
        )
        ret = got["retrieval"]
        cells = [
            LABELS[m],
            f"{got['vqa'][0]['trainable_encoder']:,}",
            _mean_sd([r["headline"] for r in got["vqa"]]),
            _mean_sd([r["headline"] for r in got["nlvr2"]]),
            _mean_sd([r["test"]["retrieval/i2t_r1"] for r in ret]),
            _mean_sd([r["test"]["retrieval/t2i_r1"] for r in ret]),
            extra,
            saved,
        ]
        out.append("| " + " | ".join(cells) + " |")
    seeds = {t: sorted({r["seed"] for r in rows if r["task"] == t}) for t in TASKS}
    frozen = {t: base[t]["forward_flops"] / base[t]["batch"] / 1e6 for t in TASKS}
    out.append("")
    out.append(
        "Seeds: " + ", ".join(f"{t} {seeds[t]}" for t in TASKS) + ". Frozen forward MFLOPs / "
        "sample: " + ", ".join(f"{t} {frozen[t]:.2f}" for t in TASKS) + "."
    )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.json of vl_synthetic.py")
    print(table(json.loads(parser.parse_args().results.read_text())))


if __name__ == "__main__":
    main()
