"""The noise model in one place: simulation, estimation, the text a user types, the per-stack level.

Measurements are ``y = N(A x)``: Poisson photon noise (the data's 99.9th percentile mapped to
``poisson_peak`` photons) followed by Gaussian read noise (:func:`add_noise`, used by
:func:`napari_svi.degrade.degrade`). A restore needs the noise level on the solver's [0, 1]
scale: given in the data's units, or estimated from the measurement (:func:`estimate_noise_sigma`,
observed pixels only); :func:`stack_noise_sigma` applies that choice to one 2-D + t stack. The
data-consistency weight that follows from the level is the gamma rule :class:`ResidualGamma`
(``gamma="auto"``: :func:`auto_gamma`), which the sampler applies at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Measured frames the automatic noise estimate reads at most (evenly spaced).
NOISE_ESTIMATE_FRAMES = 32


def add_noise(y: np.ndarray, rng: np.random.Generator, *, noise_sigma: float = 0.0,
              poisson_peak: float | None = None, peak_level: float = 1.0) -> np.ndarray:
    """Poisson noise (``peak_level`` in data units counts ``poisson_peak`` photons), then Gaussian ``noise_sigma``.

    ``y`` is a noise-free measurement in the data's units (float64 recommended); returns a new array.
    """
    if poisson_peak is not None:
        if peak_level <= 0:
            raise ValueError("poisson_peak needs data with a positive 99.9th percentile")
        y = rng.poisson(np.clip(y, 0, None) * (poisson_peak / peak_level)) * (peak_level / poisson_peak)
    if noise_sigma > 0:
        y = y + rng.normal(0.0, noise_sigma, size=np.shape(y))
    return y


def check_noise_sigma(value) -> None:
    """``noise_sigma`` of a restore: ``"auto"``, ``None`` (noiseless) or a finite number >= 0."""
    if not (value is None or value == "auto" or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )):
        raise ValueError(f"noise_sigma must be 'auto', None (noiseless) or a number >= 0, got {value!r}")


def parse_noise_sigma(text) -> float | str | None:
    """What a user types for the noise level (command line and widget): ``"auto"`` (or empty),
    ``"none"``/``"noiseless"``/``0`` (noiseless: ``None``) or a number > 0 in the data's units."""
    t = str(text).strip().lower()
    if t in ("auto", ""):
        return "auto"
    if t in ("none", "noiseless"):
        return None
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"noise level: type 'auto', 'none' or a number in the data's intensity units, not {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"noise level: must be 'auto', 'none' or a number >= 0, not {text!r}")
    return None if value == 0 else value


def _binned_variances(r: np.ndarray, level: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Median brightness and robust (MAD) variance of ``r`` in equal-count bins of ``level`` (>= 64 entries each)."""
    bins = max(1, min(bins, r.size // 64))
    parts = np.array_split(np.argsort(level, kind="stable"), bins)
    variances = [(1.4826 * np.median(np.abs(r[p] - np.median(r[p])))) ** 2 for p in parts]
    return np.array([np.median(level[p]) for p in parts]), np.array(variances)


def _haar_diagonal(y: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The finest Haar wavelet's diagonal band ``(a - b - c + d) / 2`` of every 2 x 2 block whose four
    entries are observed (``m``), and the blocks' mean brightness (uncorrelated with it for white noise)."""
    a, b, c, d = y[..., :-1, :-1], y[..., :-1, 1:], y[..., 1:, :-1], y[..., 1:, 1:]
    ok = m[..., :-1, :-1] & m[..., :-1, 1:] & m[..., 1:, :-1] & m[..., 1:, 1:]
    return ((a - b - c + d) / 2)[ok], ((a + b + c + d) / 4)[ok]


def _time_difference(y: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The second difference along time ``(y[k-1] + y[k+1]) / 2 - y[k]`` (noise gain ``sqrt(1.5)``) where the three
    frames are observed (``m``), and their mean brightness (uncorrelated with it for white noise; the two
    neighbours' mean is not, and biases the bins low)."""
    ok = m[1:-1] & m[:-2] & m[2:]
    return ((y[:-2] + y[2:]) / 2 - y[1:-1])[ok], ((y[:-2] + y[1:-1] + y[2:]) / 3)[ok]


def _binned_sigma(r: np.ndarray, level: np.ndarray, bins: int) -> float:
    """Root of the pixel-weighted mean of robust (MAD) variances of ``r`` in equal-count brightness bins."""
    return float(math.sqrt(np.mean(_binned_variances(r, level, bins)[1])))


def estimate_noise_sigma(y01: np.ndarray, mask: np.ndarray | None = None, bins: int = 16) -> float:
    """Root-mean-square noise standard deviation of a measurement ``(T, H, W)`` on the [0, 1] scale.

    Two residuals with unit noise gain, each from entries that are all observed:

    - spatial: the diagonal detail of every 2 x 2 block, ``(a - b - c + d) / 2`` (the finest Haar
      wavelet's HH band), zero on flat areas, ramps and straight rows or columns; it needs 4
      observed pixels (with half the pixels missing, 1 block in 16 instead of 1 pixel in 500 for
      the 3 x 3 neighbourhood of a Laplacian, whose few survivors are mostly dark background);
    - temporal: ``(y_{k-1} + y_{k+1}) / 2 - y_k`` scaled by ``1 / sqrt(1.5)``, the second difference
      along time, near zero where the frames change slowly (temporal blur, slow motion), binned by
      the three frames' mean. (Binned by the two neighbours' mean, which is correlated with it, a
      flat region read 0.82 of its noise, and the smaller estimate below came out low.) In sharp,
      undersampled frames (2x or 4x downsampled) every spatial residual holds structure; the
      temporal one does not.

    Microscopy noise grows with the signal (Poisson), so each residual's entries are grouped into
    ``bins`` equal-count bins of local brightness (the mean of the same entries, uncorrelated with
    the residual for white noise), each bin's sigma is a robust MAD estimate (edges and texture
    that are a minority of the bin do not move it), and the residual's estimate is the root of
    the bins' mean variance: the noise energy per measurement that the data-consistency rule needs
    (a single median would measure the dark background's noise only). Structure only adds to a
    residual, so the smaller of the two estimates is returned. On the realistic suite's 40
    degraded clips (128 px, 10 frames; ``benchmarks/noise_estimate.py``) it is within 0.98-1.07 of the
    true noise except for frame interpolation (interp2: 1.04-1.17); binned by the neighbours' mean it
    was 0.93-1.07, low at 50 photons; the 3 x 3 Laplacian before that was off by 0.53 (half the
    pixels missing) to 2.9 (4x downsampled).
    """
    y01 = np.asarray(y01, dtype=np.float64)
    if y01.ndim != 3 or min(y01.shape[-2:]) < 8:
        raise ValueError("noise_sigma='auto' needs frames of at least 8 x 8 pixels; give noise_sigma as a number")
    m = np.ones(y01.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask) != 0, y01.shape)
    r, level = _haar_diagonal(y01, m)
    if r.size < 16:
        raise ValueError("noise_sigma='auto' needs more observed pixels; give noise_sigma as a number")
    sigma = _binned_sigma(r, level, bins)
    r_t, level_t = _time_difference(y01, m)
    if r_t.size >= 16:
        sigma = min(sigma, _binned_sigma(r_t, level_t, bins) / math.sqrt(1.5))
    return sigma


def relative_variance(y01, seen, bins: int = 16):
    """Each measured entry's noise variance relative to the mean over the measured entries, ``(T, C, H, W)``.

    Microscopy noise grows with the signal (Poisson), so a region of bright structure holds more of the
    noise than its share of the entries. The two residuals of :func:`estimate_noise_sigma` (the finest
    Haar wavelet's diagonal band of every 2 x 2 block; the second difference along time, here binned by
    the mean of its three frames, which is uncorrelated with it, where the two neighbours' mean biases the
    outer bins low by up to 1.5x) are grouped into ``bins`` equal-count bins of brightness, each bin's
    variance a robust (MAD) estimate that grows with brightness (the bins' running maximum). Every entry
    gets the smaller of the two at its own brightness (interpolated between the bins' median brightness;
    texture only adds to a residual), scaled to a mean of one. Texture that both residuals still hold in
    the brightest bins reads as noise there (held-out nuclei crop with Gaussian noise,
    benchmarks/tiles_vs_whole.py: 35.44 dB, against 35.36 dB with the spatial band alone and 35.48 dB
    with the same variance everywhere); a line through the bins that counted as flat below a rise of 3
    lost 1.04 dB on the suite's dim nuclei (benchmarks/results/tiles_vs_whole/README.md, "A gamma per
    window"). All ones where fewer than 128 blocks are measured. ``y01`` and ``seen`` (bool) are torch
    tensors of one shape.
    """
    import torch

    y = y01.detach().to("cpu", torch.float64).numpy()
    m = seen.detach().to("cpu").numpy().astype(bool)
    r, level = _haar_diagonal(y, m)
    if r.size < 128:
        return seen.to(y01.dtype)
    profiles = [_binned_variances(r, level, bins)]
    r_t, level_t = _time_difference(y, m)  # binned by the three frames' mean (uncorrelated with it)
    if r_t.size >= 128:
        profiles.append(_binned_variances(r_t / math.sqrt(1.5), level_t, bins))
    out = np.min([np.interp(y, centres, np.maximum.accumulate(var)) for centres, var in profiles], axis=0)
    mean = float(out[m].mean())
    out = out / mean if mean > 0 else np.ones_like(y)
    return torch.as_tensor(np.where(m, out, 0.0), dtype=y01.dtype, device=y01.device)


def stack_noise_sigma(stack, scale, noise_sigma, mask: np.ndarray | None = None) -> float | None:
    """The noise level of one ``(T_m, H_m, W_m)`` stack on the [0, 1] scale of ``scale``.

    ``noise_sigma``: ``"auto"`` estimates it from at most :data:`NOISE_ESTIMATE_FRAMES` evenly
    spaced measured frames (observed pixels of ``mask`` only); a number is in the data's units;
    ``None`` is noiseless.
    """
    from .lazy import read_frames

    if noise_sigma is None:
        return None
    if noise_sigma != "auto":
        return scale.sigma_to_unit(noise_sigma)
    t_m = stack.shape[0]
    frames = np.unique(np.linspace(0, t_m - 1, min(t_m, NOISE_ESTIMATE_FRAMES)).round().astype(np.int64))
    frames_mask = None if mask is None else (mask[frames] if mask.ndim == 3 else mask)
    return estimate_noise_sigma(scale.to_unit(read_frames(stack, frames)), frames_mask)


@dataclass(frozen=True)
class ResidualGamma:
    """Per-step data-consistency weight from the noise level and the current data residual.

    The proximal step ``argmin 1/2 ||x - x0||^2 + gamma/2 ||y - A x||^2`` is the MAP estimate when
    the denoised ``x0`` has white error of variance ``s^2`` per pixel (the isotropic model the step
    itself assumes) and the data white noise ``sigma^2``: ``gamma = s^2 / sigma^2``. ``s^2`` changes
    with the step (large early, small late) and with the content (a denoiser is far more accurate on
    dark background than on textured nuclei), so it is estimated at every step from the residual of
    the measurements under the same model, ``E ||y - A x0||^2 = s^2 tr(A^T A) + m sigma^2`` over the
    ``m`` measured entries: ``gamma = scale * (||y - A x0||^2 - m sigma^2) / (sigma^2 tr(A^T A))``,
    kept in ``[low, high]``. ``sigma`` is on the [0, 1] scale of ``y``.
    """

    noise_sigma: float
    scale: float = 1.0
    low: float = 0.05
    high: float = 1000.0
    #: Edge in true pixels of the windows (overlapping by half) that each get their own gamma (``None``:
    #: one for the whole piece). A denoiser's error differs between dark background and textured
    #: structure, so one global weight is too strong in one place and too weak in another.
    region: int | None = None

    def __post_init__(self) -> None:
        if not self.noise_sigma > 0:
            raise ValueError(f"noise_sigma must be positive for the residual gamma rule, got {self.noise_sigma}")
        if self.region is not None:
            from .validation import check_positive_int

            check_positive_int(self.region, "region (pixels)", minimum=4)

    def __call__(self, residual_energy: float, measured: float, trace: float) -> float:
        """``residual_energy = ||y - A x0||^2``, ``measured = m``, ``trace = tr(A^T A)``."""
        var = self.noise_sigma**2
        s2 = max(residual_energy - measured * var, 0.0) / max(trace, 1e-12)
        return float(min(max(self.scale * s2 / var, self.low), self.high))

    def regional(self, residual_energy, measured, trace, noise_share=None):
        """The same rule per region: tensors of region sums -> a tensor of gammas (same shape).

        ``noise_share``: the region sums of :func:`relative_variance` (``None``: the same noise
        variance everywhere, ``measured``); a region's noise variance is ``sigma^2`` times its mean
        relative variance, so bright regions under Poisson noise are not read as badly denoised."""
        var = self.noise_sigma**2
        share = measured if noise_share is None else noise_share
        s2 = (residual_energy - share * var).clamp_min(0.0) / trace.clamp_min(1e-12)
        local = var * (share / measured.clamp_min(1e-12)).clamp_min(1e-6)
        return (self.scale * s2 / local).clamp(self.low, self.high)


#: ``eta="auto"``: DDIM stochasticity with noisy data, and without (the paper's 0.15). With noise, every
#: data-consistency step also pulls some measurement noise into the estimate; a nearly deterministic
#: DDIM (small eta) carries it along to the end, while fresh noise at every step lets the prior remove it
#: (realistic suite, benchmarks/results/suite: eta 1 against 0.15 is +1.1 dB on average over 40 cases,
#: up to +3.7 dB, and down to -1.0 dB in 6 of them, mostly on nuclei).
AUTO_ETA_NOISY = 1.0
AUTO_ETA_NOISELESS = 0.15


def auto_eta(noise_sigma: float | None) -> float:
    """``eta="auto"``: :data:`AUTO_ETA_NOISY` when the data are noisy, :data:`AUTO_ETA_NOISELESS` when not."""
    return AUTO_ETA_NOISY if noise_sigma else AUTO_ETA_NOISELESS


#: Window edge (true pixels) of ``gamma="auto"``: one gamma per window, the windows overlapping by half
#: (``"piece"``: one gamma per piece). Square regions that did not overlap and one noise variance for all
#: of them lost on the suite's actin clip (96 px, box 5: 28.37 dB against 28.69 dB with one gamma); windows
#: overlapping by half, with each window's noise variance from its brightness, are the default since
#: 2026-12-06 (benchmarks/results/tiles_vs_whole/README.md, "A gamma per window").
GAMMA_REGION = 64


def auto_gamma(noise_sigma: float | None, region: int | None = None) -> float | ResidualGamma:
    """The noiseless normal equations (``inf``) without noise, else :class:`ResidualGamma`, one for the whole
    piece (``gamma="piece"``) or, with ``region`` (``gamma="auto"``), one per window of ``region`` pixels."""
    return math.inf if not noise_sigma else ResidualGamma(float(noise_sigma), region=region)


def gamma_record(gamma: float | ResidualGamma) -> float | str | dict:
    """A JSON-friendly description of a gamma setting for the output's record."""
    if isinstance(gamma, ResidualGamma):
        return {"rule": "residual", "noise_sigma": gamma.noise_sigma, "scale": gamma.scale,
                "low": gamma.low, "high": gamma.high, "region_px": gamma.region}
    return float(gamma) if math.isfinite(gamma) else "inf"
