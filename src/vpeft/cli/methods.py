"""`vpeft methods`: the registered methods (name, family, mergeable, paper) and their options."""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..core.registry import MethodInfo
from ..methods import get_method, method_infos
from .common import JsonOpt, console, emit_json, handles_errors

NameArg = Annotated[
    str | None, typer.Argument(help="show only this method, with its options and their help.")
]


def method_record(info: MethodInfo) -> dict[str, object]:
    """The public JSON record of one method."""
    return {
        "name": info.name,
        "family": info.family,
        "mergeable": info.mergeable,
        "paper": info.paper,
    }


def _options_table(info: MethodInfo) -> Table:
    table = Table(title=f"options of {info.name} (--opt KEY=VALUE)")
    for column in ("option", "type", "default", "help"):
        table.add_column(column)
    hints = typing.get_type_hints(info.config)
    helps = info.config.field_help()
    defaults = info.config()
    for f in dataclasses.fields(info.config):
        hint = hints[f.name]
        type_name = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        default = str(getattr(defaults, f.name))
        table.add_row(*(escape(c) for c in (f.name, type_name, default, helps[f.name])))
    return table


@handles_errors
def methods(name: NameArg = None, json_out: JsonOpt = False) -> None:
    """List the registered methods: name, family, mergeable (foldable back into the backbone
    weights) and paper. With NAME, show that method's options."""
    infos = method_infos() if name is None else [get_method(name)]
    if json_out:
        emit_json({"methods": [method_record(i) for i in infos]})
        return
    table = Table(title="vpeft methods")
    table.add_column("name", no_wrap=True)
    for column in ("family", "mergeable", "what trains", "paper"):
        table.add_column(column)
    for info in infos:
        mergeable = "yes" if info.mergeable else "no"
        cells = (info.name, info.family, mergeable, info.summary, info.paper)
        table.add_row(*(escape(c) for c in cells))
    console.print(table)
    if name is not None:
        console.print(_options_table(infos[0]))


def register(app: typer.Typer) -> None:
    app.command("methods")(methods)
