"""Image-quality metrics of a restored stack against the ground truth.

Every metric is computed on one intensity scale fixed by the ground truth: its 0.1 and 99.9
percentiles (:func:`napari_svi.intensity.percentile_scale`) map to 0 and 1, and the data range of
PSNR and SSIM is 1 on that scale. Estimates are *not* clipped to [0, 1] before the comparison, so
overshoots are penalised as they are.
"""

from __future__ import annotations

import numpy as np

from ..intensity import DEFAULT_PERCENTILES, IntensityScale, percentile_scale

#: Data range of PSNR and SSIM on the ground truth's [0, 1] scale.
DATA_RANGE = 1.0


def truth_scale(truth: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> IntensityScale:
    """The [0, 1] scale every metric uses: the ground truth's percentiles (default 0.1, 99.9)."""
    return percentile_scale(truth, percentiles, name="ground truth")


def psnr(truth01: np.ndarray, estimate01: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over the whole stack, ``10 log10(1 / MSE)`` (data range 1).

    Both arrays ``(T, H, W)`` on the ground truth's [0, 1] scale; ``inf`` for identical stacks.
    """
    mse = float(np.mean((np.asarray(truth01, np.float64) - np.asarray(estimate01, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(DATA_RANGE**2 / mse))


def ssim(truth01: np.ndarray, estimate01: np.ndarray) -> float:
    """Mean over frames of the 2-D structural similarity (Wang et al. 2004), data range 1.

    Gaussian window with sigma 1.5 px, population covariances (the settings of Wang et al., via
    ``skimage.metrics.structural_similarity``); both arrays ``(T, H, W)`` on the [0, 1] scale.
    """
    from skimage.metrics import structural_similarity

    t = np.asarray(truth01, np.float64)
    e = np.asarray(estimate01, np.float64)
    return float(np.mean([
        structural_similarity(a, b, data_range=DATA_RANGE, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for a, b in zip(t, e, strict=True)
    ]))


def temporal_error(truth01: np.ndarray, estimate01: np.ndarray) -> float:
    """Temporal consistency: RMSE of the frame-to-frame differences ``x[t+1] - x[t]`` versus the truth's.

    Flicker or frames that lag their neighbours raise it even when every frame looks sharp;
    0 for a stack whose changes over time match the truth's exactly (a constant offset is ignored).
    """
    dt = np.diff(np.asarray(truth01, np.float64), axis=0)
    de = np.diff(np.asarray(estimate01, np.float64), axis=0)
    if dt.size == 0:
        return 0.0
    return float(np.sqrt(np.mean((de - dt) ** 2)))


def stack_metrics(truth: np.ndarray, estimate: np.ndarray, scale: IntensityScale | None = None) -> dict[str, float]:
    """``{"psnr", "ssim", "temporal_error"}`` of ``estimate`` against ``truth``, both ``(T, H, W)`` in data units.

    ``scale`` defaults to :func:`truth_scale` of ``truth``.
    """
    truth = np.asarray(truth)
    estimate = np.asarray(estimate)
    if truth.shape != estimate.shape:
        raise ValueError(f"estimate has shape {estimate.shape}, the ground truth {truth.shape}")
    if not np.all(np.isfinite(estimate)):
        raise ValueError("estimate contains NaN or infinite values")
    scale = scale or truth_scale(truth)
    t01, e01 = scale.to_unit(truth), scale.to_unit(estimate)
    return {"psnr": psnr(t01, e01), "ssim": ssim(t01, e01), "temporal_error": temporal_error(t01, e01)}
