"""Checks and estimates of the "Restore time-lapse" form that need no Qt: limits, NaN, cost, planes.

The form shows each reason under its field and disables Restore, instead of letting a spin box
clamp a typed value (sigma -1 becoming 1.0, 100000 steps becoming 1000). The cost estimate is a
rough model from the speed benchmark (``benchmarks/results/speed``, ``benchmarks/results/gpu``):
time grows with network evaluations x pixels, memory with the pixels of one temporal window plus
the result arrays.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

#: Allowed ranges of the sampler fields (the spin boxes accept more, so that a typed value is
#: reported, not silently clamped).
LIMITS = {"steps": (1, 1000), "cg_steps": (0, 200), "samples": (1, 64), "preview_every": (0, 1000),
          "eta": (0.0, 1.0), "seed": (0, 2**31 - 2)}
LABELS = {"steps": "Steps", "cg_steps": "CG steps", "samples": "Posterior samples", "preview_every": "Live preview every",
          "eta": "η (stochasticity)", "seed": "Seed"}

# seconds per network evaluation per megapixel (including the CG solve), from the speed benchmarks
SECONDS_PER_MEGAPIXEL_NFE = {"cpu": 16.0, "cuda": 0.04}
# bytes per solved pixel of one window: CG vectors, estimates, noise, network activations
BYTES_PER_SOLVED_PIXEL = {"cpu": 400, "cuda": 1800}
CPU_NETWORK_BYTES = 600 * 2**20  # on the CPU the network runs in chunks of 65536 pixels
LONG_RUN_SECONDS = 3600.0


def check_limits(values: dict[str, int]) -> str | None:
    """The first sampler field outside its range, as a sentence; ``None`` when all are fine."""
    for name, value in values.items():
        low, high = LIMITS[name]
        if not low <= value <= high:
            return f"{LABELS[name]} must be {low} … {high}, not {value}."
    return None


_FINITE_CACHE: dict[int, tuple[object, str | None]] = {}


def nonfinite_problem(data) -> str | None:
    """Why the layer data cannot be restored (NaN or infinite values), or ``None``; cached per array.

    Lazy arrays (dask, zarr) are not scanned here: the core checks them window by window.
    """
    if hasattr(data, "compute") or not isinstance(data, np.ndarray) or data.dtype.kind != "f":
        return None
    key = id(data)
    cached = _FINITE_CACHE.get(key)
    if cached is not None and cached[0] is data:
        return cached[1]
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    problem = f"The layer has {bad} NaN or infinite values; replace or mask them first." if bad else None
    _FINITE_CACHE.clear()  # keep one entry: the current layer
    _FINITE_CACHE[key] = (data, problem)
    return problem


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


def plane_names(shape: tuple[int, ...], time_axis: int, axis_labels=None) -> list[str]:
    """Names of the 2-D + t stacks of a layer with more axes, ``["Z 0", "Z 1", ...]``, in restore order."""
    lead = [i for i in range(len(shape) - 2) if i != time_axis]
    if not lead:
        return []
    labels = [str(a) for a in axis_labels] if axis_labels is not None and len(axis_labels) == len(shape) else None
    names = []
    for index in np.ndindex(*(shape[i] for i in lead)):
        parts = []
        for axis, k in zip(lead, index, strict=True):
            label = labels[axis] if labels and not labels[axis].isdigit() and not labels[axis].startswith("-") else None
            parts.append(f"{label or ('Z' if len(lead) == 1 else f'axis {axis}')} {k}")
        names.append(", ".join(parts))
    return names


INT_LIMIT = 2**31 - 1
FLOAT_LIMIT = 1e9


def open_ranges(*widgets) -> None:
    """Let spin boxes hold any number, so that a typed value is checked and reported, never clamped.

    A Qt spin box replaces a value outside its range (or refuses the minus sign) without a word;
    the form's checks say what is allowed instead.
    """
    from magicgui.widgets import FloatSpinBox

    for w in widgets:
        limit = FLOAT_LIMIT if isinstance(w, FloatSpinBox) else INT_LIMIT
        w.min, w.max = -limit, limit


def make_scrollable(container) -> None:
    """Put ``container``'s fields into a vertical scroll area inside its own widget.

    napari docks a magicgui widget's ``native`` widget, the inner one even for a
    ``Container(scrollable=True)``, so a tall form would grow the window past the screen. Here the
    form's layout moves into a scroll area, and the dock can be as short as the window allows.
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

    outer = container.native
    inner = QWidget()
    inner.setLayout(outer.layout())  # moves the layout and every field into ``inner``
    scroll = QScrollArea(outer)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(inner)
    scroll.setMinimumWidth(inner.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
    layout = QVBoxLayout(outer)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(scroll)


#: A restored region must hold at least this many pixels per side (the noise estimate needs 8 x 8).
MIN_REGION = 8


@dataclass(frozen=True)
class Crop:
    """Frames ``t0 .. t1 - 1`` and pixels ``[y0, y1) x [x0, x1)`` of a layer's (T, Y, X) stack."""

    t0: int
    t1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.t1 - self.t0, self.y1 - self.y0, self.x1 - self.x0)

    def is_whole(self, shape: tuple[int, int, int]) -> bool:
        return (self.t0, self.y0, self.x0) == (0, 0, 0) and self.shape == tuple(shape)

    def slices(self, ndim: int, time_axis: int) -> tuple[slice, ...]:
        index = [slice(None)] * ndim
        index[time_axis] = slice(self.t0, self.t1)
        index[-2], index[-1] = slice(self.y0, self.y1), slice(self.x0, self.x1)
        return tuple(index)

    def crop_mask(self, mask):
        """A mask at the measurement's resolution, (Y, X) or (T, Y, X), cut to this crop."""
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.ndim == 3:
            return mask[self.t0 : self.t1, self.y0 : self.y1, self.x0 : self.x1]
        return mask[self.y0 : self.y1, self.x0 : self.x1]

    def record(self) -> dict:
        return {"frames": [self.t0, self.t1 - 1], "rows": [self.y0, self.y1], "cols": [self.x0, self.x1]}


def pixel_box(world_corners: np.ndarray, layer, shape: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the layer pixels that a rectangle in world coordinates (the last two axes) covers.

    ``world_corners`` are points of the rectangle, shape ``(N, 2)`` (Y, X) in world units. A pixel
    is inside when its centre is; the box is clipped to the frame.
    """
    scale = np.asarray(layer.scale, dtype=float)[-2:]
    translate = np.asarray(layer.translate, dtype=float)[-2:]
    data = (np.asarray(world_corners, dtype=float) - translate) / scale
    low, high = data.min(axis=0), data.max(axis=0)
    y0, x0 = (int(max(0, math.ceil(v - 0.5))) for v in low)
    y1 = int(min(shape[1], math.floor(high[0] + 0.5)))
    x1 = int(min(shape[2], math.floor(high[1] + 0.5)))
    return y0, max(y0, y1), x0, max(x0, x1)


def check_crop(crop: Crop, shape: tuple[int, int, int]) -> str | None:
    """Why a crop cannot be restored, or ``None``."""
    t = shape[0]
    if not 0 <= crop.t0 < t or not crop.t0 < crop.t1 <= t:
        return f"Frames must run from 0 to {t - 1}, first before last; got {crop.t0} to {crop.t1 - 1}."
    h, w = crop.shape[1:]
    if h < MIN_REGION or w < MIN_REGION:
        return f"The region covers {h} × {w} pixels of the layer; choose at least {MIN_REGION} × {MIN_REGION}."
    return None


def remove_layer(viewer, layer) -> None:
    """Remove ``layer`` without stalling the event loop on napari's full garbage collection.

    napari's canvas runs ``gc.collect()`` after every layer removal (a fix for OpenGL drivers on
    Windows); with torch loaded that walks some 370,000 objects, about half a second on a busy
    CPU. Elsewhere, the objects that exist already are frozen for that collection, which then only
    looks at new ones (a few ms); they are collected again after ``gc.unfreeze()`` as usual.
    """
    import gc
    import sys

    if sys.platform == "win32":  # keep napari's driver fix whole there
        viewer.layers.remove(layer)
        return
    gc.freeze()
    try:
        viewer.layers.remove(layer)
    finally:
        gc.unfreeze()
