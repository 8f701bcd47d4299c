"""How many cores this process may use: the default of RUN_PROCESSES (``tbx run``'s worker processes)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def cgroup_cores(text: str) -> int | None:
    """The cores a cgroup v2 ``cpu.max`` allows (a quota of 1.5 cores: 2), None without a quota."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. ``taskset``), capped by a container's CPU quota
    (``docker run --cpus``); at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota = cgroup_cores(CGROUP_CPU_MAX.read_text())
    except OSError:
        quota = None
    return max(1, min(cores, quota) if quota is not None else cores)


def default_run_processes() -> int:
    """RUN_PROCESSES unset (or ``auto``): 2 worker processes when at least 2 cores are usable, else 1."""
    return 2 if usable_cores() >= 2 else 1
