"""A trial, not part of the estimator: a rigid-drift model for the blind temporal estimate.

Kept so that its numbers (``benchmarks/results/estimate/attempts_2026-12-04.md``) can be rerun; the
package does not use it. When the whole field translates (the suite's drifting stills, stage drift),
frame ``t`` is modelled as

    y_t = crop( sum_j A_tj shift(S, d_j) ) + n,

``A`` the project's temporal forward model of a candidate PSF (mirrored ends), ``d_j`` the drift of
frame ``j`` (pixels) and ``S`` one image on a canvas larger than the crop (a spatial blur is part of
``S``). For fixed drift, ``S`` is a linear least-squares solve (conjugate gradient, the shift as a
phase ramp); the drift is either the true one (``--path true``: what the data could tell) or started
from a chained registration of consecutive frames and refined by Gauss-Newton steps (``--path fit``:
what a blind estimate gets). The residual gives each candidate's profile likelihood.

    OMP_NUM_THREADS=2 python benchmarks/estimate_drift_trial.py --clip actin-left --path true
    OMP_NUM_THREADS=2 python benchmarks/estimate_drift_trial.py --clip actin-left --path fit
"""


from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

#: The model is fitted on the centre ``MOTION_SIZE`` pixels of each frame.
MOTION_SIZE = 48
#: Largest shift between consecutive frames that the registration looks for (pixels).
MAX_STEP_PX = 4
#: Drift (pixels, largest distance of a frame from the mean position) below which the scene is
#: treated as still: a still scene shows no temporal blur, whatever the model.
MIN_DRIFT_PX = 1.0
#: Largest drift the canvas allows (pixels from the mean position); more is not a rigid drift we fit.
MAX_DRIFT_PX = 24.0
#: Conjugate-gradient iterations per image solve, Gauss-Newton rounds of the drift, damping of the image.
CG_ITERS, ROUNDS, DAMPING = 15, 5, 1e-3
#: Gaussian low-pass (pixels) of the coarse-to-fine levels of the drift fit.
LOWPASS_PX = (2.0, 0.0)


@dataclass
class MotionFit:
    """What :func:`fit_drift` returns.

    ``nll``: per candidate, minus twice the profile log likelihood per 1000 data values, relative to
    the best (0); ``residual_ratio``: the best fit's residual std over the noise std (about 1 when a
    rigid drift explains the data); ``drift_px``: the largest distance of a frame from the mean position;
    ``path``: the fitted drift of the best candidate ``(T, 2)`` (rows, columns).
    """

    nll: dict
    residual_ratio: float
    drift_px: float
    path: np.ndarray
    seconds: float
    residuals: dict | None = None


def register_chain(y: np.ndarray, max_step: int = MAX_STEP_PX) -> np.ndarray:
    """Drift ``(T, 2)`` of frames ``y`` ``(T, H, W)``, from frame 0: consecutive frames registered by a
    windowed, phase-normalised, low-passed cross-correlation (peak within ``max_step`` pixels, parabolic
    sub-pixel refinement), chained. Convention: frame ``t`` shows the scene at ``x + d_t``."""
    t, h, w = y.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    spectra = np.fft.fft2((y - y.mean(axis=(1, 2), keepdims=True)) * window)
    lowpass = np.exp(-(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2) / (2 * 0.05**2))
    steps = [np.zeros(2)]
    r = max_step
    for k in range(1, t):
        cross = spectra[k - 1] * np.conj(spectra[k])
        corr = np.fft.fftshift(np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-12) * lowpass).real)
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
    """``y_t = crop(sum_j A_tj shift(S, d_j))`` on a canvas of ``size`` pixels: forward, adjoint, drift Jacobian."""

    def __init__(self, mix: np.ndarray, size: int, n: int, margin: int, lowpass_px: float = 0.0, smooth: float = 0.0):
        self.mix, self.size, self.n, self.m = mix, size, n, margin
        self.smooth, self.smooth_weight = smooth, None
        f = np.fft.fftfreq(size) * (2 * math.pi)
        self.fy, self.fx = f[:, None], f[None, :]
        self.lowpass = np.exp(-0.5 * lowpass_px**2 * (self.fy**2 + self.fx**2))  # the data's Gaussian filter

    def set_path(self, path: np.ndarray):
        self.path = path
        self.ramps = np.exp(1j * (self.fy[None] * path[:, 0, None, None] + self.fx[None] * path[:, 1, None, None]))
        self.gain = np.einsum("tj,jab->tab", self.mix, self.ramps) * self.lowpass[None]

    def _crop(self, canvas):
        m, n = self.m, self.n
        return canvas[..., m : m + n, m : m + n]

    def forward(self, image: np.ndarray) -> np.ndarray:
        return self._crop(np.fft.ifft2(self.gain * np.fft.fft2(image)[None]).real)

    def adjoint(self, frames: np.ndarray) -> np.ndarray:
        canvas = np.zeros((frames.shape[0], self.size, self.size))
        self._crop(canvas)[...] = frames
        return np.fft.ifft2((np.conj(self.gain) * np.fft.fft2(canvas)).sum(axis=0)).real

    def solve_image(self, y: np.ndarray, image: np.ndarray, iters: int, damping: float) -> np.ndarray:
        """Conjugate gradient on ``(A^T A + damping) S = A^T y`` from ``image``."""
        r = self.adjoint(y) - self.adjoint(self.forward(image)) - damping * image
        p, rr = r.copy(), float((r * r).sum())
        for _ in range(iters):
            q = self.adjoint(self.forward(p)) + damping * p
            alpha = rr / max(float((p * q).sum()), 1e-300)
            image = image + alpha * p
            r = r - alpha * q
            rr_new = float((r * r).sum())
            p, rr = r + (rr_new / max(rr, 1e-300)) * p, rr_new
        return image

    def path_step(self, image: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """Gauss-Newton step of the drift ``(T, 2)`` for ``residual = forward(image) - y``."""
        spectrum = np.fft.fft2(image)
        t = self.path.shape[0]
        g = np.stack([self._crop(np.fft.ifft2(1j * f * self.lowpass * self.ramps * spectrum[None]).real) for f in (self.fy, self.fx)],
                     axis=1).reshape(2 * t, -1)  # d(shift(S, d_j)) / d(d_j, axis), cropped
        mix2 = np.repeat(self.mix, 2, axis=1)  # (T, 2T): frame t's weight of each drift coordinate
        jtj = (mix2.T @ mix2) * (g @ g.T)  # sum over frames and pixels, factorised
        jtr = (mix2 * (residual.reshape(t, -1) @ g.T)).sum(axis=0)
        jtj += 1e-6 * np.trace(jtj) / jtj.shape[0] * np.eye(jtj.shape[0])
        if self.smooth > 0:  # a smooth drift: a penalty on its second differences, weighed against the data
            self.smooth_weight = self.smooth * float(np.trace(jtj)) / jtj.shape[0]
            k = np.kron(_second_differences(t).T @ _second_differences(t), np.eye(2))
            jtj = jtj + self.smooth_weight * k
            jtr = jtr + self.smooth_weight * k @ self.path.reshape(-1)
        return -np.linalg.solve(jtj, jtr).reshape(t, 2)

    def penalty(self, path: np.ndarray) -> float:
        """The smoothness penalty of ``path`` at the weight of the last step (0 without smoothing)."""
        if self.smooth <= 0 or self.smooth_weight is None:
            return 0.0
        return self.smooth_weight * float(np.square(_second_differences(path.shape[0]) @ path).sum())


def _second_differences(t: int) -> np.ndarray:
    """``(T - 2, T)`` second differences."""
    return np.diff(np.eye(t), n=2, axis=0)


def fit_drift(y01: np.ndarray, candidates: list[str], noise_sigma: float,
              true_path: np.ndarray | None = None, smooth: float = 0.0) -> MotionFit | None:
    """Fit the rigid-drift model for each temporal candidate (``"none"``, ``"uniform:K"``, ``"gaussian:S"``).

    ``y01``: the measurement ``(T, H, W)`` on the [0, 1] scale; ``noise_sigma``: its noise std there.
    ``None`` when the scene does not drift enough (below :data:`MIN_DRIFT_PX`) or drifts more than
    the canvas allows. ``true_path`` ``(T, 2)``: use this drift, not a fitted one.
    """
    from napari_svi.operators.temporal import temporal_matrix
    from napari_svi.psf import temporal_kernel

    start = time.perf_counter()
    t, h, w = y01.shape
    n = min(MOTION_SIZE, h, w)
    y0, x0 = (h - n) // 2, (w - n) // 2
    y01 = np.asarray(y01, dtype=np.float64)
    path0 = register_chain(y01[:, max(0, y0 - n // 2) : y0 + n + n // 2, max(0, x0 - n // 2) : x0 + n + n // 2])
    path0 = path0 - path0.mean(axis=0)
    if true_path is not None:
        path0 = true_path - true_path.mean(axis=0)
    drift = float(np.abs(path0).max())
    if drift < MIN_DRIFT_PX or drift > MAX_DRIFT_PX:
        return None
    from scipy import ndimage

    margin = int(math.ceil(drift)) + 4
    size = n + 2 * margin
    # coarse to fine: the drift is refined on low-passed data first (a wide basin), then at full detail
    levels = (0.0,) if true_path is not None else LOWPASS_PX
    data = {s: ndimage.gaussian_filter(y01, (0, s, s)) if s > 0 else y01 for s in levels}
    data = {s: v[:, y0 : y0 + n, x0 : x0 + n] - float(v[:, y0 : y0 + n, x0 : x0 + n].mean()) for s, v in data.items()}
    residuals, paths = {}, {}
    for cand in candidates:
        mix = np.eye(t) if cand == "none" else temporal_matrix(temporal_kernel(cand), t, "symmetric")
        path, image = path0.copy(), np.zeros((size, size))
        for level in levels:
            crop = data[level]
            model = _DriftModel(mix, size, n, margin, level, smooth)
            model.set_path(path)
            image = model.solve_image(crop, image, CG_ITERS * 4, DAMPING)
            loss = float(((model.forward(image) - crop) ** 2).sum())
            for _ in range(0 if true_path is not None else ROUNDS):
                fitted = model.forward(image) - crop
                step = model.path_step(image, fitted)
                loss = float((fitted**2).sum()) + model.penalty(path)  # the penalty's weight is set by the step
                for _half in range(6):
                    model.set_path(path + step)
                    trial_image = model.solve_image(crop, image, CG_ITERS, DAMPING)
                    trial = float(((model.forward(trial_image) - crop) ** 2).sum()) + model.penalty(path + step)
                    if trial < loss:
                        path, image, loss = path + step, trial_image, trial
                        break
                    step = step / 2
                else:
                    break
        residuals[cand], paths[cand] = loss, path
    count = crop.size
    least = min(residuals.values())
    best = min(residuals, key=residuals.get)
    nll = {c: 1000.0 * math.log(r / least) for c, r in residuals.items()}
    ratio = math.sqrt(least / count) / max(float(noise_sigma), 1e-12)
    return MotionFit(nll, ratio, drift, paths[best], time.perf_counter() - start, residuals)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import itertools
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import estimate_blind as eb

    from napari_svi.benchmark.suite import drift_path
    from napari_svi.estimate import estimate_blur
    from napari_svi.intensity import measurement_scale
    from napari_svi.noise import stack_noise_sigma

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="actin-left", choices=[c for c in eb.DEV if c != "nuclei-train"])
    p.add_argument("--path", choices=("true", "fit"), default="fit")
    p.add_argument("--temporal", default="gaussian:1.5,uniform:5,gaussian:0.5,none", help="true temporal PSFs; all: the benchmark's")
    p.add_argument("--spatial", default="none", help="true spatial PSFs, comma-separated")
    p.add_argument("--candidates", choices=("grid", "spectral"), default="grid",
                   help="grid: 11 fixed candidates; spectral: the spectral estimate's best box, best Gaussian and none")
    p.add_argument("--smooth", type=float, default=0.0, help="weight of a second-difference penalty on the drift")
    p.add_argument("--dev-data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = p.parse_args(argv)
    frames = 24
    truth = eb.load(args.clip, frames, 96, Path(args.dev_data))
    cands = ["none", "uniform:3", "uniform:4", "uniform:5", "uniform:6", "gaussian:0.5", "gaussian:0.8", "gaussian:1",
             "gaussian:1.25", "gaussian:1.5", "gaussian:2"]
    hits = {"spectral": 0, "drift": 0}
    skipped = 0
    temporal = eb.TEMPORAL if args.temporal == "all" else args.temporal.split(",")
    cases = list(itertools.product(temporal, args.spatial.split(","), eb.NOISE))
    for temporal, spatial, noise in cases:
        y, _ = eb.measure(truth, temporal, spatial, noise)
        est = estimate_blur(y)
        scale = measurement_scale(y, name="y")
        if args.candidates == "spectral":
            sc = est.scores
            cands = list(dict.fromkeys([est.temporal_psf if est.temporal_psf != "none" else "none", "none",
                                        f"uniform:{sc['box']['frames']}", f"gaussian:{sc['gaussian']['sigma']:.3g}"]))
        fit = fit_drift(scale.to_unit(y), cands, stack_noise_sigma(y, scale, "auto"),
                        drift_path(frames) if args.path == "true" else None, args.smooth)
        if fit is None:
            print(f"{temporal:12s} {spatial:11s} {noise:6s} no drift to fit (under {MIN_DRIFT_PX} px or over {MAX_DRIFT_PX} px)")
            skipped += 1
            continue
        order = sorted(fit.nll, key=fit.nll.get)
        hits["spectral"] += eb.hit(temporal, est.temporal_psf)
        hits["drift"] += eb.hit(temporal, order[0])
        print(f"{temporal:12s} {spatial:11s} {noise:6s} spectral {est.temporal_psf:14s} drift {order[0]:13s} "
              f"(next: {', '.join(f'{c} +{fit.nll[c]:.1f}' for c in order[1:3])}; none +{fit.nll['none']:.1f}) "
              f"residual/noise {fit.residual_ratio:.2f} {fit.seconds:.1f} s", flush=True)
    print(f"hits of {len(cases) - skipped} ({skipped} without drift left out): spectral {hits['spectral']}, drift model ({args.path} path) {hits['drift']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
