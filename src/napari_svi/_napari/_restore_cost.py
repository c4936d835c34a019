"""The cost estimate of "Restore time-lapse": time and memory before the run, and what to ask first.

A rough model from the speed benchmark (``benchmarks/results/speed``, ``benchmarks/results/gpu``):
time grows with network evaluations x pixels, memory with the pixels of one temporal window plus
the result arrays. Restore shows the estimate above its button and asks before a run beyond the
machine (more memory than it has, over an hour) or with a temporal PSF far longer than the stack.
No Qt here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

# seconds per network evaluation per megapixel (including the CG solve), from the speed benchmarks
SECONDS_PER_MEGAPIXEL_NFE = {"cpu": 16.0, "cuda": 0.04}
# bytes per solved pixel of one window: CG vectors, estimates, noise, network activations
BYTES_PER_SOLVED_PIXEL = {"cpu": 400, "cuda": 1800}
CPU_NETWORK_BYTES = 600 * 2**20  # on the CPU the network runs in chunks (restore.CPU_PIXELS_PER_CALL): bounded
LONG_RUN_SECONDS = 3600.0


@dataclass
class Cost:
    """Rough cost of a restore: seconds, bytes of host memory, bytes of GPU memory, and the machine's."""

    seconds: float
    host_bytes: float
    gpu_bytes: float
    host_available: float | None
    gpu_available: float | None

    @property
    def exceeds_memory(self) -> bool:
        host = self.host_available is not None and self.host_bytes > self.host_available
        gpu = self.gpu_available is not None and self.gpu_bytes > self.gpu_available
        return host or gpu

    @property
    def exceeds(self) -> bool:
        """Beyond this machine: more memory than it has, or longer than an hour."""
        return self.exceeds_memory or self.seconds > LONG_RUN_SECONDS

    def describe(self) -> str:
        from ._common import format_seconds

        text = f"Estimated: about {format_seconds(self.seconds)}, {_gb(self.host_bytes)} memory"
        if self.gpu_bytes:
            text += f", {_gb(self.gpu_bytes)} GPU memory"
        if self.exceeds_memory:
            have = self.gpu_available if self.gpu_bytes and self.gpu_bytes > (self.gpu_available or math.inf) else self.host_available
            text += f" (more than the {_gb(have)} available)"
        return text + "."


def _gb(n: float | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


def available_host_memory() -> float | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _device_kind(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def estimate_cost(true_shape: tuple[int, int, int], stacks: int, *, steps: int, samples: int, window: int = 16,
                  margin: int = 0, device: str = "auto") -> Cost:
    """Rough time and memory of restoring ``stacks`` stacks of the true size ``true_shape`` (T, H, W)."""
    t, h, w = true_shape
    kind = _device_kind(device)
    megapixels = t * h * w * stacks / 1e6
    seconds = SECONDS_PER_MEGAPIXEL_NFE[kind] * megapixels * steps * samples
    if kind == "cpu":
        seconds /= max(1, min(4, _torch_threads()))  # the benchmark ran on one thread
    solved = min(t, window + 2 * margin) * h * w
    working = solved * BYTES_PER_SOLVED_PIXEL[kind] + (CPU_NETWORK_BYTES if kind == "cpu" else 0)
    result = t * h * w * stacks * 4 * (samples + (2 if samples > 1 else 0) + 1)
    host = result + (working if kind == "cpu" else solved * 16)
    gpu = working if kind == "cuda" else 0.0
    gpu_free = None
    if kind == "cuda":
        import torch

        try:
            gpu_free = float(torch.cuda.mem_get_info()[0])
        except RuntimeError:
            gpu_free = None
    return Cost(seconds, float(host), float(gpu), available_host_memory(), gpu_free)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def restore_cost(layer_shape: tuple[int, ...], stack: tuple[int, int, int], region: tuple[int, int, int], spec, *,
                 steps: int, samples: int, device: str) -> tuple[Cost, list[str]]:
    """The cost of restoring ``region`` (T, H, W) of every stack of a layer, and the warnings that ask first.

    ``layer_shape`` is the layer's whole shape, ``stack`` one 2-D + t stack of it (T, H, W): a layer
    with more axes is restored stack by stack.
    """
    from ..windows import DEFAULT_WINDOW

    stacks = max(1, math.prod(layer_shape) // math.prod(stack))
    kernel = spec.temporal_kernel()
    cost = estimate_cost(spec.true_shape(region), stacks, steps=max(1, steps), samples=max(1, samples),
                         window=DEFAULT_WINDOW, margin=0 if kernel is None else len(kernel) - 1, device=device)
    warnings = []
    if kernel is not None and len(kernel) // 2 > region[0] - 1:  # reaches beyond the mirrored stack
        warnings.append(f"The temporal PSF spans {len(kernel)} frames, far more than the stack's {region[0]}: "
                        "most of it falls beyond the first and last frame.")
    return cost, warnings


def describe(estimate: tuple[Cost, list[str]]) -> str:
    """The line above Restore: the estimate and its warnings."""
    cost, warnings = estimate
    return " ".join([cost.describe(), *warnings])


def question(estimate: tuple[Cost, list[str]] | None) -> str | None:
    """What Restore must confirm before it starts (beyond the machine, or a warning), or ``None``."""
    if not estimate:
        return None
    cost, warnings = estimate
    if not (cost.exceeds or warnings):
        return None
    return " ".join([cost.describe(), *warnings, "Start anyway?"])
