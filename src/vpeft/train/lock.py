"""A lock on a run's output folder, so two jobs never write into one ``--out`` at once.

The lock is ``<out>/.vpeft.lock``, held with an exclusive ``fcntl.flock`` for the whole run; the
file records the holder's pid, host and start time for the error message a second job gets. The
kernel releases a ``flock`` when its process dies (even by ``kill -9``), so a lock file left by a
killed job is simply taken over by the next one: staleness is decided by the kernel, never by
guessing from pids. Where ``fcntl`` is missing (Windows) the lock falls back to an exclusively
created file whose pid is checked for liveness on the same host.

Acquisition is re-entrant within a process (the CLI takes the lock before loading data, and
`vpeft.train.train` takes it again), counted per folder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..errors import OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".vpeft.lock"

#: folder -> (open lock file, depth) for the locks this process holds.
_HELD: dict[Path, tuple[IO[str], int]] = {}


def holder_of(folder: str | Path) -> dict[str, Any]:
    """The pid / host / start time recorded in `folder`'s lock file ({} when unreadable)."""
    try:
        record = json.loads((Path(folder) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {holder.get('pid')} on host {holder.get('host')} (started {when})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _open_locked(path: Path) -> IO[str]:
    """Open `path` and hold an exclusive lock on it; `OutputError` naming the holder if taken."""
    if fcntl is not None:
        handle = open(path, "a+")  # noqa: SIM115 (held for the whole run)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise _locked_error(path.parent) from None
        return handle
    holder = holder_of(path.parent)  # pragma: no cover - Windows fallback
    if holder and holder.get("host") == socket.gethostname() and _pid_alive(holder["pid"]):
        raise _locked_error(path.parent)
    path.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR)
    except FileExistsError:
        raise _locked_error(path.parent) from None
    return os.fdopen(fd, "a+")


def _locked_error(folder: Path) -> OutputError:
    return OutputError(
        f"output folder {folder} is in use by {_describe(holder_of(folder))}; wait for that job "
        "to finish or choose another --out"
    )


def acquire(folder: str | Path) -> None:
    """Lock `folder` (created if needed) for this process; see the module docstring."""
    folder = Path(folder).resolve()
    if folder in _HELD:
        handle, depth = _HELD[folder]
        _HELD[folder] = (handle, depth + 1)
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output folder {folder}: {err.strerror}") from None
    handle = _open_locked(folder / LOCK_NAME)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(record) + "\n")
    handle.flush()
    _HELD[folder] = (handle, 1)


def release(folder: str | Path) -> None:
    """Undo one `acquire`; the last one empties the lock file and releases the lock (the file
    stays: unlinking it would let a job lock the old inode while another creates a new one)."""
    folder = Path(folder).resolve()
    handle, depth = _HELD[folder]
    if depth > 1:
        _HELD[folder] = (handle, depth - 1)
        return
    del _HELD[folder]
    try:
        handle.truncate(0)
    finally:
        handle.close()


@contextmanager
def output_lock(folder: str | Path | None, enabled: bool = True) -> Iterator[None]:
    """Hold the lock on `folder` for the duration of the block (no-op when `folder` is empty or
    `enabled` is false, e.g. on ranks other than 0)."""
    if not folder or not enabled:
        yield
        return
    acquire(folder)
    try:
        yield
    finally:
        release(folder)
