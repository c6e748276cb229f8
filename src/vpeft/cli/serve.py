"""`vpeft serve`: an HTTP inference service for many adapters on one backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ..serve.limits import MAX_UPLOAD
from .common import BackboneOpt, WeightsOpt, build_backbone, console, handles_errors


def parse_named(pairs: list[str]) -> dict[str, Path]:
    """['pets=pets.safetensors', 'cars.safetensors'] -> {name: path} (name defaults to stem)."""
    named: dict[str, Path] = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        path = Path(file if sep else name)
        name = name.strip() if sep else path.stem
        if name in named:
            raise ConfigError(f"adapter name {name!r} given twice")
        if not path.is_file():
            raise ConfigError(f"no such adapter file: {path}")
        named[name] = path
    if not named:
        raise ConfigError("give at least one --adapter NAME=FILE")
    return named


@handles_errors
def serve_command(
    backbone: BackboneOpt,
    adapter: Annotated[
        list[str], typer.Option("--adapter", "-a", help="NAME=FILE (repeatable), or FILE.")
    ],
    weights: WeightsOpt = None,
    host: Annotated[str, typer.Option(help="interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    max_batch: Annotated[int, typer.Option(min=1, help="largest mixed batch.")] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(min=0.0, help="how long a request waits for others to batch with.")
    ] = 5.0,
    max_upload: Annotated[int, typer.Option(min=1, help="largest upload in bytes.")] = MAX_UPLOAD,
) -> None:
    """Serve --adapter files on one BACKBONE: GET /health, GET /adapters,
    POST /predict/{adapter} (multipart field `file`) -> top-k labels and scores."""
    from ..adapters import load_adapters
    from ..serve.app import create_app, require_serve
    from ..serve.inference import Predictor

    require_serve()
    import uvicorn

    pm = load_adapters(build_backbone(backbone, weights), parse_named(adapter))
    app = create_app(Predictor(pm), max_batch, max_wait_ms, max_upload)
    console.print(f"serving {pm.adapters} on http://{host}:{port}")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
