"""Checks of output paths, run before any work starts, so a bad ``--out`` costs one line and no
lost computation (a file where a folder is wanted, a folder where a file is wanted, a location
that cannot be created or written)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import OutputError


def _writable_folder(folder: Path, flag: str, target: Path) -> None:
    """Create `folder` if needed and prove it writable with a probe file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".vpeft-probe."):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise OutputError(
            f"{flag} {target}: cannot write into {folder} ({reason}); choose a writable location"
        ) from None


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Make sure `path` is (or can become) a writable folder; create it. `OutputError` if not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is an existing file; give a folder path")
    _writable_folder(path, flag, path)
    return path


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """Make sure `path` can be written as a file (not a folder; parent writable)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is an existing folder; give a file path")
    _writable_folder(path.parent, flag, path)
    return path
