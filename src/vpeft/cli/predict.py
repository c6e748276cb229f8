"""`vpeft predict`: classify image files with one or several adapters on one backbone."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import ConfigError
from .common import (
    BackboneOpt,
    JsonOpt,
    WeightsOpt,
    build_backbone,
    console,
    emit_json,
    handles_errors,
)

AdaptersOpt = Annotated[
    list[Path],
    typer.Option(
        "--adapter",
        "-a",
        help="adapter file (repeatable); named by its file stem. All run on the one backbone.",
    ),
]


def adapter_names(paths: list[Path]) -> dict[str, Path]:
    """{file stem: path}; two files with one stem are refused (rename one)."""
    named: dict[str, Path] = {}
    for path in paths:
        if path.stem in named:
            raise ConfigError(f"two adapter files are named {path.stem!r}; rename one")
        named[path.stem] = path
    return named


@handles_errors
def predict_command(
    images: Annotated[list[Path], typer.Argument(help="image files or folders (recursive).")],
    backbone: BackboneOpt,
    adapter: AdaptersOpt,
    weights: WeightsOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="classes per image.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="images per batch.")] = 64,
    csv_out: Annotated[bool, typer.Option("--csv", help="print CSV rows on stdout.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Top-k class names and scores of every image under every --adapter, using the
    preprocessing each adapter file records (one mixed-adapter batch through the backbone)."""
    from ..adapters import load_adapters
    from ..serve.inference import Predictor, decode_image, image_files

    if csv_out and json_out:
        raise ConfigError("give --json or --csv, not both")
    files = image_files(images)
    named = adapter_names(adapter)
    for path in named.values():
        if not path.is_file():
            raise ConfigError(f"no such adapter file: {path}")
    pm = load_adapters(build_backbone(backbone, weights), named)
    predictor = Predictor(pm)
    rows = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        decoded = [decode_image(f) for f in chunk]
        requests = [(name, img) for img in decoded for name in named]
        results = predictor.predict(requests, top_k)
        for i, (name, _) in enumerate(requests):
            image = chunk[i // len(named)]
            rows.append({"image": str(image), "adapter": name, "top_k": results[i]})
    if json_out:
        emit_json(
            {"predictions": [{**r, "top_k": [p.as_dict() for p in r["top_k"]]} for r in rows]}
        )
    elif csv_out:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "adapter", "rank", "label", "score"])
        for r in rows:
            for rank, p in enumerate(r["top_k"], 1):
                writer.writerow([r["image"], r["adapter"], rank, p.label, f"{p.score:.6f}"])
        typer.echo(buffer.getvalue(), nl=False)
    else:
        table = Table("image", "adapter", "top classes (score)")
        for r in rows:
            top = ", ".join(f"{p.label} ({p.score:.3f})" for p in r["top_k"])
            table.add_row(r["image"], r["adapter"], top)
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
