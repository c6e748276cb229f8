"""Print the README's method table: every registered method with its trainable-parameter count
on `vit_base_patch16_224` (random weights, 100-class head), from `vpeft.apply(...).summary()`.

    python scripts/method_table.py > /tmp/table.md
"""

from __future__ import annotations

import copy
import warnings

import torch

import vpeft
from vpeft.errors import VpeftError
from vpeft.methods import method_infos

#: options for methods whose defaults need a choice to be countable
OPTIONS: dict[str, dict[str, object]] = {
    "spt-lora": {"budget": "0.4M"},
    "spt-adapter": {"budget": "0.4M"},
}


def main() -> None:
    torch.manual_seed(0)
    base = vpeft.create_backbone("vit_base_patch16_224")
    header = "ViT-B/16 trainable (encoder / with 100-class head)"
    print(f"| method | family | mergeable | trains | {header} |")
    print("|---|---|---|---|---|")
    for info in method_infos():
        options = OPTIONS.get(info.name, {})
        opts = ", ".join(f"{k}={v}" for k, v in options.items())
        name = f"`{info.name}`" + (f" ({opts})" if opts else "")
        merge = "yes" if info.mergeable else "no"
        counts = count(base, info.name, options)
        print(f"| {name} | {info.family} | {merge} | {info.summary} | {counts} |")


def count(base: torch.nn.Module, method: str, options: dict[str, object]) -> str:
    """'encoder / with head' on ViT-B, or why the method does not apply to a ViT (Swin-only,
    multi-task or vision-language methods)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pm = vpeft.apply(copy.deepcopy(base), method, num_classes=100, **options)
        except VpeftError as err:
            return f"n/a on ViT-B ({type(err).__name__})"
    s = pm.summary()
    return f"{s.trainable_encoder:,} / {s.trainable:,}"


if __name__ == "__main__":
    main()
