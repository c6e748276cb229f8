"""Helpers shared by every `vpeft` command: option types, model construction, output, errors.

A command module uses these so that all commands behave alike:

- options: `BackboneOpt`, `MethodOpt`, `OptsOpt` (`--opt KEY=VALUE`, repeatable), `WeightsOpt`,
  `NumClassesOpt`, `JsonOpt` (typed `Annotated` aliases for typer);
- `build_model(...)`: a timm backbone by name (random weights, no download, or a local
  `--weights` file) with a method installed;
- `emit_json(obj)`: with `--json`, exactly one JSON object on stdout and nothing else;
- `@handles_errors`: a `VpeftError` becomes one red line on stderr and exit code 2 (the code
  click uses for usage errors), never a stack trace.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console, ConsoleDimensions

from ..errors import ConfigError, VpeftError
from ..jsonsafe import dumps_strict

if TYPE_CHECKING:  # torch and timm load when a command builds a model, not for --help
    from torch import nn

    from ..model import PeftModel

#: Exit code of every handled error (invalid input, unknown method or backbone).
ERROR_EXIT_CODE = 2

#: Width of human-readable output when stdout is not a terminal (piped, redirected, captured):
#: rich would otherwise cut tables at 80 columns. `COLUMNS` still wins when set.
PIPED_WIDTH = 200


class _Console(Console):
    """A rich console on stdout that is `PIPED_WIDTH` wide when stdout is not a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        # COLUMNS is read now, not at construction (rich freezes it into _width when the
        # console is made, e.g. under a test runner that sets it)
        if not self.is_terminal and "COLUMNS" not in os.environ:
            return ConsoleDimensions(PIPED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


#: Human-readable output goes through this console (stdout); errors go to stderr.
console = _Console()

BackboneOpt = Annotated[
    str,
    typer.Option(
        "--backbone",
        "-b",
        help="timm model name, e.g. vit_base_patch16_224 (random weights unless --weights); "
        "hf:<ModelClass>[:key=value,...] (transformers, e.g. hf:ViTModel) or a folder with "
        "config.json.",
    ),
]
MethodOpt = Annotated[
    str, typer.Option("--method", "-m", help="method name (list them with `vpeft methods`).")
]
OptsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--opt",
        "-o",
        help="method option KEY=VALUE, repeatable, e.g. --opt rank=8 --opt targets=q,v.",
    ),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="local pretrained weights for the backbone (no download)."),
]
RandomInitOpt = Annotated[
    bool,
    typer.Option(
        "--random-init",
        help="build the backbone with seeded random weights (e.g. vit-tiny-synth without its "
        "pretraining: the control for 'does pretraining help?').",
    ),
]
NumClassesOpt = Annotated[
    int, typer.Option("--num-classes", min=1, help="classes of the new task head.")
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="print one JSON object on stdout and nothing else."),
]

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, json_out: bool = False, kind: str = "VpeftError") -> NoReturn:
    """Print `error: message` on one red stderr line and exit with code 2; with `json_out` also
    print ``{"error": {"type": kind, "message": message}}`` as the one JSON object on stdout."""
    one_line = " ".join(str(message).split())
    if json_out:
        emit_json({"error": {"type": kind, "message": one_line}})
    typer.secho(f"error: {one_line}", fg=typer.colors.RED, err=True)
    raise typer.Exit(ERROR_EXIT_CODE)


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command so that a `VpeftError` ends it with `fail` instead of a traceback
    (as a JSON error object when the command was called with ``--json``)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except VpeftError as err:
            fail(str(err), bool(kwargs.get("json_out")), type(err).__name__)

    return wrapper


def parse_opts(pairs: list[str] | None) -> dict[str, str]:
    """['rank=8', 'targets=q,v'] -> {'rank': '8', 'targets': 'q,v'} (values parsed later by the
    method's config, which knows each option's type)."""
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--opt expects KEY=VALUE, got {pair!r} (e.g. --opt rank=8)")
        if key in options:
            raise ConfigError(f"--opt {key} given twice ({options[key]!r} and {value!r})")
        options[key] = value.strip()
    return options


def build_backbone(
    name: str, weights: Path | None = None, img_size: int | None = None, random_init: bool = False
) -> nn.Module:
    """A headless backbone by name (bundled, or timm with seeded random / local weights);
    see `vpeft.factory.create_backbone`."""
    from ..factory import create_backbone

    return create_backbone(name, weights, img_size, random_init=random_init)


def build_model(
    backbone: str,
    method: str,
    opts: list[str] | None,
    num_classes: int,
    weights: Path | None = None,
    img_size: int | None = None,
) -> PeftModel:
    """Parse `--opt` pairs, build the backbone and install `method` with a `num_classes` head."""
    from ..methods import get_method
    from ..model import apply

    options = parse_opts(opts)
    get_method(method).config.from_options(options)  # fail fast, before building the backbone
    model = build_backbone(backbone, weights, img_size)
    return apply(model, method, num_classes=num_classes, **options)


def emit_json(obj: dict[str, Any]) -> None:
    """Print `obj` as one JSON object on one stdout line (NaN / ±Infinity become null)."""
    typer.echo(dumps_strict(obj))
