"""Simulate a measurement: apply the forward model to a clean stack and add noise.

Intensities stay in the data's own units (no rescaling), so ``noise_sigma`` is in those units too.
The noise model is :func:`napari_svi.noise.add_noise`: Poisson noise first (photon counting, the
data's 99.9th percentile mapped to ``poisson_peak`` photons), Gaussian read noise after.
"""

from __future__ import annotations

import numpy as np
import torch

from .noise import add_noise
from .operators import OperatorSpec
from .validation import check_stack, move_time_axis


def random_mask(shape: tuple[int, ...], missing_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask (True = observed) with ``missing_fraction`` of the pixels missing at random."""
    if not 0.0 <= missing_fraction < 1.0:
        raise ValueError(f"missing_fraction must be in [0, 1), got {missing_fraction}")
    rng = np.random.default_rng(seed)
    return rng.random(shape) >= missing_fraction


def degrade(
    data,
    operator: OperatorSpec,
    *,
    time_axis: int = 0,
    noise_sigma: float = 0.0,
    poisson_peak: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Apply ``operator`` to ``data`` and add noise.

    Parameters
    ----------
    data : array_like, shape (..., T, ..., Y, X)
        Clean stack with a time axis at ``time_axis``; other leading axes are processed one
        2-D + t stack at a time.
    operator : OperatorSpec
        Forward model (temporal PSF, spatial PSF, downsampling, mask).
    noise_sigma : float
        Standard deviation of additive Gaussian noise, in the data's units.
    poisson_peak : float, optional
        If given, Poisson noise with the data's 99.9th percentile corresponding to this many photons.
    seed : int
        Seed of the noise.

    Returns
    -------
    np.ndarray, float32
        The measurement, time axis where it was in ``data``; time and space sizes are those of
        ``operator.measurement_shape``. ``data`` is not modified.
    """
    arr = check_stack(data, time_axis=time_axis, name="data")
    if noise_sigma < 0 or not np.isfinite(noise_sigma):
        raise ValueError(f"noise_sigma must be a finite number >= 0, got {noise_sigma}")
    if poisson_peak is not None and not (np.isfinite(poisson_peak) and poisson_peak > 0):
        raise ValueError(f"poisson_peak must be a positive number of photons, got {poisson_peak}")
    stacks, restore_axes = move_time_axis(arr, time_axis)
    t, h, w = stacks.shape[1:]
    m_shape = operator.measurement_shape((t, h, w))
    operator.validate(m_shape)
    op = operator.build((t, 1, h, w), dtype=torch.float64)
    mask = operator.mask_array()
    mask = None if mask is None else mask != 0
    rng = np.random.default_rng(seed)
    out = np.empty((stacks.shape[0], *m_shape), dtype=np.float32)
    peak_level = float(np.percentile(arr, 99.9)) if poisson_peak is not None else 1.0
    for k in range(stacks.shape[0]):
        x = torch.from_numpy(np.asarray(stacks[k], dtype=np.float64))[:, None]
        y = add_noise(op.forward(x)[:, 0].numpy(), rng, noise_sigma=noise_sigma, poisson_peak=poisson_peak,
                      peak_level=peak_level)
        if mask is not None:
            y = y * np.broadcast_to(mask, y.shape)
        out[k] = y
    return restore_axes(out)
