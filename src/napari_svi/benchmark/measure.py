"""Wall time and peak memory of one call.

Peak host memory is the high-water mark of the process's resident set size (RSS) during the call
minus the RSS just before it, in MiB. ``tracemalloc`` cannot see PyTorch's allocations, the RSS
can. On Linux the kernel's high-water mark (``VmHWM``) is reset before the call by writing ``5``
to ``/proc/self/clear_refs``, so the peak is exact; elsewhere a thread samples the RSS every few
milliseconds (``psutil``), which can miss very short peaks. Before the baseline is taken the
garbage collector runs and glibc returns freed heap pages to the system (``malloc_trim``), so
memory freed by earlier calls but still held by the allocator does not hide new allocations.
On CUDA the peak of ``torch.cuda.max_memory_allocated`` is reported as well.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Measurement:
    """What :func:`measure` returns: the call's result, seconds, host and CUDA peak memory in MiB."""

    value: object
    seconds: float
    peak_mb: float
    cuda_peak_mb: float | None = None
    method: str = ""


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _trim(collect: bool = True) -> None:
    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return psutil.Process().memory_info().rss


class _Sampler(threading.Thread):
    def __init__(self, interval_s: float = 0.002):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak = _rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval_s)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes())


def measure(fn: Callable[[], object], device: str | torch.device = "cpu", *, collect: bool = True) -> Measurement:
    """Call ``fn()`` once; return its result with wall time and peak memory above the start.

    ``device``: the torch device ``fn`` computes on; on CUDA the call is synchronised before the
    clock stops and the peak allocated GPU memory is recorded. ``collect=False`` skips the full
    garbage collection before the call (about 0.1 s; repeats of one call need it only once).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    _trim(collect)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        cuda_base = torch.cuda.memory_allocated(device)
    base = _rss_bytes()
    hwm = _reset_hwm()
    sampler = None if hwm else _Sampler()
    if sampler is not None:
        sampler.start()
    t0 = time.perf_counter()
    try:
        value = fn()
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    finally:
        peak = sampler.stop() if sampler is not None else None
    if hwm:
        peak = (_status_kib("VmHWM") or 0) * 1024
    cuda_peak = (torch.cuda.max_memory_allocated(device) - cuda_base) / 2**20 if cuda else None
    return Measurement(
        value=value,
        seconds=seconds,
        peak_mb=max(0.0, (peak - base) / 2**20),
        cuda_peak_mb=cuda_peak,
        method="VmHWM" if hwm else "RSS sampling",
    )
