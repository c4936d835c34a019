"""Restoration quality on real data: degrade a clean time-lapse, restore it with every method, score.

The ground truth is a real fluorescence time-lapse (by default the held-out half of the nuclei
time-lapse that ships with napari-svi, never seen by the default prior). Each task degrades it with
the project's forward model (:func:`napari_svi.degrade.degrade`) plus noise, with fixed seeds; each
method restores the measurement; :mod:`.metrics` compares the result with the truth.

Noise model of the noisy tasks (Poisson-Gaussian, typical of live-cell fluorescence): the truth's
99.9th percentile corresponds to ``peak_photons`` photons per measured pixel (default 200), photon
shot noise is drawn, then Gaussian read noise of ``read_noise_photons`` photons (default 2, i.e. a
standard deviation of 0.01 of the peak) is added.

Methods (names as in ``results.json``):

``measurement``
    The measurement on the true grid (bilinear upsampling, linear interpolation between measured
    frames; missing pixels stay zero): the input a user would otherwise look at.
``cg``
    Conjugate gradient on the normal equations with SVI's ``cg_steps`` (5) iterations, started at
    the measurement: SVI's data-consistency step without the prior.
``cg-converged``
    The same CG run to convergence (relative residual 1e-6 or ``cg_max_iter`` iterations): the plain
    least-squares solution.
``richardson-lucy``
    Richardson-Lucy on the whole spatio-temporal operator; the number of iterations (up to
    ``rl_max_iter``) is chosen by the PSNR against the ground truth (oracle). Pixels that no
    measurement sees keep the constant start; not applicable where more than 5 % are unseen
    (frame interpolation).
``tv-admm``
    Isotropic 3-D total variation (time treated like space) by ADMM, ``tv_iter`` iterations with 5
    warm-started CG steps each, penalty ``rho = 10 lambda``; ``lambda`` is chosen on a geometric
    grid by the PSNR against the ground truth (oracle).
``independent``
    SVI with noise drawn independently for every frame (the ablation of the batch-consistent noise).
``svi``
    The method (Kwon & Ye, ICLR 2025) with the settings a user gets by default: ``noise_sigma="auto"``
    (estimated from the measurement) and ``gamma="auto"`` on noisy tasks, the noiseless normal
    equations on the noiseless task; no tuning on the ground truth.

Wall time and peak memory are those of the final call only (the oracle search for
``richardson-lucy`` and ``tv-admm`` is not counted); see :mod:`.measure`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..degrade import degrade, random_mask
from ..intensity import IntensityScale, measurement_scale
from ..operators import OperatorSpec
from ..priors.base import DiffusionPrior
from . import baselines
from .measure import measure
from .metrics import psnr, stack_metrics, truth_scale

METHODS = ("measurement", "cg", "cg-converged", "richardson-lucy", "tv-admm", "cg+tv", "independent", "svi")
#: The classical methods a lab already has, tuned on the ground truth (the opponents SVI must beat).
ORACLE_METHODS = ("richardson-lucy", "tv-admm", "cg+tv")
#: Richardson-Lucy runs where at least this fraction of the unknowns is seen by some measurement (the
#: others keep its constant start); below it (frame interpolation) it does not apply.
RL_MIN_SEEN = 0.95
RECORD_KEYS = ("task", "method", "psnr", "ssim", "temporal_error", "seconds", "peak_mb")


@dataclass(frozen=True)
class Task:
    """One degradation: a forward model, whether noise is added, and a fraction of missing pixels."""

    name: str
    description: str
    temporal_psf: str | None = "uniform:7"
    temporal_boundary: str = "symmetric"
    temporal_subsample: int = 1
    spatial_psf: str | None = None
    downsample: int = 1
    missing_fraction: float = 0.0
    noisy: bool = True
    peak_photons: float | None = None  # None: QualitySettings.peak_photons
    frames: int | None = None  # a short stack: only the first ``frames`` frames of the clip

    def spec(self, true_shape: tuple[int, int, int], seed: int = 0) -> OperatorSpec:
        """The forward model for a true stack ``(T, H, W)``; the mask (if any) is drawn with ``seed``."""
        spec = OperatorSpec(
            temporal_psf=self.temporal_psf,
            temporal_boundary=self.temporal_boundary,
            temporal_subsample=self.temporal_subsample,
            spatial_psf=self.spatial_psf,
            downsample=self.downsample,
        )
        if self.missing_fraction > 0:
            spec.mask = random_mask(spec.measurement_shape(true_shape), self.missing_fraction, seed=seed)
        return spec


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("temporal-box7", "box of 7 frames, circular boundary, no noise (the paper's setting)",
             temporal_boundary="circular", noisy=False),
        Task("temporal-box7-noisy", "box of 7 frames, symmetric boundary, Poisson-Gaussian noise"),
        Task("temporal-gauss1", "Gaussian temporal PSF, sigma 1 frame, symmetric, noisy", temporal_psf="gaussian:1"),
        Task("temporal-box7+deblur2", "box of 7 frames + Gaussian spatial PSF sigma 2 px, noisy",
             spatial_psf="gaussian:2"),
        Task("temporal-box7+sr2", "box of 7 frames + 2x2 block-mean downsampling, noisy", downsample=2),
        Task("temporal-box7+sr4", "box of 7 frames + 4x4 block-mean downsampling, noisy", downsample=4),
        Task("temporal-box7+inpaint50", "box of 7 frames + 50% of the pixels missing at random (per frame), noisy",
             missing_fraction=0.5),
        Task("interp2", "every second frame missing (frame interpolation), no blur, noisy",
             temporal_psf=None, temporal_subsample=2),
    )
}


@dataclass
class QualitySettings:
    """Everything that decides the numbers; stored in ``details.json``."""

    steps: int | None = None  # restore's default (5 from the warm start, 20 from noise)
    eta: float | str = "auto"
    start: str = "tv"
    blend: str = "cv"
    gamma: str = "auto"  # restore's gamma rule: "auto" (one per 64-px window) or "piece"
    samples: int = 1  # posterior samples of svi; the result is their mean
    cg_steps: int = 5
    seed: int = 0
    device: str = "auto"
    peak_photons: float = 200.0
    read_noise_photons: float = 2.0
    cg_max_iter: int = 1000
    cg_tol: float = 1e-6
    rl_max_iter: int = 200
    tv_iter: int = 50
    tv_start_weight: float = 0.01
    tv_max_evals: int = 7


@dataclass
class QualityResult:
    """Records (``results.json``), details (``details.json``) and the estimates for the figures."""

    records: list[dict]
    details: dict
    truth: np.ndarray
    estimates: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------- data


def prepare_truth(
    data, *, time_axis: int = 0, frames: int | None = 16, start_frame: int = 0, crop: int | None = 128
) -> tuple[np.ndarray, dict]:
    """The ground-truth clip ``(T, H, W)`` float32 from a time-lapse, and a record of how it was cut.

    ``frames`` frames from ``start_frame``; a centred ``crop x crop`` window (``None``: the whole
    frame). Height and width are cut down to multiples of 4 so that every task's downsampling fits.
    Extra leading axes (channels, z) are reduced to their first index.
    """
    arr = np.asarray(data)
    if arr.ndim < 3:
        raise ValueError(f"the ground truth must be a time-lapse (T, Y, X) or with more axes, got shape {arr.shape}")
    ax = time_axis + arr.ndim if time_axis < 0 else time_axis
    if not 0 <= ax < arr.ndim - 2:
        raise ValueError(f"time_axis={time_axis} must index one of the leading axes of shape {arr.shape}")
    arr = np.moveaxis(arr, ax, 0)
    while arr.ndim > 3:
        arr = arr[:, 0]
    t_all, h_all, w_all = arr.shape
    frames = t_all - start_frame if frames is None else int(frames)
    if not (0 <= start_frame and frames >= 2 and start_frame + frames <= t_all):
        raise ValueError(f"frames {start_frame}..{start_frame + frames - 1} are not inside the {t_all} frames of the data")
    size_h = h_all if crop is None else min(int(crop), h_all)
    size_w = w_all if crop is None else min(int(crop), w_all)
    size_h, size_w = size_h - size_h % 4, size_w - size_w % 4
    if min(size_h, size_w) < 16:
        raise ValueError(f"the crop must leave frames of at least 16 x 16 pixels, got {size_h} x {size_w}")
    y0, x0 = (h_all - size_h) // 2, (w_all - size_w) // 2
    clip = np.ascontiguousarray(arr[start_frame : start_frame + frames, y0 : y0 + size_h, x0 : x0 + size_w], np.float32)
    record = {"source_shape": [int(s) for s in np.asarray(data).shape], "source_dtype": str(np.asarray(data).dtype),
              "time_axis": int(time_axis), "frames": [int(start_frame), int(start_frame + frames)],
              "rows": [int(y0), int(y0 + size_h)], "columns": [int(x0), int(x0 + size_w)],
              "shape": [int(frames), int(size_h), int(size_w)]}
    return clip, record


def make_measurement(truth: np.ndarray, task: Task, settings: QualitySettings) -> tuple[np.ndarray, OperatorSpec, dict]:
    """Degrade ``truth`` (T, H, W) for ``task``: the measurement (data units, float32), the spec and a noise record."""
    spec = task.spec(truth.shape, seed=settings.seed + 1)
    if task.noisy:
        peak_level = float(np.percentile(truth, 99.9))
        photons = settings.peak_photons if task.peak_photons is None else float(task.peak_photons)
        read_sigma = settings.read_noise_photons / photons * peak_level
        y = degrade(truth, spec, noise_sigma=read_sigma, poisson_peak=photons, seed=settings.seed)
        noise = {"model": "Poisson-Gaussian", "peak_photons": photons,
                 "read_noise_photons": settings.read_noise_photons, "peak_level_units": peak_level,
                 "read_noise_sigma_units": read_sigma}
    else:
        y = degrade(truth, spec, seed=settings.seed)
        noise = {"model": "none"}
    return y, spec, noise


# ---------------------------------------------------------------- methods


def _classical(method: str, y: np.ndarray, spec: OperatorSpec, truth: np.ndarray, t_scale: IntensityScale,
               settings: QualitySettings) -> tuple[np.ndarray, float, float, dict] | None:
    """Run one classical method (tuning first where it is oracle-tuned); ``None`` if it does not apply.

    Returns ``(estimate in data units, seconds, peak_mb, parameters)``.
    """
    t, h, w = truth.shape
    y_scale = measurement_scale(y)  # the solver's scale, from the data alone (as restore)
    op = spec.build((t, 1, h, w), dtype=torch.float32)
    y01 = torch.from_numpy(y_scale.to_unit(y))[:, None]
    x_start = torch.from_numpy(y_scale.to_unit(baselines.measurement_estimate(y, spec, truth.shape)))[:, None]
    truth01 = t_scale.to_unit(truth)

    def to_units(x: torch.Tensor) -> np.ndarray:
        return y_scale.from_unit(x[:, 0].numpy())

    def score(x: torch.Tensor) -> float:
        return psnr(truth01, t_scale.to_unit(to_units(x)))

    params: dict = {}
    if method == "measurement":
        run: Callable[[], torch.Tensor] = lambda: x_start.clone()  # noqa: E731
    elif method == "cg":
        params = {"iterations": settings.cg_steps, "start": "measurement"}
        run = lambda: baselines.cg_least_squares(y01, op, settings.cg_steps, x_start)  # noqa: E731
    elif method == "cg-converged":
        params = {"max_iterations": settings.cg_max_iter, "tol": settings.cg_tol, "start": "measurement"}
        run = lambda: baselines.cg_least_squares(y01, op, settings.cg_max_iter, x_start, tol=settings.cg_tol)  # noqa: E731
    elif method == "richardson-lucy":
        seen = float((op.adjoint(torch.ones(op.out_shape)) > 0).float().mean())
        if not baselines.is_nonnegative(spec) or seen < RL_MIN_SEEN:
            return None
        _, n_iter, _ = baselines.best_iterate(baselines.richardson_lucy_steps(y01, op, settings.rl_max_iter), score)
        params = {"iterations": n_iter, "max_iterations": settings.rl_max_iter, "oracle": "iterations",
                  "fraction_of_pixels_measured": seen}
        run = lambda: baselines.richardson_lucy(y01, op, n_iter)  # noqa: E731
    elif method == "tv-admm":
        def tv(weight: float) -> torch.Tensor:
            return baselines.tv_admm(y01, op, weight, settings.tv_iter, x0=x_start)

        weight, _, tried = baselines.log_search(lambda v: score(tv(v)), settings.tv_start_weight,
                                                max_evals=settings.tv_max_evals)
        params = {"weight": weight, "iterations": settings.tv_iter, "rho": "10 * weight", "cg_steps": 5,
                  "temporal_weight": 1.0, "oracle": "weight", "weights_tried": {f"{k:.3g}": round(v, 3) for k, v in sorted(tried.items())}}
        run = lambda: tv(weight)  # noqa: E731
    elif method == "cg+tv":
        x_cg = baselines.cg_least_squares(y01, op, settings.cg_steps, x_start)
        weight, _, tried = baselines.log_search(lambda v: score(baselines.tv_denoise(x_cg, v)), 0.05,
                                                max_evals=settings.tv_max_evals)
        params = {"cg_iterations": settings.cg_steps, "tv_weight": weight, "oracle": "tv_weight",
                  "weights_tried": {f"{k:.3g}": round(v, 3) for k, v in sorted(tried.items())}}
        run = lambda: baselines.tv_denoise(baselines.cg_least_squares(y01, op, settings.cg_steps, x_start), weight)  # noqa: E731
    else:
        raise ValueError(f"unknown classical method {method!r}")
    m = measure(run)
    if method.startswith("cg"):
        aty = op.adjoint(y01)
        residual = op.normal(m.value) - aty
        params["relative_residual"] = float(residual.norm() / aty.norm().clamp_min(1e-30))
    return to_units(m.value), m.seconds, m.peak_mb, params


#: How ``svi`` gets its noise level on noisy tasks: ``noise_sigma="auto"``, from the measurement alone.
AUTO_NOISE = "estimated by restore from the measurement (RMS of a binned neighbour-residual noise level function)"


def _diffusion(method: str, y: np.ndarray, spec: OperatorSpec, task: Task, t_frames: int, prior: DiffusionPrior,
               settings: QualitySettings) -> tuple[np.ndarray, float, float, dict]:
    from ..restore import restore

    noise_sigma, how = ("auto", AUTO_NOISE) if task.noisy else (None, "none (noiseless normal equations)")
    kwargs = dict(prior=prior, steps=settings.steps, eta=settings.eta, cg_steps=settings.cg_steps,
                  start=settings.start, blend=settings.blend,
                  noise_sigma=noise_sigma, gamma=settings.gamma, seed=settings.seed, samples=settings.samples,
                  device=settings.device, batch_consistent=(method == "svi"), true_frames=t_frames)
    m = measure(lambda: restore(y, spec, **kwargs), device=_device(settings.device))
    meta = m.value.metadata
    params = {"steps": meta.get("steps"), "start": meta.get("start"), "blend_weight": meta.get("blend_weight"),
              "blend_rl_weight": meta.get("blend_rl_weight"), "blend_rl_iterations": meta.get("blend_rl_iterations"),
              "start_tv_weight": meta.get("start_tv_weight"), "samples": settings.samples, "eta": settings.eta, "cg_steps": settings.cg_steps,
              "batch_consistent": method == "svi", "noise_sigma": how,
              "noise_sigma_used": meta.get("noise_sigma_used"), "gamma": meta.get("gamma"), "seed": settings.seed,
              "device": meta.get("device"), "prior": meta.get("prior"), "windows": meta.get("windows"),
              "eta_used": meta.get("eta"), "consistency": meta.get("consistency"),
              "tiles": meta.get("tiles")}
    if m.cuda_peak_mb is not None:
        params["cuda_peak_mb"] = round(m.cuda_peak_mb, 1)
    return m.value.restored, m.seconds, m.peak_mb, params


def _device(name: str) -> torch.device:
    from ..priors.loading import resolve_device

    return resolve_device(name)


def run_quality(
    truth: np.ndarray,
    prior: DiffusionPrior | None,
    *,
    tasks: tuple[str, ...] = tuple(TASKS),
    methods: tuple[str, ...] = METHODS,
    settings: QualitySettings | None = None,
    progress: Callable[[str], object] | None = print,
    registry: dict[str, Task] | None = None,
) -> QualityResult:
    """Degrade ``truth`` for every task, restore with every method, and score.

    Parameters
    ----------
    truth : numpy.ndarray, shape (T, H, W)
        The ground-truth clip (see :func:`prepare_truth`), any units.
    prior : DiffusionPrior or None
        Prior of ``svi`` and ``independent``; may be ``None`` when neither is asked for.
    tasks, methods : tuple of str
        Names from :data:`TASKS` and :data:`METHODS`.
    settings : QualitySettings, optional
    progress : callable, optional
        Receives one line of text per finished (task, method).
    registry : dict, optional
        Task names to :class:`Task` (default :data:`TASKS`; the realistic suite passes its own).

    Returns
    -------
    QualityResult
        ``records``: one dict per applicable (task, method) with exactly :data:`RECORD_KEYS`.
    """
    settings = settings or QualitySettings()
    registry = TASKS if registry is None else registry
    unknown = [t for t in tasks if t not in registry] + [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown task or method {unknown}; tasks: {list(registry)}, methods: {list(METHODS)}")
    if prior is None and any(m in ("svi", "independent") for m in methods):
        raise ValueError("the methods 'svi' and 'independent' need a prior")
    full_truth = np.asarray(truth, dtype=np.float32)
    t_scale = truth_scale(full_truth)
    records: list[dict] = []
    estimates: dict[tuple[str, str], np.ndarray] = {}
    task_details: dict[str, dict] = {}
    t0 = time.perf_counter()
    for task_name in tasks:
        task = registry[task_name]
        truth = full_truth[: task.frames] if task.frames else full_truth
        y, spec, noise = make_measurement(truth, task, settings)
        task_details[task_name] = {"description": task.description, "operator": spec.to_dict(), "noise": noise,
                                   "measurement_shape": list(y.shape), "methods": {}}
        for method in methods:
            if method in ("svi", "independent"):
                out = _diffusion(method, y, spec, task, truth.shape[0], prior, settings)
            else:
                out = _classical(method, y, spec, truth, t_scale, settings)
            if out is None:
                task_details[task_name]["methods"][method] = {"applicable": False}
                if progress:
                    progress(f"{task_name:26s} {method:16s} not applicable")
                continue
            estimate, seconds, peak_mb, params = out
            scores = stack_metrics(truth, estimate, t_scale)
            records.append(_record(task_name, method, scores, seconds, peak_mb))
            estimates[(task_name, method)] = np.asarray(estimate, np.float32)
            task_details[task_name]["methods"][method] = params
            if progress:
                r = records[-1]
                progress(f"{task_name:26s} {method:16s} PSNR {r['psnr']:6.2f} dB  SSIM {r['ssim']:.3f}  "
                         f"temporal {r['temporal_error']:.4f}  {r['seconds']:7.2f} s  {r['peak_mb']:7.1f} MB")
    details = {
        "settings": asdict(settings),
        "scale": {"low": t_scale.low, "high": t_scale.high, "percentiles": [0.1, 99.9], "data_range": 1.0,
                  "note": "PSNR and SSIM on the ground truth's [0, 1] percentile scale, data range 1, no clipping"},
        "tasks": task_details,
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    return QualityResult(records=records, details=details, truth=full_truth, estimates=estimates)


def _record(task: str, method: str, scores: dict, seconds: float, peak_mb: float) -> dict:
    def num(v: float, digits: int) -> float | None:
        return round(float(v), digits) if math.isfinite(v) else None

    return {"task": task, "method": method, "psnr": num(scores["psnr"], 3), "ssim": num(scores["ssim"], 4),
            "temporal_error": num(scores["temporal_error"], 5), "seconds": num(seconds, 3), "peak_mb": num(peak_mb, 1)}
