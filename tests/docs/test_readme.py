"""The README's Python quick start runs as written (in a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_a_python_quick_start() -> None:
    blocks = _python_blocks()
    assert blocks and "vpeft.apply" in blocks[0] and "vpeft.load" in blocks[0]


def test_readme_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_blocks()[0], "README.md", "exec"), namespace)
    pm, plain = namespace["pm"], namespace["plain"]
    assert (tmp_path / "task.safetensors").is_file()
    assert pm.summary().trainable_encoder == 12 * 2 * 8 * (768 + 768)  # LoRA r=8 on q, v
    assert type(plain).__name__ == "VisionTransformer"
    assert "lora" in capsys.readouterr().out


def test_readme_multitask_block_runs() -> None:
    block = next(b for b in _python_blocks() if "pascal_mt_tasks" in b)
    namespace: dict = {}
    exec(compile("import vpeft\n" + block, "README.md", "exec"), namespace)
    summary = namespace["mt"].summary()
    swin_t_widths = 2 * 96 + 2 * 192 + 6 * 384 + 2 * 768  # Σ_blocks d
    assert summary.encoder_per_task == 4 * 2 * 4 * (2 * swin_t_widths)  # 4 tasks × LoRA r4 q,v
    unused = {id(m) for m in namespace["mt"].spec.unused_by_taps()}  # the final norm
    biases = sum(  # every bias the backbone owns (wrappers own none of their own)
        m._parameters["bias"].numel()
        for m in namespace["mt"].model.modules()
        if m._parameters.get("bias") is not None and id(m) not in unused
    )
    tables = sum(t.numel() for t in namespace["mt"].spec.relative_position_tables)
    assert summary.encoder_shared == biases + tables  # BitFit on Swin includes the bias tables
    assert summary.tasks == 4 and summary.head == 2_549_024  # the spec's decoders + out-norms
