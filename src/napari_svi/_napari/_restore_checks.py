"""Checks of the "Restore time-lapse" form that need no Qt: input layer, prior, sampler limits, planes, sizes.

The form shows each reason under its field and disables Restore, instead of letting a spin box
clamp a typed value (sigma -1 becoming 1.0, 100000 steps becoming 1000). The cost estimate is in
``_restore_cost``, the region and frame range in ``_restore_region``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..priors.loading import DEFAULT_PRIOR_DIR
from ._common import range_problem

PRIOR_FOLDER, PRIOR_FILE = "__folder__", "__file__"
PRIOR_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


def check_prior(choice: str, path) -> str:
    """The ``prior`` argument for the chosen entry, or ValueError with what is wrong."""
    if choice == "default":
        if not (DEFAULT_PRIOR_DIR / "config.json").is_file():
            raise ValueError("The bundled default prior is not installed; choose a prior folder or file.")
        return "default"
    if choice not in (PRIOR_FOLDER, PRIOR_FILE):
        folder = Path(choice)  # a folder trained in this session
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} no longer holds a prior (config.json is missing).")
        return str(folder)
    p = Path(str(path)).expanduser()
    if str(path) in ("", "."):
        raise ValueError("Choose the prior's folder or checkpoint file.")
    if not p.exists():
        raise ValueError(f"{p} does not exist.")
    if choice == PRIOR_FOLDER:
        if not p.is_dir():
            raise ValueError(f"{p} is a file; choose 'file…' for checkpoint files.")
        if not ((p / "config.json").is_file() or (p / "model_index.json").is_file()):
            raise ValueError(f"{p} has no config.json: not a napari-svi prior or diffusers folder.")
    elif p.suffix.lower() not in PRIOR_SUFFIXES:
        raise ValueError(f"Checkpoint files end in {', '.join(PRIOR_SUFFIXES)}; got {p.name}.")
    return str(p)

#: Allowed ranges of the sampler fields (the spin boxes accept more, so that a typed value is
#: reported, not silently clamped). Steps: at most the warm start's timestep (200) + 1.
LIMITS = {"steps": (1, 201), "cg_steps": (0, 200), "samples": (1, 64), "preview_every": (0, 1000),
          "eta": (0.0, 1.0), "seed": (0, 2**31 - 2)}
LABELS = {"steps": "Steps", "cg_steps": "CG steps", "samples": "Posterior samples", "preview_every": "Live preview every",
          "eta": "η (stochasticity)", "seed": "Seed"}


def check_limits(values: dict[str, int]) -> str | None:
    """The first sampler field outside its range, as a sentence; ``None`` when all are fine."""
    for name, value in values.items():
        problem = range_problem(LABELS[name], value, *LIMITS[name])
        if problem:
            return problem
    return None


def image_problem(layer) -> str | None:
    """Why an image layer cannot be restored (no layer, RGB, multiscale, too few axes, NaN), or ``None``."""
    if layer is None:
        return "Choose the image layer to restore."
    if layer.rgb:
        return "RGB layers are not supported: split the channels first."
    if layer.multiscale:
        return "Multiscale layers are not supported: open the full-resolution level as its own layer."
    if np.ndim(layer.data) < 3:
        return f"A time-lapse needs a time axis and two image axes; {layer.name!r} is {np.ndim(layer.data)}-D."
    return nonfinite_problem(layer.data)


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


def shape_line(shape: tuple[int, ...], time_axis: int, crop, whole: bool, result: tuple[int, int, int]) -> str:
    """The form's size line: input and result sizes with every axis, the part restored and the planes.

    ``shape`` is the layer's shape, ``crop`` the :class:`~._restore_region.Crop` restored (``whole``
    when it is all of the stack) and ``result`` the true stack's (T, H, W) for it. A layer with more
    axes is restored plane by plane.
    """
    full = [int(n) for n in shape]
    full[time_axis], full[-2], full[-1] = crop.shape
    out = list(full)
    out[time_axis], out[-2], out[-1] = result
    n = len(full)
    letters = ["T" if i == time_axis else "Y" if i == n - 2 else "X" if i == n - 1 else "Z" for i in range(n)]
    planes = len(plane_names(full, time_axis))
    by = f"; {planes} planes, restored one after the other" if planes > 1 else ""
    part = "" if whole else (
        f"frames {crop.t0}–{crop.t1 - 1}, rows {crop.y0}–{crop.y1 - 1}, columns {crop.x0}–{crop.x1 - 1}: ")
    return f"{part}{' × '.join(map(str, full))} ({' × '.join(letters)}) → result {' × '.join(map(str, out))}{by}"
