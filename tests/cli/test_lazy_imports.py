"""Start-up stays light: `--help` of every command, `import vpeft` and registering the methods
import no heavy dependency (checked in a fresh interpreter through `sys.modules`; no timings),
and the lazy pieces still expose everything they did when they were imported eagerly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: top-level packages that --help must not import
HEAVY = ("torch", "timm", "torchvision", "transformers", "matplotlib", "optuna", "fastapi",
         "uvicorn", "numpy", "PIL", "scipy", "safetensors")  # fmt: skip


def _fresh(code: str) -> dict:
    """Run `code` in a new interpreter; it must print one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


_LOADED = f"""
import json, sys
heavy = {HEAVY!r}
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
"""


def test_help_of_every_command_imports_no_torch() -> None:
    code = (
        """
import contextlib, io
import typer.main
from vpeft.cli.main import app
group = typer.main.get_command(app)
def paths(cmd, prefix):
    yield prefix
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from paths(sub, prefix + [name])
names = [" ".join(p) for p in paths(group, [])]
for path in names:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            app(path.split() + ["--help"], standalone_mode=False)
        except SystemExit:
            pass
"""
        + _LOADED
        + "print(json.dumps({'loaded': loaded, 'commands': names}))"
    )
    result = _fresh(code)
    assert {"", "train", "methods", "serve"} <= set(result["commands"])  # every --help ran
    assert any(c.startswith("bench ") for c in result["commands"])  # subcommands too
    assert result["loaded"] == []


def test_import_vpeft_is_lazy_and_complete() -> None:
    code = (
        "import vpeft\n"
        + _LOADED
        + "before = loaded\n"
        + "from vpeft import *\n"
        + "names = {n: type(getattr(vpeft, n)).__name__ for n in vpeft.__all__}\n"
        + "print(json.dumps({'before': before, 'names': names, 'dir': dir(vpeft)}))"
    )
    result = _fresh(code)
    assert result["before"] == []
    import vpeft

    assert set(result["names"]) == set(vpeft.__all__)
    assert set(vpeft.__all__) <= set(result["dir"])
    assert callable(vpeft.apply) and vpeft.PeftModel.__name__ == "PeftModel"
    with pytest.raises(AttributeError):
        vpeft.no_such_name  # noqa: B018


def test_registry_sees_every_builtin_method_however_reached() -> None:
    """`vpeft.core.registry` alone (no `vpeft.methods` import first) lists every shipped method,
    and registering them imports no timm (`vpeft methods` needs torch only)."""
    code = (
        "from vpeft.core.registry import available_methods, get_method\n"
        + "names = available_methods()\n"
        + "get_method('lora')\n"
        + _LOADED
        + "print(json.dumps({'names': names, 'loaded': loaded}))"
    )
    fresh = _fresh(code)
    import vpeft.methods.builtin  # noqa: F401
    from vpeft.methods import available_methods

    assert fresh["names"] == available_methods()
    assert {"lora", "full", "linear", "ssf", "vpt-deep", "spt-lora"} <= set(fresh["names"])
    assert "timm" not in fresh["loaded"] and "matplotlib" not in fresh["loaded"]


def test_help_texts_written_out_match_their_sources() -> None:
    """The lists and defaults that --help shows without importing their (torch) modules."""
    from vpeft.backbones import FAMILIES, TIMM_FAMILIES
    from vpeft.bench.demo import DEFAULT_METHODS, DEFAULT_TASKS
    from vpeft.cli import demo
    from vpeft.data.synthetic import TARGET_TASKS
    from vpeft.serve.app import MAX_UPLOAD
    from vpeft.serve.limits import MAX_UPLOAD as SHOWN_MAX_UPLOAD

    assert demo.HELP_DEFAULT_TASKS == DEFAULT_TASKS
    assert demo.HELP_DEFAULT_METHODS == DEFAULT_METHODS
    assert tuple(TARGET_TASKS) == demo.HELP_TARGET_TASKS
    assert SHOWN_MAX_UPLOAD == MAX_UPLOAD
    assert tuple(name for name, _ in FAMILIES.values()) == TIMM_FAMILIES


def test_train_config_keeps_its_old_home() -> None:
    from vpeft.core.train_config import TrainConfig as Light
    from vpeft.train import TrainConfig
    from vpeft.train.config import TRAJECTORY_FIELDS
    from vpeft.train.config import TrainConfig as Old

    assert TrainConfig is Old is Light and "epochs" in TRAJECTORY_FIELDS
