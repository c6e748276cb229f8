"""The `vpeft` command line (entry point `vpeft.cli.main:app`).

One module per command. A module `vpeft/cli/<name>.py` defines its command function and a
`register(app: typer.Typer) -> None` that adds it to `app`; adding a command = writing that
module and appending `<name>` to `COMMAND_MODULES`. Shared pieces live in `cli/common.py`, so
every command behaves alike::

    from .common import BackboneOpt, JsonOpt, console, emit_json, handles_errors

    @handles_errors                      # VpeftError -> one red stderr line, exit code 2
    def count(backbone: BackboneOpt, json_out: JsonOpt = False) -> None:
        \"""One-line help shown by `vpeft --help`; the rest shows in `vpeft count --help`.\"""
        record = {...}
        if json_out:
            emit_json(record)            # exactly one JSON object on stdout, nothing else
            return
        console.print(...)               # human output: rich tables

    def register(app: typer.Typer) -> None:
        app.command("count")(count)
"""

from __future__ import annotations

from importlib import import_module

import typer
import typer.core

#: Command modules under `vpeft.cli`, registered in this order (= order in `vpeft --help`).
COMMAND_MODULES: tuple[str, ...] = (
    "methods", "params", "profile", "train", "eval", "sensitivity", "demo", "bench",
    "predict", "serve", "export",
)  # fmt: skip

_display_type_rich = typer.core.TyperOption.display_type_rich


def _type_column(option: typer.core.TyperOption, ctx: typer.Context) -> str | None:
    """`--help`'s type column, empty for on/off flags (typer shows `<bool>` for every flag,
    although a flag takes no value)."""
    return None if option.is_flag else _display_type_rich(option, ctx)


typer.core.TyperOption.display_type_rich = _type_column  # type: ignore[method-assign]

app = typer.Typer(
    name="vpeft",
    help="Parameter-efficient fine-tuning of vision transformers on timm backbones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs are re-wrapped to the terminal width
)


@app.callback()
def main() -> None:
    """Parameter-efficient fine-tuning of vision transformers on timm backbones."""


for _name in COMMAND_MODULES:
    import_module(f"{__package__}.{_name}").register(app)

if __name__ == "__main__":  # python -m vpeft.cli.main …
    app()
