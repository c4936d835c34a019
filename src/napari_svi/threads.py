"""How many CPU threads PyTorch uses: the cores this process may run on, or what the user asked.

PyTorch's own default counts the cores of the machine, including those this process's CPU
affinity or its container's CPU quota keep it from, and an oversubscribed CPU is many times
slower (issue 15: a 16 x 128 x 128 restore took 305 s with PyTorch's default threads on a busy
2-core machine, 81 s with one). So the default here is the number of cores this process may use.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores: the tightest ``cpu.max`` along its cgroup v2
    path (``/sys/fs/cgroup/cpu.max`` in a container), or cgroup v1's ``cpu.cfs_quota_us``.

    ``None`` when there is no quota or no file to read.
    """
    folders = [root]
    try:
        for line in proc_cgroup.read_text().splitlines():
            if line.startswith("0::/"):  # cgroup v2: the process's own group, below the root
                own = root / line[4:].strip()
                folders = [own, *(p for p in own.parents if p == root or root in p.parents)]
                break
    except OSError:
        pass
    limits = []
    for folder in folders:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota != "max" and float(period) > 0:
            limits.append(float(quota) / float(period))
    try:  # cgroup v1, as a container sees it: -1 = no quota
        quota_us = float((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = float((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            limits.append(quota_us / period_us)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def usable_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by the cgroup CPU quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def default_threads() -> int:
    """PyTorch CPU threads when none are asked for: ``OMP_NUM_THREADS`` when set, else :func:`usable_cores`."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    return usable_cores()


def choose_threads(threads: int | None, name: str = "threads") -> int:
    """``threads`` checked (an integer >= 1), or :func:`default_threads` for ``None``."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"{name} must be None (the cores this process may use) or an integer >= 1, got {threads!r}")
    return int(threads)


def set_torch_threads(threads: int | None, name: str = "threads") -> int:
    """Set PyTorch's CPU threads (:func:`choose_threads`) for the calling thread and those it starts; returns them."""
    import torch

    n = choose_threads(threads, name)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
