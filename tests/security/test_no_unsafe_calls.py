"""The package never unpickles, evaluates strings or runs shells (an AST scan of `src/vpeft`)."""

from __future__ import annotations

import ast
from pathlib import Path

import vpeft

PACKAGE = Path(vpeft.__file__).parent
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_uses(source: str) -> list[str]:
    """Descriptions of unsafe constructs in `source` (empty when clean)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] in UNPICKLERS for n in names):
                found.append(f"line {line}: imports an unpickler")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        kwargs = {k.arg: k.value for k in node.keywords}
        if isinstance(func, ast.Name) and func.id in {"eval", "exec", "compile", "__import__"}:
            found.append(f"line {line}: {func.id}()")
        torch_load = (
            isinstance(func, ast.Attribute)
            and func.attr == "load"
            and isinstance(func.value, ast.Name)
            and func.value.id == "torch"
        )
        if torch_load and not _is_true(kwargs.get("weights_only", ast.Constant(False))):
            found.append(f"line {line}: torch.load without weights_only=True")
        if _is_true(kwargs.get("shell", ast.Constant(False))):
            found.append(f"line {line}: shell=True")
        if _is_true(kwargs.get("allow_pickle", ast.Constant(False))):
            found.append(f"line {line}: allow_pickle=True")
    return found


def test_scanner_catches_each_pattern() -> None:
    bad = (
        "import pickle\nimport torch, subprocess\ntorch.load('x')\n"
        "torch.load('x', weights_only=False)\neval('1')\nexec('x=1')\n"
        "subprocess.run('ls', shell=True)\nimport numpy as np\nnp.load('a', allow_pickle=True)\n"
    )
    assert len(unsafe_uses(bad)) == 7
    assert unsafe_uses("torch.load('x', weights_only=True)\nmodel.eval()\n") == []


def test_package_has_no_unsafe_calls() -> None:
    problems = {
        str(path.relative_to(PACKAGE)): unsafe_uses(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert {k: v for k, v in problems.items() if v} == {}
