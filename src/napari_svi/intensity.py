"""Intensity normalisation between a microscope's units and the [0, 1] scale of the solver.

Microscopy data come as uint8/uint16/float with arbitrary offset and gain. Each stack is mapped
to [0, 1] by two percentiles (default 0.1 and 99.9), restored, and mapped back with the same two
numbers, so the result is in the input's units. Values outside the percentiles are kept (not
clipped): real signal brighter than the 99.9th percentile must survive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_PERCENTILES = (0.1, 99.9)


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


def percentile_scale(a, percentiles: tuple[float, float] = DEFAULT_PERCENTILES, name: str = "data") -> IntensityScale:
    """Percentile-based :class:`IntensityScale` of ``a``; raises ``ValueError`` on constant data.

    ``a`` may be a NumPy or dask array; for a dask array only the percentiles are computed lazily
    from a strided subsample so the whole stack is never held in memory twice.
    """
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    arr = np.asarray(a) if not hasattr(a, "compute") else _subsample(a)
    low, high = np.percentile(arr.astype(np.float64, copy=False), [lo_p, hi_p])
    if not high > low:
        low, high = float(np.min(arr)), float(np.max(arr))
    if not high > low:
        raise ValueError(f"{name} is constant (every value is {low:g}); there is nothing to restore")
    return IntensityScale(float(low), float(high))


def _subsample(a, max_values: int = 2**24) -> np.ndarray:
    step = max(1, int(np.ceil((a.size / max_values) ** (1 / max(a.ndim, 1)))))
    return np.asarray(a[tuple(slice(None, None, step) for _ in range(a.ndim))])
