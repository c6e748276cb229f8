"""`vpeft methods`: the registered methods (name, family, mergeable, paper) and their options."""

from __future__ import annotations

import dataclasses
import typing
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import JsonOpt, console, emit_json, handles_errors

if TYPE_CHECKING:
    from ..core.registry import MethodInfo

NameArg = Annotated[
    str | None, typer.Argument(help="show only this method, with its options and their help.")
]


def method_record(info: MethodInfo) -> dict[str, object]:
    """The public JSON record of one method (the `vpeft methods --json` contract)."""
    return {
        "name": info.name,
        "family": info.family,
        "mergeable": info.mergeable,
        "paper": info.paper,
    }


def option_records(info: MethodInfo) -> list[dict[str, object]]:
    """Every option of `info`'s config: name, type (as written in Python), JSON default, help."""
    hints = typing.get_type_hints(info.config)
    helps = info.config.field_help()
    defaults = info.config().to_dict()
    return [
        {
            "name": f.name,
            "type": _type_name(hints[f.name]),
            "default": defaults.get(f.name),
            "help": helps[f.name],
        }
        for f in dataclasses.fields(info.config)
    ]


def _type_name(hint: object) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _options_table(info: MethodInfo) -> Table:
    table = Table(title=f"options of {info.name} (--opt KEY=VALUE)")
    for column in ("option", "type", "default", "help"):
        table.add_column(column)
    defaults = info.config()
    for record in option_records(info):
        default = str(getattr(defaults, str(record["name"])))
        cells = (record["name"], record["type"], default, record["help"])
        table.add_row(*(escape(str(c)) for c in cells))
    return table


@handles_errors
def methods(name: NameArg = None, json_out: JsonOpt = False) -> None:
    """List the registered methods: name, family, mergeable (foldable back into the backbone
    weights) and paper. With NAME, show that method's options."""
    from ..methods import get_method, method_infos

    infos = method_infos() if name is None else [get_method(name)]
    if json_out:  # with NAME, the record also lists the options (as the table below does)
        records = [method_record(i) for i in infos]
        if name is not None:
            records[0]["options"] = option_records(infos[0])
        emit_json({"methods": records})
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
