"""How many CPU threads torch should use: the cores this process may actually run on.

`os.cpu_count()` reports the machine; a container or `taskset` may give the process fewer
cores (`os.sched_getaffinity`) or a CPU-time quota (cgroup `cpu.max` / `cpu.cfs_quota_us`). More
intra-op threads than usable cores oversubscribe: every parallel region waits for its slowest
thread, and a descheduled thread stalls all the others.

Busy-waiting: torch's OpenMP threads spin for a while at the end of each parallel region before
sleeping. torch exposes no runtime switch for that; the OpenMP runtime reads
``OMP_WAIT_POLICY=PASSIVE`` (GNU: also ``GOMP_SPINCOUNT=0``) from the environment **when it
loads**, i.e. before ``import torch``. `passive_wait_env()` gives those variables for a child
process or a launcher; `configure_threads` cannot change them once torch is imported.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..errors import ConfigError

#: OpenMP runtimes sleep instead of spinning when idle (set before torch loads).
PASSIVE_WAIT = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}


def _affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cgroup_quota_cores(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPU quota in cores from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`; None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _runnable_others() -> int:
    """Runnable tasks on the machine right now besides this one (/proc/loadavg field 4)."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - 1)


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota."""
    cores = _affinity_cores()
    quota = _cgroup_quota_cores()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def default_threads(share_busy_cores: bool = True) -> int:
    """Intra-op threads for this process: `available_cores()`, minus the cores other runnable
    tasks hold at this moment when `share_busy_cores` (never below 1)."""
    cores = available_cores()
    if share_busy_cores:
        cores -= min(_runnable_others(), cores - 1)
    return max(1, cores)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to `threads` (None: `default_threads()`); return the count."""
    n = default_threads() if threads is None else threads
    if n < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(n)
    return n


def passive_wait_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: this process's) with the passive-wait OpenMP variables set,
    keeping any value already there."""
    out = dict(os.environ if env is None else env)
    for key, value in PASSIVE_WAIT.items():
        out.setdefault(key, value)
    return out
