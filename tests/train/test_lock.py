"""The output-folder lock: a second job is refused naming the holder; a dead holder's lock is
taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpeft.cli.main import app
from vpeft.errors import OutputError
from vpeft.train.lock import LOCK_NAME, acquire, holder_of, output_lock, release

HOLDER = (
    "import sys; from vpeft.train.lock import acquire; acquire(sys.argv[1]); "
    "print('locked', flush=True); sys.stdin.read()"
)


def _hold(folder: Path) -> subprocess.Popen:
    """Another process holding the lock on `folder` until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    proc = _hold(tmp_path)
    try:
        with pytest.raises(OutputError, match=f"in use by pid {proc.pid} on host"):
            acquire(tmp_path)
        result = CliRunner().invoke(
            app,
            ["train", "-b", "vit-tiny-synth", "-m", "linear", "--data", "synthetic:synth-count",
             "--out", str(tmp_path), "--epochs", "1", "--warmup-epochs", "0", "--json"],
        )  # fmt: skip
        assert result.exit_code == 2
        assert f"pid {proc.pid}" in json.loads(result.stdout)["error"]["message"]
    finally:
        proc.stdin.close()
        proc.wait()
    acquire(tmp_path)  # free again once the holder ends
    release(tmp_path)


def test_lock_of_a_killed_job_is_taken_over(tmp_path: Path) -> None:
    proc = _hold(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert holder_of(tmp_path)["pid"] == proc.pid  # the file is still there
    with output_lock(tmp_path):
        assert holder_of(tmp_path)["pid"] == os.getpid()


def test_fake_stale_lock_file_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 7, "host": "elsewhere"}))
    with output_lock(tmp_path):
        assert holder_of(tmp_path)["pid"] == os.getpid()
    assert holder_of(tmp_path) == {}  # released: emptied


def test_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    with output_lock(tmp_path), output_lock(tmp_path):
        assert holder_of(tmp_path)["pid"] == os.getpid()
    with output_lock(tmp_path):  # fully released above
        pass
