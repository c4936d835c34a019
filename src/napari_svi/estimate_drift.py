"""A second opinion on the temporal PSF when the whole field drifts: a rigid-drift model of the frames.

The spectral model (:mod:`napari_svi.estimate_fit`) keeps only the power of each spatio-temporal
frequency. When a scene translates slowly (stage drift, a still that is panned), a temporal blur
hides in the *phases*: frame ``t`` is a weighted sum of shifted copies of one image,

    y_t = crop( sum_j A_tj shift(S, d_j) ) + n,

``A`` the temporal forward model of a candidate PSF (mirrored ends, as ``restore`` uses it), ``d_j``
the drift of frame ``j`` (pixels) and ``S`` one image on a canvas wider than the crop (a spatial blur
is part of ``S``). For a fixed drift ``S`` is a least-squares solve (conjugate gradient, shifts as
Fourier phase ramps); the drift starts from a chained registration of consecutive frames and is
refined by Gauss-Newton steps, coarse to fine, with a penalty on its second differences (a smooth
path: an unconstrained one absorbs what the model leaves out). The residual of each candidate gives
its profile likelihood (:class:`MotionFit`). :func:`napari_svi.estimate.estimate_blur` asks this
model only when the field drifts by more than :data:`MIN_DRIFT_PX` and uses its answer only where the
model explains the data (residual near the noise) and is decisive (``DecisionRules.motion_*``).

Measured on the calibration clips and then the held-out ones: ``benchmarks/estimate_blind.py``,
``benchmarks/results/estimate/``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

#: The model is fitted on the centre ``MOTION_SIZE`` pixels of each frame.
MOTION_SIZE = 48
#: Largest shift between consecutive frames that the registration looks for (pixels).
MAX_STEP_PX = 4
#: Drift (pixels, largest distance of a frame from the mean position) below which the model is not
#: asked: a still scene shows a temporal blur only in its noise.
MIN_DRIFT_PX = 1.0
#: Largest drift the canvas allows (pixels from the mean position); more is not a drift we fit.
MAX_DRIFT_PX = 24.0
#: Conjugate-gradient iterations per image solve, Gauss-Newton rounds per level, damping of the image.
CG_ITERS, ROUNDS, DAMPING = 15, 5, 1e-3
#: Gaussian low-pass (pixels) of the coarse-to-fine levels of the drift fit.
LOWPASS_PX = (2.0, 0.0)
#: Weight of the smooth-path penalty, relative to the mean Gauss-Newton curvature of the data term.
SMOOTH = 0.01
#: Temporal Gaussians (frames) the model compares; the best is refined by a parabola in log sigma.
MOTION_SIGMAS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8)


@dataclass
class MotionFit:
    """What :func:`fit_motion` returns.

    ``nll``: per candidate, minus twice the profile log likelihood per 1000 data values, relative to
    the best (0); ``residual_ratio``: the best fit's residual std over the noise std (about 1 when a
    rigid drift explains the data); ``static_ratio``: the same for a still scene (the frames' std about
    their temporal mean over the noise std: how much they change); ``drift_px``: the largest distance of
    a frame from the mean position.
    """

    nll: dict
    residual_ratio: float
    static_ratio: float
    drift_px: float
    seconds: float

    def to_dict(self) -> dict:
        return {"nll": {k: round(v, 4) for k, v in self.nll.items()}, "residual_ratio": round(self.residual_ratio, 4),
                "static_ratio": round(self.static_ratio, 4),
                "drift_px": round(self.drift_px, 3), "seconds": round(self.seconds, 3)}


def motion_candidates(box_frames: int | None) -> list[str]:
    """The candidates compared: none, the spectral model's best box (it finds box lengths well) and
    the Gaussians of :data:`MOTION_SIGMAS`."""
    boxes = [] if box_frames is None else [f"uniform:{int(box_frames)}"]
    return ["none", *boxes, *(f"gaussian:{s:g}" for s in MOTION_SIGMAS)]


def best_gaussian(nll: dict) -> tuple[float, float] | None:
    """``(sigma, nll)`` of the best Gaussian: the grid's best, refined by the parabola through it and its
    neighbours in log sigma (kept within them)."""
    grid = sorted((float(c.split(":")[1]), v) for c, v in nll.items() if c.startswith("gaussian"))
    if not grid:
        return None
    i = min(range(len(grid)), key=lambda k: grid[k][1])
    if 0 < i < len(grid) - 1:
        (s0, v0), (s1, v1), (s2, v2) = grid[i - 1 : i + 2]
        x0, x1, x2 = math.log(s0), math.log(s1), math.log(s2)
        den = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (v1 - v0) + x1 * (v0 - v2) + x0 * (v2 - v1)) / den
        b = (x2 * x2 * (v0 - v1) + x1 * x1 * (v2 - v0) + x0 * x0 * (v1 - v2)) / den
        if a > 0:
            x = min(max(-b / (2 * a), x0), x2)
            c = v1 - a * x1 * x1 - b * x1
            return math.exp(x), min(a * x * x + b * x + c, v1)
    return grid[i]


def register_chain(y: np.ndarray, max_step: int = MAX_STEP_PX) -> np.ndarray:
    """Drift ``(T, 2)`` of frames ``y`` ``(T, H, W)``, from frame 0: consecutive frames registered by a
    windowed, phase-normalised, low-passed cross-correlation (peak within ``max_step`` pixels, parabolic
    sub-pixel refinement), chained. Convention: frame ``t`` shows the scene at ``x + d_t``."""
    t, h, w = y.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    spectra = sfft.fft2((y - y.mean(axis=(1, 2), keepdims=True)) * window)
    lowpass = np.exp(-(sfft.fftfreq(h)[:, None] ** 2 + sfft.fftfreq(w)[None, :] ** 2) / (2 * 0.05**2))
    steps = [np.zeros(2)]
    r = max_step
    for k in range(1, t):
        cross = spectra[k - 1] * np.conj(spectra[k])
        corr = sfft.fftshift(sfft.ifft2(cross / np.maximum(np.abs(cross), 1e-12) * lowpass).real)
        near = corr[h // 2 - r : h // 2 + r + 1, w // 2 - r : w // 2 + r + 1]
        iy, ix = np.unravel_index(int(np.argmax(near)), near.shape)
        dy = _parabola_peak(near[iy - 1 : iy + 2, ix]) if 0 < iy < 2 * r else 0.0
        dx = _parabola_peak(near[iy, ix - 1 : ix + 2]) if 0 < ix < 2 * r else 0.0
        steps.append(np.array([iy - r + dy, ix - r + dx]))
    return np.cumsum(steps, axis=0)


def _parabola_peak(three: np.ndarray) -> float:
    """Offset in (-0.5, 0.5) of the vertex of the parabola through three samples around a maximum."""
    m, p, q = (float(v) for v in three)
    den = m - 2 * p + q
    return 0.0 if den >= 0 else float(np.clip(0.5 * (m - q) / den, -0.5, 0.5))


class _DriftModel:
    """``y_t = crop(sum_j A_tj shift(S, d_j))`` on an odd ``size`` canvas (real FFTs, no Nyquist bin)."""

    def __init__(self, mix: np.ndarray, size: int, n: int, margin: int, lowpass_px: float, smooth: float):
        self.mix, self.size, self.n, self.m = mix, size, n, margin
        self.smooth, self.smooth_weight = smooth, None
        self.fy = sfft.fftfreq(size)[:, None] * (2 * math.pi)
        self.fx = sfft.rfftfreq(size)[None, :] * (2 * math.pi)
        self.lowpass = np.exp(-0.5 * lowpass_px**2 * (self.fy**2 + self.fx**2))  # the data's Gaussian filter
        self.second = np.diff(np.eye(mix.shape[0]), n=2, axis=0)

    def set_path(self, path: np.ndarray):
        self.path = path
        self.ramps = np.exp(1j * (self.fy[None] * path[:, 0, None, None] + self.fx[None] * path[:, 1, None, None]))
        self.gain = np.einsum("tj,jab->tab", self.mix, self.ramps) * self.lowpass[None]

    def _crop(self, canvas):
        m, n = self.m, self.n
        return canvas[..., m : m + n, m : m + n]

    def _real(self, spectrum):
        return sfft.irfft2(spectrum, s=(self.size, self.size))

    def forward(self, image: np.ndarray) -> np.ndarray:
        return self._crop(self._real(self.gain * sfft.rfft2(image)[None]))

    def adjoint(self, frames: np.ndarray) -> np.ndarray:
        canvas = np.zeros((frames.shape[0], self.size, self.size))
        self._crop(canvas)[...] = frames
        return self._real((np.conj(self.gain) * sfft.rfft2(canvas)).sum(axis=0))

    def solve_image(self, y: np.ndarray, image: np.ndarray, iters: int) -> np.ndarray:
        """Conjugate gradient on ``(A^T A + DAMPING) S = A^T y`` from ``image``."""
        r = self.adjoint(y) - self.adjoint(self.forward(image)) - DAMPING * image
        p, rr = r.copy(), float((r * r).sum())
        for _ in range(iters):
            q = self.adjoint(self.forward(p)) + DAMPING * p
            alpha = rr / max(float((p * q).sum()), 1e-300)
            image = image + alpha * p
            r = r - alpha * q
            rr_new = float((r * r).sum())
            p, rr = r + (rr_new / max(rr, 1e-300)) * p, rr_new
        return image

    def path_step(self, image: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """Gauss-Newton step of the drift ``(T, 2)`` for ``residual = forward(image) - y``."""
        spectrum = sfft.rfft2(image)
        t = self.path.shape[0]
        g = np.stack([self._crop(self._real(1j * f * self.lowpass * self.ramps * spectrum[None])) for f in (self.fy, self.fx)],
                     axis=1).reshape(2 * t, -1)  # d(shift(S, d_j)) / d(d_j, axis), cropped
        mix2 = np.repeat(self.mix, 2, axis=1)  # (T, 2T): frame t's weight of each drift coordinate
        jtj = (mix2.T @ mix2) * (g @ g.T)  # sum over frames and pixels, factorised
        jtr = (mix2 * (residual.reshape(t, -1) @ g.T)).sum(axis=0)
        jtj += 1e-6 * np.trace(jtj) / jtj.shape[0] * np.eye(jtj.shape[0])
        if self.smooth > 0:  # a smooth drift: a penalty on its second differences, weighed against the data
            self.smooth_weight = self.smooth * float(np.trace(jtj)) / jtj.shape[0]
            k = np.kron(self.second.T @ self.second, np.eye(2))
            jtj = jtj + self.smooth_weight * k
            jtr = jtr + self.smooth_weight * k @ self.path.reshape(-1)
        return -np.linalg.solve(jtj, jtr).reshape(t, 2)

    def penalty(self, path: np.ndarray) -> float:
        """The smoothness penalty of ``path`` at the weight of the last step (0 without smoothing)."""
        if self.smooth <= 0 or self.smooth_weight is None:
            return 0.0
        return self.smooth_weight * float(np.square(self.second @ path).sum())


def _fit_one(mix: np.ndarray, data: dict, path: np.ndarray, size: int, n: int, margin: int, smooth: float,
             rounds: int) -> float:
    """Residual sum of squares of one candidate after the coarse-to-fine drift fit (penalty included)."""
    image, loss = np.zeros((size, size)), math.inf
    for level, crop in data.items():
        model = _DriftModel(mix, size, n, margin, level, smooth)
        model.set_path(path)
        image = model.solve_image(crop, image, CG_ITERS * 4)
        loss = float(((model.forward(image) - crop) ** 2).sum())
        for _ in range(rounds):
            fitted = model.forward(image) - crop
            step = model.path_step(image, fitted)
            loss = float((fitted**2).sum()) + model.penalty(path)  # the penalty's weight is set by the step
            for _half in range(6):
                model.set_path(path + step)
                trial_image = model.solve_image(crop, image, CG_ITERS)
                trial = float(((model.forward(trial_image) - crop) ** 2).sum()) + model.penalty(path + step)
                if trial < loss:
                    path, image, loss = path + step, trial_image, trial
                    break
                step = step / 2
            else:
                break
    return loss


def fit_motion(y01: np.ndarray, candidates: list[str], noise_sigma: float, *, smooth: float = SMOOTH,
               path: np.ndarray | None = None) -> MotionFit | None:
    """Fit the rigid-drift model for each temporal candidate (``"none"``, ``"uniform:K"``, ``"gaussian:S"``).

    ``y01``: the measurement ``(T, H, W)`` on the [0, 1] scale; ``noise_sigma``: its noise std there.
    ``None`` when the registered drift is under :data:`MIN_DRIFT_PX` or over :data:`MAX_DRIFT_PX`.
    ``path`` ``(T, 2)``: use this drift as it is, no fit (what the data could tell with the true drift).
    """
    from scipy import ndimage

    from .operators.temporal import temporal_matrix
    from .psf import temporal_kernel

    start = time.perf_counter()
    t, h, w = y01.shape
    n = min(MOTION_SIZE, h, w)
    y0, x0 = (h - n) // 2, (w - n) // 2
    y01 = np.asarray(y01, dtype=np.float64)
    if path is None:
        path0 = register_chain(y01[:, max(0, y0 - n // 2) : y0 + n + n // 2, max(0, x0 - n // 2) : x0 + n + n // 2])
    else:
        path0 = np.asarray(path, dtype=np.float64)
    path0 = path0 - path0.mean(axis=0)
    drift = float(np.abs(path0).max())
    if drift < MIN_DRIFT_PX or drift > MAX_DRIFT_PX:
        return None
    margin = int(math.ceil(drift)) + 4
    size = (n + 2 * margin) | 1  # odd: every frequency has its mirror, no Nyquist bin
    levels = (0.0,) if path is not None else LOWPASS_PX
    data = {}
    for s in levels:  # coarse to fine: the drift is refined on low-passed data first (a wider basin)
        v = (ndimage.gaussian_filter(y01, (0, s, s)) if s > 0 else y01)[:, y0 : y0 + n, x0 : x0 + n]
        data[s] = v - float(v.mean())
    residuals = {}
    for cand in candidates:
        mix = np.eye(t) if cand == "none" else temporal_matrix(temporal_kernel(cand), t, "symmetric")
        residuals[cand] = _fit_one(mix, data, path0.copy(), size, n, margin, smooth, 0 if path is not None else ROUNDS)
    least = min(residuals.values())
    nll = {c: 1000.0 * math.log(r / least) for c, r in residuals.items()}
    noise = max(float(noise_sigma), 1e-12)
    ratio = math.sqrt(least / data[0.0].size) / noise
    static = math.sqrt(float(np.square(data[0.0] - data[0.0].mean(axis=0)).mean())) / noise
    return MotionFit(nll, ratio, static, drift, time.perf_counter() - start)


#: :func:`motion_interval`'s defaults, calibrated on the dev clips (``estimate_blind.py --calibrate``, "drift
#: model interval"): 90 % of the drift model's Gaussian sigmas of the right kind within this factor of the
#: truth, 90 % of its boxes within this many frames.
INTERVAL_FACTOR, INTERVAL_FRAMES = 1.17, 1


def motion_choice(motion: dict | None, margin: float, residual_max: float, gain_min: float = 0.0,
                  interval_factor: float = INTERVAL_FACTOR,
                  interval_frames: int = INTERVAL_FRAMES) -> tuple[str, float, list[float]] | None:
    """The drift model's answer when it is decisive: ``(spec, margin, interval)`` or ``None``.

    ``motion``: :meth:`MotionFit.to_dict` (or ``None``: no drift). The candidates are reduced to one per
    kind (none, the box, the best Gaussian after :func:`best_gaussian`); the best is the answer when its
    residual is within ``residual_max`` of the noise, the drift explains the frames' change (a still
    scene's residual over the drift model's is at least ``gain_min``: cells that move on their own
    are no rigid drift) and the next kind is ``margin`` units behind.
    ``interval``: :func:`motion_interval` of the answer.
    """
    if motion is None or motion["residual_ratio"] > residual_max:
        return None
    if motion.get("static_ratio", 0.0) < gain_min * motion["residual_ratio"]:
        return None
    nll = motion["nll"]
    options = {"none": nll["none"]}
    options.update({c: v for c, v in nll.items() if c.startswith("uniform")})
    gauss = best_gaussian(nll)
    if gauss is not None:
        options[f"gaussian:{gauss[0]:.2g}"] = gauss[1]
    ranked = sorted(options.items(), key=lambda kv: kv[1])
    if len(ranked) < 2 or ranked[1][1] - ranked[0][1] < margin:
        return None
    spec = ranked[0][0]
    return spec, ranked[1][1] - ranked[0][1], motion_interval(spec, interval_factor, interval_frames)


def motion_interval(spec: str, factor: float, frames: int) -> list[float]:
    """The plausible range of a drift-model answer, from how far its estimates strayed on the calibration
    clips (not from its likelihood, whose margins there were too narrow: with the candidates within even
    8 units of the best, a third of the true Gaussian sigmas fell outside): a Gaussian's sigma times and
    over ``factor``, a box +- ``frames`` (at least 2). ``[]`` for "none"."""
    kind, _, value = spec.partition(":")
    if kind == "gaussian":
        return [round(float(value) / factor, 3), round(float(value) * factor, 3)]
    if kind == "uniform":
        return [float(max(2, int(value) - frames)), float(int(value) + frames)]
    return []


def motion_override(t_conf: dict, motion: dict | None, rules) -> dict:
    """The temporal confidence of :func:`napari_svi.estimate.decide` (``spec``: its answer), with the drift
    model's answer in place of the spectrum's where :func:`motion_choice` lets it through under ``rules``
    (a ``DecisionRules``)."""
    pick = motion_choice(motion, rules.motion_margin, rules.motion_residual_max, rules.motion_gain_min,
                         rules.motion_interval_factor, rules.motion_interval_frames)
    if pick is None:
        return t_conf
    spec, margin, interval = pick
    if spec.startswith("gaussian") and float(spec.split(":")[1]) < rules.min_temporal_sigma:
        spec, interval = "none", []
    spectral = t_conf["spec"]
    return {**t_conf, "spec": spec, "kind": spec.split(":")[0], "interval": interval or None,
            "unit": "frames" if spec.startswith("uniform") else "frames (sigma)", "method": "drift model",
            "margin_drift_model": round(margin, 3), "residual_over_noise": motion["residual_ratio"],
            "level": "high" if margin > 10 else "medium" if margin > 2 else "low",
            "alternative": spectral if spectral != spec else t_conf["alternative"]}
