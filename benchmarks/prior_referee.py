"""Trial (not in the package): the prior as the referee of the spatial blur, where the spectrum cannot tell.

Calibrated on the dev clips (``estimate_prior_trial.py --save``), then measured once on the held-out
restores (``estimate_blind.py --referee restored``): it lost there (-0.96 dB against -0.84 dB without it;
``results/estimate/attempts_2026-12-04.md`` section 7), so :func:`napari_svi.estimate.estimate_blur` does
not call it.

The spectral fit of :mod:`napari_svi.estimate_fit` reads a structure's own softness and an added
blur of about a pixel alike: actin with no added blur fits 0.84-1.22 px, nuclei with 1 px added
1.02-1.25 px (``benchmarks/results/estimate/attempts_2026-12-04.md``, sections 5 and 6). What tells them
apart is what the structure looks like sharp, which the prior knows. :func:`judge_spatial` restores a
small window of the stack with growing spatial sigmas and lets the prior redraw each restore's fine
detail with no data term: diffused to timestep ``t0`` (one noise draw shared by every candidate and
frame) and taken back by a few deterministic DDIM steps. A denoiser's mean never invents detail, so
the redraw always removes some fine power; from a restore that is over-sharpened (the PSF wider than
the truth: ringing, amplified noise) it removes much more. The widest sigma whose redraw removes at
most ``ratio_max`` times what the redraw of the restore with no spatial PSF removes (log2 of the power
above ``cut`` cycles per pixel) is the answer.

It costs one small restore per candidate (64 px, 10 frames), so it is asked only where the spectral
answer is "none" and its fitted sigma lies where the two readings overlap (:class:`JudgeRules`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

#: Spatial sigmas (pixels) the referee tries, in this order, after the restore with none.
JUDGE_SIGMAS = (0.75, 1.0, 1.25)


@dataclass(frozen=True)
class JudgeRules:
    """When the referee is asked and how its statistic becomes an answer (calibrated on the dev clips,
    ``benchmarks/estimate_prior_trial.py``; never on the held-out ones)."""

    #: Asked where the spectral answer is "none" and the fitted sigma (native blur included) is in here.
    fitted_range: tuple[float, float] = (0.3, 1.45)
    #: The widest candidate whose redraw removes at most this many times the log2 fine power that the
    #: redraw of the restore with no spatial PSF removes.
    ratio_max: float = 1.3
    #: Fine power: above this many cycles per pixel.
    cut: float = 0.1
    #: The redraw: diffused to this timestep, then this many DDIM steps back.
    t0: int = 150
    steps: int = 4
    #: The window restored: at most this many pixels per side (the most structured) and frames (the middle).
    size: int = 64
    frames: int = 10
    seed: int = 0


DEFAULT_JUDGE = JudgeRules()


def fine_power(x: np.ndarray, cut: float) -> float:
    """Mean power of the frames' 2-D spectrum above ``cut`` cycles per pixel (each frame's mean removed)."""
    f = np.fft.fft2(x - x.mean(axis=(-2, -1), keepdims=True))
    fy, fx = np.meshgrid(np.fft.fftfreq(x.shape[-2]), np.fft.fftfreq(x.shape[-1]), indexing="ij")
    return float(np.mean(np.abs(f[:, np.hypot(fy, fx) > cut]) ** 2))


def redraw(prior, x01: np.ndarray, t0: int, steps: int, seed: int) -> np.ndarray:
    """``x01`` (T, H, W on [0, 1]) diffused to ``t0`` with one noise draw for all frames, then ``steps``
    deterministic DDIM steps back to 0 with no data term."""
    import torch

    abar = prior.alphas_cumprod
    ts = np.linspace(t0, 0, steps + 1).round().astype(int)
    device = next(iter(prior.parameters()), torch.empty(0)).device
    z = torch.randn((1, 1, *x01.shape[1:]), generator=torch.Generator().manual_seed(seed)).to(device)
    x = torch.as_tensor(2 * x01 - 1, dtype=torch.float32, device=device)[:, None]
    a = float(abar[ts[0]])
    x = math.sqrt(a) * x + math.sqrt(1 - a) * z.expand(x.shape)
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):
        a, a_next = float(abar[t]), float(abar[t_next]) if t_next > 0 else 1.0
        with torch.inference_mode():
            eps = prior.predict_noise(x, torch.full((x.shape[0],), int(t), dtype=torch.long, device=device))
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps
    return ((x[:, 0].double().cpu().numpy() + 1) / 2)


def over_sharpened(gain: float, gain_none: float, rules: JudgeRules = DEFAULT_JUDGE) -> bool:
    """A candidate's redraw removes more than ``ratio_max`` times the log2 fine power that none's removes."""
    return gain / min(gain_none, -1e-6) > rules.ratio_max


def judge_window(stack: np.ndarray, rules: JudgeRules, multiple: int) -> tuple[slice, slice, slice] | None:
    """The middle ``rules.frames`` frames and the most structured square of ``rules.size`` pixels (a
    multiple of the prior's ``multiple``), as slices of ``stack`` (T, H, W); ``None`` if under 16 px."""
    t, h, w = stack.shape
    size = min(rules.size, h, w) // multiple * multiple
    if size < 16:
        return None
    t0 = max(0, (t - rules.frames) // 2)
    mean = np.asarray(stack[t0 : t0 + rules.frames], dtype=np.float64).mean(axis=0)
    step = max(size // 4, 1)
    corners = [(r, c) for r in range(0, h - size + 1, step) for c in range(0, w - size + 1, step)]
    r, c = max(corners, key=lambda rc: float(mean[rc[0] : rc[0] + size, rc[1] : rc[1] + size].var()))
    return slice(t0, t0 + rules.frames), slice(r, r + size), slice(c, c + size)


def judge_spatial(stack, temporal_psf: str, prior, restore_window, rules: JudgeRules = DEFAULT_JUDGE):
    """Generator: yields ``{"candidate": sigma}`` before each restore and returns the referee's record.

    ``stack`` (T, H, W) in data units, ``temporal_psf`` the spec to restore with, ``prior`` the loaded
    :class:`~napari_svi.priors.base.DiffusionPrior`, and ``restore_window(data, operator)`` the restore
    (defaults but the prior). The record: ``sigma`` (0 for none), ``gains`` (log2 of the redrawn
    over the restored fine power, per candidate), the window, the rules and the seconds taken; ``None``
    when the frames are too small to judge.
    """
    from napari_svi.intensity import measurement_scale
    from napari_svi.operators import OperatorSpec

    start = time.perf_counter()
    where = judge_window(stack, rules, getattr(prior, "size_multiple", 1))
    if where is None:
        return None
    window = np.asarray(stack[where], dtype=np.float32)
    scale = measurement_scale(window, name="data")
    temporal = None if temporal_psf == "none" else temporal_psf
    gains, chosen = {}, 0.0
    for sigma in (0.0, *JUDGE_SIGMAS):
        yield {"candidate": sigma}
        op = OperatorSpec(temporal_psf=temporal, spatial_psf=None if sigma == 0 else f"gaussian:{sigma:g}")
        x01 = scale.to_unit(restore_window(window, op)).astype(np.float64)
        fine = max(fine_power(x01, rules.cut), 1e-30)
        gains[sigma] = math.log2(max(fine_power(redraw(prior, x01, rules.t0, rules.steps, rules.seed), rules.cut), 1e-30) / fine)
        if sigma > 0:
            if over_sharpened(gains[sigma], gains[0.0], rules):
                break
            chosen = sigma
    return {"sigma": chosen, "gains": {f"{k:g}": round(v, 4) for k, v in gains.items()},
            "window": {"frames": [where[0].start, where[0].stop], "rows": [where[1].start, where[1].stop],
                       "columns": [where[2].start, where[2].stop]},
            "rules": asdict(rules), "seconds": round(time.perf_counter() - start, 2)}


def asks(spatial_psf: str, spatial_confidence: dict, rules: JudgeRules = DEFAULT_JUDGE) -> bool:
    """The spectral answer is one the referee is asked about: "none" with a fitted sigma in ``fitted_range``."""
    lo, hi = rules.fitted_range
    return spatial_psf == "none" and lo <= float(spatial_confidence.get("fitted_sigma_px", -1.0)) <= hi


def referee(stack, temporal_psf: str, spatial_psf: str, spatial_confidence: dict, prior, restore_window,
            rules: JudgeRules = DEFAULT_JUDGE):
    """Generator (as :func:`judge_spatial`): the spatial answer and its confidence after the referee.

    Returns ``(spatial_psf, spatial_confidence)``: unchanged where the referee is not asked (:func:`asks`);
    else the referee's sigma (or "none"), the confidence marked ``"method": "prior referee"`` with its
    record under ``"referee"`` and the spectral answer under ``"spectral"``.
    """
    if not asks(spatial_psf, spatial_confidence, rules):
        return spatial_psf, spatial_confidence
    record = yield from judge_spatial(stack, temporal_psf, prior, restore_window, rules)
    if record is None:
        return spatial_psf, spatial_confidence
    sigma = record["sigma"]
    chosen = "none" if sigma == 0 else f"gaussian:{sigma:g}"
    tried = sorted(float(k) for k in record["gains"])
    above = [s for s in tried if s > sigma]
    conf = dict(spatial_confidence, kind=chosen.split(":")[0], method="prior referee", spectral=spatial_psf,
                referee=record, interval=[sigma, above[0] if above else sigma],
                level="medium" if above else "low")
    return chosen, conf


def dev_losses(cases_file: str, records_dev: str, rules: JudgeRules = DEFAULT_JUDGE) -> dict:
    """Offline, from ``estimate_prior_trial.py --save`` cases (PSNR and gains on a grid of sigmas) and the
    dev records' spectral answers: the mean and worst PSNR loss against the true PSF's restore, with the
    spectral answer alone and with the referee (the sigma nearest each answer on the grid)."""
    import json

    from napari_svi.estimate import decide

    spectral = {}
    for r in json.loads(open(records_dev).read()):
        _, s, conf = decide(r["scores"])
        spectral[(r["clip"], r["temporal"], r["spatial"], r["noise"])] = (s, conf["spatial_psf"])
    cases = [json.loads(line) for line in open(cases_file)]
    grid = sorted(float(k) for k in cases[0]["candidates"])

    def quality(case, sigma):
        return case["candidates"][f"{min(grid, key=lambda g: abs(g - sigma)):g}"]["psnr"]

    def refereed(case, s, conf):
        if not asks(s, conf, rules):
            return 0.0 if s == "none" else float(s.split(":")[1])
        gains, chosen = case["candidates"], 0.0
        g0 = gains["0"]["gain"][f"{rules.cut:g}"]
        for sigma in JUDGE_SIGMAS:
            if over_sharpened(gains[f"{sigma:g}"]["gain"][f"{rules.cut:g}"], g0, rules):
                break
            chosen = sigma
        return chosen

    out = {"spectral": [], "referee": []}
    for case in cases:
        s, conf = spectral[(case["clip"], case["temporal"], case["spatial"], case["noise"])]
        best = quality(case, 0.0 if case["spatial"] == "none" else float(case["spatial"].split(":")[1]))
        out["spectral"].append(quality(case, 0.0 if s == "none" else float(s.split(":")[1])) - best)
        out["referee"].append(quality(case, refereed(case, s, conf)) - best)
    return {k: {"mean": round(float(np.mean(v)), 3), "worst": round(float(np.min(v)), 3), "cases": len(v)}
            for k, v in out.items()}


if __name__ == "__main__":  # python benchmarks/prior_referee.py CASES.jsonl RECORDS_DEV.json
    import sys

    print(dev_losses(sys.argv[1], sys.argv[2]))
