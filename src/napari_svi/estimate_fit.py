"""The spectral model behind the blind PSF estimate (:mod:`napari_svi.estimate`): a likelihood per candidate.

A stack ``(T, H, W)`` with symmetric boundaries in time and space is diagonalised by the 3-D DCT-II
(the type-II DCT turns a convolution with a symmetric kernel and mirrored boundaries into a product;
Martucci 1994), so the measurement model ``y = h_t * h_s * x + n`` becomes, per coefficient,
``Y(f, k) = H_t(f) H_s(k) X(f, k) + N`` (an even box, half a frame off the grid, also mixes
neighbouring temporal frequencies: :func:`temporal_mixing`). Its power, averaged over rings of radial spatial frequency
``rho = |k|`` (cycles per pixel) at every temporal frequency ``f`` (cycles per frame), is modelled as

    E(f, rho) = H_t(f)^2 H_s(rho)^2 (P(f, rho) + w) + s^2,
    P(f, rho) = A rho^-(alpha + 1) m(f / rho)       (aliased in f, period 1),

- ``A rho^-alpha``: the scale-free spatial spectrum of natural (and microscopy) images;
- ``m(u)``: the distribution of speeds ``u`` (pixels per frame) that moves structure across pixels:
  motion at speed ``u`` puts spatial frequency ``rho`` at temporal frequency ``u rho``, whatever the
  motion (drift, crawling cells); ``m`` is free (log-linear between knots, smoothed), so the data
  choose it. A temporal blur acts at fixed ``f`` for every ``rho``, motion at ``f`` proportional to
  ``rho``: that difference is what tells a blur from slow motion;
- ``w``: white structure of the true stack (its own acquisition noise, blinking), blurred with it;
- ``s^2``: the measurement noise, started at the project's estimate and refined within a factor.

Each coefficient's power is exponentially distributed around ``E`` (Gaussian data), so a ring of
``n`` coefficients with mean power ``S`` contributes ``n (S / E + log E)`` to minus twice the log
likelihood; :class:`SpectralFit` minimises it over the nuisance parameters (L-BFGS with the
analytic gradient) for each candidate ``(H_t, H_s)`` and caches the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.fft import dctn
from scipy.optimize import minimize

#: Rings of radial spatial frequency in [0, 0.5] cycles per pixel.
RING_COUNT = 32
#: Candidate spatial Gaussians (pixels) of the blind estimate.
SPATIAL_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
#: Knots of the speed distribution ``m(u)``, log-spaced over ``SPEED_RANGE`` pixels per frame.
SPEED_KNOTS = 16
SPEED_RANGE = (0.02, 8.0)
#: Weight of the second-difference penalty on ``log m`` per 1000 coefficients.
SPEED_SMOOTHING = 1.0
#: The fitted noise variance stays within this factor (in log) of the project's estimate.
NOISE_LOG_RANGE = 1.5


@dataclass(frozen=True)
class SpectralTable:
    """Mean DCT power per (temporal frequency, ring) of a stack on the [0, 1] scale.

    ``power``: ``(T, R)``; ``count``: coefficients per ring ``(R,)``; ``rho``: ring centres (cycles per
    pixel); ``freq``: temporal frequencies ``k / 2T`` (cycles per frame); ``noise_var``: the
    measurement noise variance from :func:`napari_svi.noise.estimate_noise_sigma`.
    """

    power: np.ndarray
    count: np.ndarray
    rho: np.ndarray
    freq: np.ndarray
    noise_var: float

    @property
    def frames(self) -> int:
        return int(self.power.shape[0])


def spectral_table(y01: np.ndarray, noise_sigma: float, rings: int = RING_COUNT) -> SpectralTable:
    """The :class:`SpectralTable` of ``y01`` ``(T, H, W)`` (float, [0, 1] scale) with noise std ``noise_sigma``."""
    t, h, w = y01.shape
    coeffs = dctn(np.asarray(y01, dtype=np.float64) - float(np.mean(y01)), type=2, norm="ortho")
    rho = np.hypot(np.arange(h)[:, None] / (2 * h), np.arange(w)[None, :] / (2 * w))
    ring = np.floor(rho / 0.5 * rings).astype(np.int64)
    ring[0, 0] = rings  # the spatial mean: no scale to speak of
    keep = ring < rings  # the corners beyond 0.5 cycles per pixel are left out
    idx = ring[keep]
    count = np.bincount(idx, minlength=rings).astype(np.float64)
    power = np.stack([np.bincount(idx, (c * c)[keep], minlength=rings) for c in coeffs]) / np.maximum(count, 1)
    used = count > 0
    centres = (np.arange(rings) + 0.5) * 0.5 / rings
    return SpectralTable(power[:, used], count[used], centres[used], np.arange(t) / (2 * t), float(noise_sigma) ** 2)


def temporal_mixing(kernel: np.ndarray | None, frames: int) -> np.ndarray:
    """How a temporal blur moves power between DCT-II frequencies: ``M_ij = (D A D^T)_ij^2``, ``(T, T)``.

    ``A`` is the project's forward model in time (:func:`napari_svi.operators.temporal.temporal_matrix`,
    mirrored ends) and ``D`` the orthonormal DCT-II. For an odd (symmetric) kernel ``M`` is diagonal, the
    squared gains ``(sum_j h_j cos(pi k j / T))^2`` over its offsets ``j``. An even kernel sits half a frame off the frame grid (one
    frame more before a frame than after), so it also leaks power into neighbouring frequencies and
    fills in part of the zeros of its box: the expected power of a stack with independent coefficients of
    power ``P`` is ``M @ P``. Modelling even boxes by their magnitude response alone lost 4, 6 and 8
    frames to Gaussians (benchmarks/results/estimate, 2026-12-02: 10, 12 and 5 of 24 held-out cases).
    """
    if kernel is None:
        return np.eye(frames)
    from scipy.fft import dct

    from .operators.temporal import temporal_matrix

    a = temporal_matrix(np.asarray(kernel, dtype=np.float64), frames, "symmetric")
    mixed = dct(dct(a, type=2, axis=0, norm="ortho").T, type=2, axis=0, norm="ortho").T  # D A D^T
    return mixed * mixed


def spatial_gain2(sigma_px: float, rho: np.ndarray) -> np.ndarray:
    """Squared gain of a Gaussian spatial PSF of ``sigma_px`` pixels at radial frequency ``rho``."""
    return np.exp(-4.0 * math.pi**2 * sigma_px**2 * rho**2) if sigma_px > 0 else np.ones_like(rho)


def _interpolation(values: np.ndarray, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index, weight and extrapolation slope term of piecewise-linear interpolation on ``knots``."""
    x = np.clip((values - knots[0]) / (knots[1] - knots[0]), 0, knots.size - 1)
    i = np.minimum(np.floor(x).astype(np.int64), knots.size - 2)
    beyond = np.where(values > knots[-1], -4.0 * (values - knots[-1]), 0.0)  # m falls as u^-4 beyond the knots
    return i, x - i, beyond


class SpectralFit:
    """Minus twice the log likelihood of a :class:`SpectralTable` for candidate PSFs, nuisances fitted.

    Parameters ``theta``: ``log A``, ``alpha``, ``log m`` at :data:`SPEED_KNOTS` knots, ``log w`` and
    the log factor of the noise variance. ``nll(temporal, spatial)`` takes a candidate's temporal
    mixing ``(T, T)`` (:func:`temporal_mixing`) and squared spatial gains ``(R,)`` (:func:`spatial_gain2`).
    """

    def __init__(self, table: SpectralTable):
        self.table = table
        t, r = table.power.shape
        self.mean_power = table.power.ravel()
        self.weight = np.broadcast_to(table.count[None, :], (t, r)).ravel().astype(np.float64)
        knots = np.linspace(math.log(SPEED_RANGE[0]), math.log(SPEED_RANGE[1]), SPEED_KNOTS)
        mats, beyonds, kepts = [], [], []  # one block per alias of f: f, 1 - f, 1 + f
        for shift in (0.0, -1.0, 1.0):
            u = np.abs(table.freq[:, None] + shift) / table.rho[None, :]
            log_u = np.log(np.maximum(u, 1e-9)).ravel()
            i, wgt, beyond = _interpolation(log_u, knots)
            mat = np.zeros((t * r, 2 + SPEED_KNOTS))
            mat[:, 0] = 1.0
            mat[:, 1] = -np.broadcast_to(np.log(table.rho)[None, :], (t, r)).ravel()
            rows = np.arange(t * r)
            mat[rows, 2 + i] += 1 - wgt
            mat[rows, 3 + i] += wgt
            mats.append(mat)
            beyonds.append(beyond)
            kepts.append(np.ones(t * r) if shift == 0.0 else (log_u <= knots[-1] + 3).astype(np.float64))
        self.design, self.beyond, self.kept = np.concatenate(mats), np.concatenate(beyonds), np.concatenate(kepts)
        n_par = 4 + SPEED_KNOTS
        second = np.zeros((SPEED_KNOTS - 2, n_par))
        for k in range(SPEED_KNOTS - 2):
            second[k, 2 + k : 5 + k] = (1.0, -2.0, 1.0)
        self.penalty = second * math.sqrt(SPEED_SMOOTHING * self.weight.sum() / 1000.0)
        s2 = table.noise_var if table.noise_var > 0 else 1e-6
        self.log_s2 = math.log(s2)
        self.theta = np.zeros(n_par)
        self.theta[0] = math.log(max(float(self.mean_power.mean()), 1e-12))
        self.theta[1] = 1.0
        self.theta[-2] = self.log_s2
        self.bounds = [(None, None), (-2.0, 8.0), *[(None, None)] * SPEED_KNOTS,
                       (self.log_s2 - 20.0, self.log_s2 + 5.0), (-NOISE_LOG_RANGE, NOISE_LOG_RANGE)]
        self.best = math.inf

    def _value_and_gradient(self, theta: np.ndarray, mixing: np.ndarray, spatial2: np.ndarray) -> tuple[float, np.ndarray]:
        t, r = self.table.power.shape
        s2 = math.exp(self.log_s2 + theta[-1])
        white = math.exp(theta[-2])
        part = np.exp(np.clip(self.design @ theta[:-2] + self.beyond, -80.0, 80.0)) * self.kept
        prior = part.reshape(3, -1).sum(axis=0)
        expected = ((mixing @ (prior + white).reshape(t, r)) * spatial2[None, :]).ravel() + s2
        value = float(np.sum(self.weight * (self.mean_power / expected + np.log(expected))))
        resid = self.weight * (1.0 / expected - self.mean_power / expected**2)
        back = (mixing.T @ (resid.reshape(t, r) * spatial2[None, :])).ravel()  # d value / d (prior + white)
        grad = np.empty_like(theta)
        grad[:-2] = self.design.T @ (np.tile(back, 3) * part)
        grad[-2] = float(np.sum(back)) * white
        grad[-1] = float(np.sum(resid)) * s2
        smooth = self.penalty @ theta
        return value + float(smooth @ smooth), grad + 2.0 * self.penalty.T @ smooth

    def nll(self, mixing: np.ndarray, spatial2: np.ndarray) -> float:
        """The minimised objective for a temporal mixing ``(T, T)`` and squared spatial gains ``(R,)``;
        warm-started at the best so far."""
        lo = np.array([b[0] if b[0] is not None else -np.inf for b in self.bounds])
        hi = np.array([b[1] if b[1] is not None else np.inf for b in self.bounds])
        res = minimize(self._value_and_gradient, np.clip(self.theta, lo, hi), args=(np.asarray(mixing, dtype=np.float64), np.ravel(spatial2)), jac=True,
                       method="L-BFGS-B", bounds=self.bounds, options={"maxiter": 500, "ftol": 1e-7})
        if res.fun < self.best:
            self.best, self.theta = float(res.fun), res.x
        return float(res.fun)

    def noise_factor(self) -> float:
        """Fitted noise std over the starting estimate, at the best candidate so far."""
        return math.exp(self.theta[-1] / 2.0)


def pooled_table(tables: list[SpectralTable]) -> SpectralTable:
    """One table from several stacks of the same shape: coefficient-weighted mean power."""
    count = sum(t.count for t in tables)
    power = sum(t.power * t.count[None, :] for t in tables) / count[None, :]
    return SpectralTable(power, count, tables[0].rho, tables[0].freq, float(np.mean([t.noise_var for t in tables])))
