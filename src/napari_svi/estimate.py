"""Blind estimation: the temporal PSF, the spatial PSF and the noise level of a time-lapse, from the data.

:func:`estimate_blur` fits the spectral model of :mod:`napari_svi.estimate_fit` to the stack for
every candidate PSF (a box of ``K`` frames, a Gaussian in time, none; a Gaussian in space, none),
keeps the most likely, and says how sure it is. Where the whole field drifts (stage drift, a panned
still), the rigid-drift model of :mod:`napari_svi.estimate_drift` also fits the frames themselves; its
temporal answer replaces the spectral one where it explains how the frames change
(``DecisionRules.motion_*``; ``confidence["temporal_psf"]["method"]`` says which). The result uses the spec strings of ``restore``
(``"uniform:K"``, ``"gaussian:S"``, ``"none"``), so ``restore --temporal-psf auto --spatial-psf auto``
(:func:`resolve_auto`) plugs it in. The noise level is the project's own estimate
(:func:`napari_svi.noise.stack_noise_sigma` on the scale of :func:`napari_svi.intensity.measurement_scale`),
in the data's units.

The decision rules (:class:`DecisionRules`) were set on calibration clips cut from the left halves
of the shared stills and the training half of the nuclei time-lapse, never on the held-out clips
that the benchmark scores (``benchmarks/estimate_blind.py``, ``benchmarks/results/estimate/``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from .estimate_drift import INTERVAL_FACTOR, INTERVAL_FRAMES, fit_motion, motion_candidates, motion_override
from .estimate_fit import SPATIAL_SIGMAS, SpectralFit, pooled_table, spatial_gain2, spectral_table, temporal_mixing
from .estimate_reference import prior_references, reference_decision, resolve_reference, spatial_against
from .psf import temporal_kernel
from .psf_spec import auto_structure, is_auto, known_spatial, known_temporal

#: Candidate temporal Gaussians (frames) and spatial Gaussians (pixels); boxes are MIN_BOX .. MAX_BOX frames.
#: A box of 2 frames is no candidate: it zeroes the temporal Nyquist frequency, and a restore given it
#: where the truth has little blur amplifies noise there (held-out mito clip, no temporal blur: 32.3 dB
#: with uniform:2 against 34.3 dB with gaussian:0.5, of the same variance; benchmarks/results/estimate/
#: sensitivity.md); a Gaussian covers that width.
TEMPORAL_SIGMAS = (0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
MIN_BOX, MAX_BOX = 3, 12
#: Fewest frames an estimate accepts; the temporal spectrum of fewer says almost nothing.
MIN_FRAMES = 6
#: At most this many frames (the middle ones) and pixels per side (the centre) are read.
MAX_FRAMES, MAX_SIZE = 48, 192


@dataclass(frozen=True)
class DecisionRules:
    """How the likelihoods become an answer; margins are in units of minus twice the log likelihood
    per 1000 DCT coefficients (they grow with the data, as misfits of the model do).

    The defaults maximise the hit rate on the calibration clips (``benchmarks/estimate_blind.py
    --clips dev --calibrate``; ``benchmarks/results/estimate/report_dev.md``), never on held-out clips.
    """

    #: A Gaussian is chosen over the best box unless the box is more likely by this margin; negative:
    #: a box is kept unless a Gaussian is clearly more likely (exposure integrates a box; below about
    #: 2 frames of blur the noise hides which kind it is).
    gaussian_margin: float = -0.3
    #: "none" unless the best blur is more likely than no blur by this margin.
    none_margin: float = 0.2
    #: Temporal Gaussians below this sigma (frames) are reported as "none".
    min_temporal_sigma: float = 0.4
    #: Blur every microscope image already has (pixels): the spatial PSF reported is the fitted one
    #: less this, in quadrature, because the prior learnt images that have it. Its spread over the
    #: calibration clips, ``native_spatial_range``, widens the spatial interval.
    native_spatial_sigma: float = 1.2
    native_spatial_range: tuple[float, float] = (0.9, 1.5)
    #: Spatial Gaussians below this sigma (pixels, after the native blur is taken out) are "none".
    min_spatial_sigma: float = 0.6
    #: Candidates within this margin of the best form the interval reported (about 90 % of the true
    #: temporal blurs of the calibration clips fall inside when the kind is right).
    interval_margin: float = 0.5
    #: The rigid-drift model (:mod:`napari_svi.estimate_drift`) replaces the spectral temporal answer when
    #: its best kind leads the next by ``motion_margin`` (units per 1000 values) and its residual std is
    #: within ``motion_residual_max`` times the noise std (a rigid drift explains the data) and at most
    #: ``1 / motion_gain_min`` of a still scene's (the drift explains how the frames change).
    motion_margin: float = 0.0
    motion_residual_max: float = 1.5
    motion_gain_min: float = 2.0
    #: The drift model's interval: its sigma times and over this factor, its box +- these frames
    #: (:data:`~napari_svi.estimate_drift.INTERVAL_FACTOR`: calibrated on dev).
    motion_interval_factor: float = INTERVAL_FACTOR
    motion_interval_frames: int = INTERVAL_FRAMES


DEFAULT_RULES = DecisionRules()


@dataclass
class BlurEstimate:
    """What :func:`estimate_blur` returns.

    ``temporal_psf`` / ``spatial_psf``: restore's spec strings. ``noise_sigma``: the noise std in the
    data's units. ``confidence``: per quantity an interval, the margins behind the choice and a
    level (``"high"``, ``"medium"``, ``"low"``). ``scores``: the raw likelihoods (for calibration).
    """

    temporal_psf: str
    spatial_psf: str
    noise_sigma: float
    confidence: dict
    seconds: float = 0.0
    scores: dict = field(default_factory=dict, repr=False)

    def to_dict(self, scores: bool = False) -> dict:
        out = asdict(self)
        if not scores:
            out.pop("scores")
        return out


def _gaussian(sigma: float) -> str:
    return f"gaussian:{sigma:.2g}"


class _Search:
    """The candidates' likelihoods on one table, cached by (temporal spec, spatial sigma)."""

    def __init__(self, fit: SpectralFit):
        self.fit, self.frames, self.cache, self.mixings = fit, fit.table.frames, {}, {}
        self.per_1000 = float(fit.weight.sum()) / 1000.0

    def nll(self, temporal: str, spatial: float) -> float:
        key = (temporal, round(float(spatial), 4))
        if key not in self.cache:
            kernel = None if temporal == "none" else temporal_kernel(temporal)
            mixing = self.mixings.get(temporal)
            if mixing is None:
                mixing = self.mixings[temporal] = temporal_mixing(kernel, self.frames)
            self.cache[key] = self.fit.nll(mixing, spatial_gain2(spatial, self.fit.table.rho)) / self.per_1000
        return self.cache[key]

    def temporal_candidates(self) -> list[str]:
        boxes = [f"uniform:{k}" for k in range(MIN_BOX, min(MAX_BOX, self.frames - 1) + 1)]
        return ["none", *boxes, *(_gaussian(s) for s in TEMPORAL_SIGMAS if s < self.frames / 3)]

    def best_temporal(self, spatial: float) -> str:
        return min(self.temporal_candidates(), key=lambda c: self.nll(c, spatial))

    def best_spatial(self, temporal: str) -> float:
        return min((0.0, *SPATIAL_SIGMAS), key=lambda s: self.nll(temporal, s))

    def refine(self, fun, grid: tuple[float, ...], best: float) -> float:
        """Minimise ``fun`` between the grid neighbours of ``best`` (bounded golden section)."""
        i = grid.index(best)
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        if hi <= lo:
            return best
        res = minimize_scalar(fun, bounds=(lo, hi), method="bounded", options={"xatol": 0.02})
        return float(res.x) if res.fun < fun(best) else best


def _fit_scores(search: _Search, temporal_fixed: str | None = None, spatial_fixed: float | None = None) -> dict:
    """Coordinate search (temporal, then spatial, again if the temporal optimum moved), then each
    family's best at the final spatial PSF. A ``*_fixed`` PSF (known to the user) is not searched."""
    def temporal_at(spatial: float) -> str:
        return temporal_fixed if temporal_fixed is not None else search.best_temporal(spatial)

    def spatial_at(temporal: str) -> float:
        return spatial_fixed if spatial_fixed is not None else search.best_spatial(temporal)

    temporal = temporal_at(0.0 if spatial_fixed is None else spatial_fixed)
    spatial = spatial_at(temporal)
    if temporal_at(spatial) != temporal:  # the spatial PSF moved the temporal optimum: once more
        temporal = temporal_at(spatial)
        spatial = spatial_at(temporal)
    if spatial > 0 and spatial_fixed is None:
        spatial = search.refine(lambda s: search.nll(temporal, s), SPATIAL_SIGMAS, spatial)
    cands = search.temporal_candidates()
    boxes = [c for c in cands if c.startswith("uniform")]
    gaussians = [c for c in cands if c.startswith("gaussian")]
    box = min(boxes, key=lambda c: search.nll(c, spatial)) if boxes else None
    g_grid = tuple(float(c.split(":")[1]) for c in gaussians)
    g_best = min(g_grid, key=lambda s: search.nll(_gaussian(s), spatial))
    g_sigma = search.refine(lambda s: search.nll(f"gaussian:{s:.4f}", spatial), g_grid, g_best)
    g_key = f"gaussian:{g_sigma:.4f}" if g_sigma != g_best else _gaussian(g_best)
    profile_t = {c: search.nll(c, spatial) for c in cands}
    profile_s = {s: search.nll(temporal, s) for s in (0.0, *SPATIAL_SIGMAS)}
    return {
        "none": search.nll("none", spatial),
        "box": None if box is None else {"frames": int(box.split(":")[1]), "nll": search.nll(box, spatial)},
        "gaussian": {"sigma": g_sigma, "nll": search.nll(g_key, spatial)},
        "spatial_sigma_fit": spatial, "spatial_none": search.nll(temporal, 0.0),
        "spatial_best": search.nll(temporal, spatial), "profile_temporal": profile_t,
        "profile_spatial": {f"{k:g}": v for k, v in profile_s.items()},
        "noise_factor": search.fit.noise_factor(),
    }


def _level(margin: float) -> str:
    return "high" if margin > 1.0 else "medium" if margin > 0.2 else "low"


def decide(scores: dict, rules: DecisionRules = DEFAULT_RULES) -> tuple[str, str, dict]:
    """``(temporal_psf, spatial_psf, confidence)`` from the raw likelihoods of :func:`_fit_scores`."""
    profile = {c: v for c, v in scores["profile_temporal"].items() if not _short_box(c)}
    boxes = {c: v for c, v in profile.items() if c.startswith("uniform")}
    box = None if not boxes else {"frames": int(min(boxes, key=boxes.get).split(":")[1]), "nll": min(boxes.values())}
    gauss = scores["gaussian"]
    use_box = box is not None and box["nll"] < gauss["nll"] - rules.gaussian_margin
    blur_nll = box["nll"] if use_box else gauss["nll"]
    kind_margin = abs((gauss["nll"] - box["nll"]) if box is not None else math.inf)
    none_margin = scores["none"] - blur_nll
    if none_margin <= rules.none_margin or (not use_box and gauss["sigma"] < rules.min_temporal_sigma):
        temporal = "none"
        near = [c for c, v in profile.items() if v <= scores["none"] + rules.interval_margin]
    elif use_box:
        temporal = f"uniform:{box['frames']}"
        near = [c for c, v in profile.items() if c.startswith("uniform") and v <= box["nll"] + rules.interval_margin]
    else:
        temporal = _gaussian(gauss["sigma"])
        near = [c for c, v in profile.items() if c.startswith("gaussian") and v <= gauss["nll"] + rules.interval_margin]
    values = sorted({float(c.split(":")[1]) for c in [*near, temporal] if c != "none"})
    t_conf = {"kind": temporal.split(":")[0], "interval": [values[0], values[-1]] if values else None,
              "unit": "frames" if temporal.startswith("uniform") else "frames (sigma)",
              "margin_over_none": round(none_margin, 3), "margin_over_other_kind": round(kind_margin, 3),
              "level": _level(min(abs(none_margin), kind_margin if temporal != "none" else math.inf)),
              "alternative": _alternative(temporal, box, gauss), "method": "spectrum", "spec": temporal}
    t_conf = motion_override(t_conf, scores.get("motion"), rules)
    temporal = t_conf.pop("spec")
    if scores.get("reference"):  # measured against sharp images of the structure (estimate_reference)
        spatial, s_conf = reference_decision(scores["reference"], rules.min_spatial_sigma, rules.interval_margin)
        return temporal, spatial, {"temporal_psf": t_conf, "spatial_psf": s_conf}
    fitted = scores["spatial_sigma_fit"]
    excess = math.sqrt(max(fitted**2 - rules.native_spatial_sigma**2, 0.0))
    spatial = "none" if excess < rules.min_spatial_sigma else _gaussian(excess)
    s_profile = {float(k): v for k, v in scores["profile_spatial"].items()}
    s_near = sorted({fitted, *(k for k, v in s_profile.items() if v <= scores["spatial_best"] + rules.interval_margin)})
    least, most = rules.native_spatial_range
    lo, hi = (round(math.sqrt(max(v**2 - n**2, 0.0)), 3) for v, n in ((s_near[0], most), (s_near[-1], least)))
    s_conf = {"kind": spatial.split(":")[0], "fitted_sigma_px": round(fitted, 3),
              "native_sigma_px": rules.native_spatial_sigma, "interval": [lo, hi], "unit": "pixels (sigma)",
              "margin_over_none": round(scores["spatial_none"] - scores["spatial_best"], 3),
              "level": _interval_level(spatial, lo, hi, rules.min_spatial_sigma)}
    return temporal, spatial, {"temporal_psf": t_conf, "spatial_psf": s_conf}


def _short_box(candidate: str) -> bool:
    """A box shorter than :data:`MIN_BOX` (likelihoods recorded before it was left out)."""
    return candidate.startswith("uniform") and int(candidate.split(":")[1]) < MIN_BOX


def _interval_level(spec: str, lo: float, hi: float, minimum: float) -> str:
    """How sure a spatial estimate is, from the width of its interval (or, for none, how far it reaches)."""
    if spec == "none":
        return "high" if hi < minimum else "medium" if hi < 2 * minimum else "low"
    width = (hi - lo) / max(float(spec.split(":")[1]), minimum)
    return "high" if width <= 0.3 else "medium" if width <= 0.6 else "low"


def _alternative(chosen: str, box: dict | None, gauss: dict) -> str | None:
    """The best candidate of the other blur kind, which the data could not rule out."""
    if chosen.startswith("uniform"):
        return _gaussian(gauss["sigma"])
    return f"uniform:{box['frames']}" if box is not None else None


def _measured_stacks(data, time_axis: int):
    """The 2-D + t stacks of ``data`` as ``(N, T, H, W)``, checked, with the frame and pixel limits applied."""
    from .lazy import as_lazy
    from .validation import check_stack, move_time_axis

    arr = check_stack(as_lazy(data), time_axis=time_axis, name="data")
    stacks, _ = move_time_axis(arr, time_axis)
    t, h, w = stacks.shape[1:]
    if t < MIN_FRAMES:
        raise ValueError(f"data has {t} frames along time_axis={time_axis}; a blur estimate needs at least "
                         f"{MIN_FRAMES} frames (the temporal spectrum of fewer says almost nothing)")
    if min(h, w) < 16:
        raise ValueError(f"data frames are {h} x {w} pixels; a blur estimate needs at least 16 x 16")
    t0 = max(0, (t - MAX_FRAMES) // 2)
    y0, x0 = max(0, (h - MAX_SIZE) // 2), max(0, (w - MAX_SIZE) // 2)
    return stacks, (slice(t0, t0 + MAX_FRAMES), slice(y0, y0 + MAX_SIZE), slice(x0, x0 + MAX_SIZE))


def estimate_blur(data, *, time_axis: int = 0, temporal_psf=None, spatial_psf=None, structure=None,
                  rules: DecisionRules = DEFAULT_RULES, max_stacks: int = 4, motion: bool = True) -> BlurEstimate:
    """Estimate the temporal PSF, the spatial PSF and the noise level of a measured time-lapse.

    Parameters
    ----------
    data : array_like, shape (..., T, ..., Y, X)
        The measurement (any numeric dtype and range; NumPy, dask or zarr), fully observed, at the
        resolution of the true stack (no downsampling), with at least :data:`MIN_FRAMES` frames.
        The middle :data:`MAX_FRAMES` frames and the centre :data:`MAX_SIZE` pixels are read; several
        2-D + t stacks (channels, z) share one estimate (their spectra are pooled, up to ``max_stacks``).
    time_axis : int
        Index of the time axis.
    temporal_psf, spatial_psf : str, optional
        A PSF the user knows (``"none"``, ``"uniform:K"``, ``"gaussian:S"``): held fixed while the other
        is estimated, and returned as given. ``None`` or ``"auto"``: estimated. A known PSF of another
        kind (a file, an Airy pattern) is not used by the search. ``"auto:STRUCTURE"`` names ``structure``.
    structure : str, path or array, optional
        What was imaged, as a reference of sharpness (:mod:`napari_svi.estimate_reference`): a structure
        the default prior learnt (``"actin"``, ``"mitochondria"``, ``"nuclei"``, ``"walls"``), a TIFF of
        sharp images of it, or an array of them. The spatial PSF is then the blur relative to it, which
        tells the structure's own softness from added blur. ``None``: the power-law model, less a
        native blur of ``rules.native_spatial_sigma``.
    rules : DecisionRules
        How likelihoods become an answer (the calibrated defaults).
    motion : bool
        Also fit the rigid-drift model (:mod:`napari_svi.estimate_drift`) to the first stack when its
        field drifts (a few seconds more); its answer replaces the spectral one where it is decisive.

    Returns
    -------
    BlurEstimate

    Notes
    -----
    The model (:mod:`napari_svi.estimate_fit`) is ``E(f, rho) = H_t(f)^2 H_s(rho)^2 (A rho^-(alpha+1)
    m(f / rho) + w) + s^2`` for the mean DCT power at temporal frequency ``f`` and radial spatial
    frequency ``rho``. Motion puts structure at ``f`` proportional to ``rho``, a temporal blur cuts at
    fixed ``f``: a box of ``K`` frames zeroes ``f = 1/K`` at every scale. A spatial Gaussian is told
    from the image's own spectrum by the scale-free prior ``rho^-alpha``.
    """
    from .intensity import measurement_scale
    from .noise import stack_noise_sigma

    start = time.perf_counter()
    stacks, (ts, ys, xs) = _measured_stacks(data, time_axis)
    if auto_structure(temporal_psf):
        raise ValueError(f"temporal_psf {temporal_psf!r}: 'auto:STRUCTURE' is for the spatial PSF; give 'auto'")
    structure = auto_structure(spatial_psf) if structure is None else structure
    references = None if structure is None else resolve_reference(structure)
    tables, sigmas = [], []
    for k in range(min(len(stacks), max_stacks)):
        stack = np.asarray(stacks[k][ts, ys, xs])
        scale = measurement_scale(stack, name="data")
        sigma01 = stack_noise_sigma(stack, scale, "auto")
        unit = scale.to_unit(stack)
        tables.append(spectral_table(unit, sigma01))
        if k == 0:
            first = (unit, sigma01)  # the drift model's data
        sigmas.append(sigma01 * scale.span)
    table = tables[0] if len(tables) == 1 else pooled_table(tables)
    search = _Search(SpectralFit(table))
    known_t, known_s = known_temporal(temporal_psf), known_spatial(spatial_psf)
    scores = _fit_scores(search, known_t, None if known_s is None else math.hypot(known_s, rules.native_spatial_sigma))
    if motion and known_t is None:
        fit = fit_motion(first[0], motion_candidates(None if scores["box"] is None else scores["box"]["frames"]), first[1])
        scores["motion"] = None if fit is None else fit.to_dict()
    if references is not None and known_s is None:  # at the temporal PSF decided without it
        scores["reference"] = spatial_against(table, known_t or decide(scores, rules)[0], references)
    temporal, spatial, confidence = decide(scores, rules)
    if known_t is not None:
        temporal, confidence["temporal_psf"] = str(temporal_psf), {"kind": "given"}
    if known_s is not None:
        spatial, confidence["spatial_psf"] = str(spatial_psf), {"kind": "given"}
    noise = float(np.sqrt(np.mean(np.square(sigmas))))
    spectral = noise * scores["noise_factor"]
    confidence["noise_sigma"] = {"interval": sorted([round(noise, 6), round(spectral, 6)]), "unit": "data units",
                                 "spectral_floor": round(spectral, 6),
                                 "level": "high" if abs(math.log(scores["noise_factor"])) < 0.1 else "medium"}
    confidence["frames_used"], confidence["pixels_used"] = table.frames, list(stack.shape[1:])
    return BlurEstimate(temporal, spatial, noise, confidence, round(time.perf_counter() - start, 3), scores)


def resolve_auto(data, operator, time_axis: int = 0, prior=None):
    """``operator`` with its ``"auto"`` PSFs replaced by :func:`estimate_blur`'s, and the estimate's record.
    A plain ``"auto"`` spatial PSF is measured against ``prior``'s training images when it carries them
    (:func:`~napari_svi.estimate_reference.prior_references`).

    Returns ``(operator, record)``; ``record`` is ``None`` (and ``operator`` unchanged) when neither
    PSF is ``"auto"``. An estimate needs the full-resolution, fully observed stack: ``"auto"`` with a
    mask, downsampling or temporal subsampling is refused (``ValueError``) before any heavy work.
    """
    from dataclasses import replace as replaced

    if operator is None or not (is_auto(operator.temporal_psf) or is_auto(operator.spatial_psf)):
        return operator, None
    for name, value in (("mask", operator.mask is not None), ("downsample", operator.downsample != 1),
                        ("temporal_subsample", operator.temporal_subsample != 1)):
        if value:
            raise ValueError(f"temporal_psf/spatial_psf 'auto' estimates the blur from a fully observed stack at "
                             f"full resolution; it does not work with {name} (give the PSFs instead)")
    plain = is_auto(operator.spatial_psf) and auto_structure(operator.spatial_psf) is None
    est = estimate_blur(data, time_axis=time_axis, temporal_psf=operator.temporal_psf, spatial_psf=operator.spatial_psf,
                        structure=prior_references(prior) if plain else None)
    record = {"requested": {"temporal_psf": str(operator.temporal_psf), "spatial_psf": str(operator.spatial_psf)},
              **est.to_dict()}
    resolved = replaced(operator,
                        temporal_psf=est.temporal_psf if is_auto(operator.temporal_psf) else operator.temporal_psf,
                        spatial_psf=est.spatial_psf if is_auto(operator.spatial_psf) else operator.spatial_psf)
    for field_name in ("temporal_psf", "spatial_psf"):
        if getattr(resolved, field_name) == "none":
            setattr(resolved, field_name, None)
    return resolved, record
