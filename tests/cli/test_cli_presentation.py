"""CLI presentation (issue 14, smaller items): no `<bool>` placeholder on flags in `--help`,
tables not cut at 80 columns when stdout is not a terminal, options in `vpeft methods NAME
--json`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vpeft.cli.main import app


@pytest.mark.parametrize("command", ["train", "eval", "methods"])
def test_flags_show_no_bool_placeholder_in_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "--json" in result.output
    assert "<bool>" not in result.output


def test_tables_are_not_cut_when_stdout_is_not_a_terminal(monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    result = CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output  # no cell truncated
    assert "Sensitivity-Aware Visual Parameter-Efficient Fine-Tuning" in result.output
    assert max(len(line) for line in result.output.splitlines()) > 80


def test_methods_json_lists_each_options_name_type_default_and_help() -> None:
    result = CliRunner().invoke(app, ["methods", "lora", "--json"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)["methods"]
    assert {"name", "family", "mergeable", "paper", "options"} <= set(record)
    options = {o["name"]: o for o in record["options"]}
    assert options["rank"] == {
        "name": "rank", "type": "int", "default": 8, "help": "rank r of the update B·A",
    }  # fmt: skip
    assert options["targets"]["default"] == ["q", "v"]
    assert all(set(o) == {"name", "type", "default", "help"} for o in record["options"])
    every = json.loads(CliRunner().invoke(app, ["methods", "--json"]).stdout)["methods"]
    assert all("options" not in m for m in every)  # the list keeps its four-key contract
