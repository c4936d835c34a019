"""Intensity normalisation between a microscope's units and the [0, 1] scale of the solver.

Microscopy data come as uint8/uint16/float with arbitrary offset and gain. Each stack is mapped
to [0, 1] by two percentiles (default 0.1 and 99.9), restored, and mapped back with the same two
numbers, so the result is in the input's units. Values outside the percentiles are kept (not
clipped): real signal brighter than the 99.9th percentile must survive.

Measurements are noisy, so their percentiles are taken after a light spatial Gaussian smoothing
(``MEASUREMENT_SMOOTHING`` pixels): otherwise, in a dim or mostly empty field, the noise itself sets
the range (the 0.1th percentile lands about three noise deviations below the background), and
the prior, trained on clean images whose background sits at the low end, sees background as grey.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_PERCENTILES = (0.1, 99.9)
MEASUREMENT_SMOOTHING = 2.0  # Gaussian sigma in pixels before the percentiles of a measurement


@dataclass(frozen=True)
class IntensityScale:
    """Affine map ``unit = low + (high - low) * scaled`` between input units and [0, 1]."""

    low: float
    high: float

    @property
    def span(self) -> float:
        return self.high - self.low

    def to_unit(self, a: np.ndarray) -> np.ndarray:
        """Input units -> [0, 1] scale, as float32 (a new array; ``a`` is not modified)."""
        return ((np.asarray(a, dtype=np.float32) - np.float32(self.low)) / np.float32(self.span)).astype(np.float32)

    def from_unit(self, a: np.ndarray) -> np.ndarray:
        """[0, 1] scale -> input units, as float32."""
        return (np.asarray(a, dtype=np.float32) * np.float32(self.span) + np.float32(self.low)).astype(np.float32)

    def sigma_to_unit(self, sigma: float) -> float:
        """A noise standard deviation in input units, expressed on the [0, 1] scale."""
        return float(sigma) / self.span


def percentile_scale(
    a,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    name: str = "data",
    smooth: float = 0.0,
    mask=None,
) -> IntensityScale:
    """Percentile-based :class:`IntensityScale` of ``a``; raises ``ValueError`` on constant data.

    ``a`` may be a NumPy or dask array; for a dask array only the percentiles are computed lazily
    from a strided subsample so the whole stack is never held in memory twice. ``smooth`` > 0
    takes the percentiles of ``a`` smoothed by a Gaussian of that sigma (pixels) over its last two
    axes, computed on at most ``2**24`` values (whole frames, evenly spaced), never in place.
    ``mask`` (nonzero = observed, broadcastable to ``a``'s frames: ``(H, W)`` or ``a``'s shape)
    leaves unobserved pixels out: what ``a`` holds there changes nothing (smoothing is normalised
    by the smoothed mask, so it never mixes them in either).
    """
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0 pixels, got {smooth}")
    if mask is not None or (smooth > 0 and np.ndim(a) >= 2):
        arr = _smoothed_frames(a, smooth, mask)
    else:
        arr = np.asarray(a) if not hasattr(a, "compute") else _subsample(a)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):  # a lazy stack is checked here, on its sample
        raise ValueError(f"{name} contains NaN or infinite values; replace or mask them first")
    low, high = np.percentile(arr.astype(np.float64, copy=False), [lo_p, hi_p])
    if not high > low:
        low, high = float(np.min(arr)), float(np.max(arr))
    if not high > low:
        raise ValueError(f"{name} is constant (every value is {low:g}); there is nothing to restore")
    return IntensityScale(float(low), float(high))


def measurement_scale(
    a, percentiles: tuple[float, float] = DEFAULT_PERCENTILES, name: str = "measurement", mask=None
) -> IntensityScale:
    """The solver's scale of a (noisy) measurement: percentiles after ``MEASUREMENT_SMOOTHING``,
    of the observed pixels only when a ``mask`` is given."""
    return percentile_scale(a, percentiles, name=name, smooth=MEASUREMENT_SMOOTHING, mask=mask)


def _smoothed_frames(a, sigma: float, mask=None, max_values: int = 2**24) -> np.ndarray:
    """Evenly spaced whole frames of ``a`` (spatially strided only if one frame is too large), smoothed.

    With a ``mask``, the values of the observed pixels only (a 1-D array), smoothed by normalised
    convolution ``G * (m a) / G * m``.
    """
    from scipy import ndimage

    h, w = a.shape[-2:]
    frames = int(np.prod(a.shape[:-2], dtype=np.int64))
    step = max(1, int(np.ceil(np.sqrt(h * w / max_values))))
    keep = max(1, min(frames, max_values // (((h - 1) // step + 1) * ((w - 1) // step + 1))))
    idx = np.unique(np.linspace(0, frames - 1, keep).round().astype(np.int64))
    flat = a.reshape(frames, h, w)
    sub = np.stack([np.asarray(flat[int(i), ::step, ::step], dtype=np.float32) for i in idx])
    blur = (0, sigma / step, sigma / step)
    if mask is None:
        return ndimage.gaussian_filter(sub, blur, mode="reflect") if sigma > 0 else sub
    m = np.broadcast_to(np.asarray(mask) != 0, a.shape).reshape(frames, h, w)
    m = np.stack([m[int(i), ::step, ::step] for i in idx])
    if not m.any():
        raise ValueError("mask has no observed pixel (all zero); nonzero marks observed pixels")
    if sigma > 0:
        weight = ndimage.gaussian_filter(m.astype(np.float32), blur, mode="reflect")
        sub = ndimage.gaussian_filter(np.where(m, sub, 0), blur, mode="reflect") / np.maximum(weight, 1e-12)
    return sub[m]


def _subsample(a, max_values: int = 2**24) -> np.ndarray:
    step = max(1, int(np.ceil((a.size / max_values) ** (1 / max(a.ndim, 1)))))
    return np.asarray(a[tuple(slice(None, None, step) for _ in range(a.ndim))])
