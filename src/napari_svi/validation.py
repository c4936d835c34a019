"""Input checks shared by restore, degrade, the CLI and the widgets: clear errors before heavy work."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Largest magnitude accepted in float64 input: the solver computes in float32 (at most 3.4e38).
MAX_MAGNITUDE = 1e30


def check_stack(data, *, time_axis: int = 0, name: str = "data", check_values: bool = True):
    """Check that ``data`` is a non-empty, finite stack with a time axis and two image axes.

    Returns ``data`` as a NumPy array (dask arrays are kept lazy and checked only for shape).
    Raises ``ValueError`` naming ``name`` and what is allowed.
    """
    if data is None:
        raise ValueError(f"{name} is missing: give an array of shape (T, Y, X) or with more leading axes")
    arr = data if hasattr(data, "compute") else np.asarray(data)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric (bool, integer or float), got dtype {arr.dtype}")
    if arr.ndim < 3:
        raise ValueError(
            f"{name} must have a time axis and two image axes (T, Y, X) or more axes, got shape {arr.shape}"
        )
    normalize_axis(time_axis, arr.ndim, name="time_axis", image_axes=2)
    if arr.size == 0 or min(arr.shape) == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if min(arr.shape[-2:]) < 2:
        raise ValueError(f"{name} frames must be at least 2 x 2 pixels, got {arr.shape[-2:]}")
    if check_values and not hasattr(arr, "compute") and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or infinite values; replace or mask them first")
    if check_values and not hasattr(arr, "compute") and arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        largest = float(np.max(np.abs(arr)))
        if largest > MAX_MAGNITUDE:
            raise ValueError(
                f"{name} has values up to {largest:.3g}, beyond the {MAX_MAGNITUDE:.0e} that napari-svi's float32 "
                "computation holds; scale the data down by a fixed factor first"
            )
    return arr


def normalize_axis(axis: int, ndim: int, *, name: str = "time_axis", image_axes: int = 2) -> int:
    """``axis`` as a non-negative index; it must not be one of the last ``image_axes`` (Y, X) axes."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise ValueError(f"{name} must be an integer, got {axis!r}")
    allowed = ndim - image_axes
    ax = int(axis) + ndim if axis < 0 else int(axis)
    if not 0 <= ax < allowed:
        raise ValueError(
            f"{name}={axis} is not allowed for {ndim}-D data: the last two axes are Y and X, "
            f"so {name} must be in 0..{allowed - 1}"
        )
    return ax


def move_time_axis(arr, time_axis: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """View ``arr`` as ``(N, T, Y, X)`` stacks (N = product of the other leading axes).

    Returns the stacks and a function mapping an ``(N, T', Y', X')`` result back to ``arr``'s axis
    order (with the new sizes).
    """
    ax = normalize_axis(time_axis, arr.ndim)
    moved = np.moveaxis(arr, ax, -3) if not hasattr(arr, "compute") else arr.transpose(
        [i for i in range(arr.ndim) if i != ax][:-2] + [ax, arr.ndim - 2, arr.ndim - 1]
    )
    lead = moved.shape[:-3]
    stacks = moved.reshape((-1, *moved.shape[-3:]))

    def restore_axes(out: np.ndarray) -> np.ndarray:
        out = np.asarray(out).reshape((*lead, *out.shape[-3:]))
        return np.moveaxis(out, -3, ax)

    return stacks, restore_axes


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` when it is an integer (Python or NumPy, not bool) ``>= minimum``.

    The one integer check of the package (operators, restore, priors): raises ``ValueError``
    naming ``name``, e.g. "downsample must be a positive integer, got 2.5".
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)
