"""Blind PSF estimation (``napari-svi estimate``) on clips degraded with known settings.

Clips: the realistic suite's held-out clips (``--clips heldout``: the nuclei time-lapse's held-out
half and the drifting held-out crops of actin, mitochondria and maize walls, via
``napari_svi.benchmark.suite.load_clip``), or the calibration clips (``--clips dev``) that set the
estimator's decision rules: the LEFT halves of the same stills (``--dev-data``, default
``../shared/data``) and the training half of the nuclei time-lapse, which the held-out clips never
overlap. Each clip is degraded by the project's forward model with a temporal PSF (none, a box of
3-9 frames, a Gaussian of 0.5-2 frames), a spatial Gaussian (none, 1, 2 px) and noise (Gaussian,
std 0.01 of the truth's 99.9th percentile; or Poisson-Gaussian, 300 photons there plus 2 photons of
read noise: ``napari_svi.benchmark.quality.make_measurement``).

A hit: a box within one frame of the true length, a Gaussian sigma within 25 %, "none" where
there is no blur. ``--restore N`` also restores N cases (crop 64, 10 frames, default settings) with
the estimated and with the true PSFs and reports the PSNR of both. ``--calibrate`` (dev records)
searches the decision rules that maximise the hit rate and prints them.

    OMP_NUM_THREADS=1 python benchmarks/estimate_blind.py --clips heldout -o benchmarks/results/estimate
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

TEMPORAL = ["none", *(f"uniform:{k}" for k in range(3, 10)), "gaussian:0.5", "gaussian:1", "gaussian:1.5", "gaussian:2"]
SPATIAL = ["none", "gaussian:1", "gaussian:2"]
NOISE = {"gauss": "Gaussian, std 0.01 of the peak", "pg300": "Poisson-Gaussian, 300 photons + 2 read"}

def _heldout() -> tuple[str, ...]:
    """The realistic suite's held-out clips (``napari_svi.benchmark.suite.SUITE_CLIPS``)."""
    from napari_svi.benchmark.suite import SUITE_CLIPS

    return tuple(SUITE_CLIPS)


HELDOUT = _heldout()
DEV = ("nuclei-train", "actin-left", "mito-left", "walls-left", "bpae-nuclei-left")
#: The structure each clip shows, named to the estimate with ``--structure named`` (estimate_reference.STRUCTURES).
STRUCTURE_OF = {"nuclei": "nuclei", "actin": "actin", "mito": "mitochondria", "walls": "walls", "nuclei-train": "nuclei",
                "actin-left": "actin", "mito-left": "mitochondria", "walls-left": "walls", "bpae-nuclei-left": "nuclei"}
_DEV_FILES = {"actin-left": "BPAE_actin.tif", "mito-left": "BPAE_mito.tif", "walls-left": "maize_clsm.tif",
              "bpae-nuclei-left": "BPAE_nuclei.tif"}


def window_corner(image: np.ndarray, size: int = 192) -> tuple[int, int]:
    """Top-left corner of the most structured ``size`` window of an image's LEFT half."""
    from scipy import ndimage

    h, w = image.shape
    half = ndimage.gaussian_filter(image[:, : w // 2].astype(np.float64), 1.0)
    best, corner = -1.0, (0, 0)
    for r in range(0, h - size + 1, 16):
        for c in range(0, half.shape[1] - size + 1, 16):
            v = float(half[r : r + size, c : c + size].var())
            if v > best:
                best, corner = v, (r, c)
    return corner


def left_window(image: np.ndarray, size: int = 192) -> np.ndarray:
    """The most structured ``size`` window of an image's LEFT half (as the suite's held-out cut, mirrored)."""
    r, c = window_corner(image, size)
    return np.ascontiguousarray(image[r : r + size, c : c + size], dtype=np.float32)


def load(name: str, frames: int, crop: int, dev_data: Path) -> np.ndarray:
    """The ground-truth clip ``(frames, crop, crop)``."""
    from napari_svi.benchmark.quality import prepare_truth
    from napari_svi.benchmark.suite import load_clip, pseudo_timelapse

    if name in HELDOUT:
        return load_clip(name, frames, crop)[0]
    if name == "nuclei-train":
        from napari_svi.datasets import HELD_OUT_FIRST_COLUMN, load_bio_sample

        return prepare_truth(load_bio_sample("2D_timelapse.tif")[:, :, :HELD_OUT_FIRST_COLUMN], frames=frames, crop=crop)[0]
    import tifffile

    return pseudo_timelapse(left_window(tifffile.imread(dev_data / _DEV_FILES[name])), frames, crop)


def measure(truth: np.ndarray, temporal: str, spatial: str, noise: str, seed: int = 0):
    """The measurement and its forward model (``Task`` of the quality benchmark)."""
    from napari_svi.benchmark.quality import QualitySettings, Task, make_measurement
    from napari_svi.degrade import degrade

    task = Task("estimate", "", temporal_psf=None if temporal == "none" else temporal,
                spatial_psf=None if spatial == "none" else spatial, peak_photons=300)
    if noise == "pg300":
        y, spec, _ = make_measurement(truth, task, QualitySettings(seed=seed, read_noise_photons=2.0))
        return y, spec
    spec = task.spec(truth.shape)
    return degrade(truth, spec, noise_sigma=0.01 * float(np.percentile(truth, 99.9)), seed=seed), spec


def _parse(spec: str) -> tuple[str, float]:
    kind, _, value = spec.partition(":")
    return kind, float(value) if value else 0.0


def hit(true: str, est: str) -> bool:
    (tk, tv), (ek, ev) = _parse(true), _parse(est)
    if tk == "none":
        return ek == "none"
    if tk == "uniform":
        return ek == "uniform" and abs(ev - tv) <= 1
    return ek == "gaussian" and abs(ev - tv) <= 0.25 * tv


def error(true: str, est: str) -> float | None:
    """Error of the blur width: box length (frames) or sigma (relative); None across kinds."""
    (tk, tv), (ek, ev) = _parse(true), _parse(est)
    if tk != ek:
        return None
    return 0.0 if tk == "none" else (ev - tv) if tk == "uniform" else (ev - tv) / tv


def trained_prior_reference(structure: str, dev_data: Path) -> list:
    """The reference ``napari-svi train`` writes into a prior trained on ``structure``'s training images alone (as a
    lab trains a prior on its own specimen): the left half of its shared still, or the nuclei time-lapse's training
    half (every 6th frame); the UNet itself is not trained, the estimate does not use it."""
    import tempfile

    import tifffile

    from napari_svi.estimate_reference import prior_references, write_training_reference
    from napari_svi.training import TrainConfig, prepare_frames

    if structure == "nuclei":
        from napari_svi.datasets import HELD_OUT_FIRST_COLUMN, load_bio_sample

        images = list(load_bio_sample("2D_timelapse.tif")[::6, :, :HELD_OUT_FIRST_COLUMN])
    else:
        file = {"actin": "BPAE_actin.tif", "mitochondria": "BPAE_mito.tif", "walls": "maize_clsm.tif"}[structure]
        img = tifffile.imread(dev_data / file)
        images = [img[:, : img.shape[1] // 2]]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / f"{structure}-prior"
        folder.mkdir()
        config = TrainConfig()
        write_training_reference(folder, prepare_frames(images, config.percentiles, min_size=config.patch_size), [structure])
        return prior_references(folder)


def run_cases(clips, frames: int, crop: int, dev_data: Path, progress=print, named: bool = False,
              prior: bool = False) -> list[dict]:
    """Estimate every case of ``clips``; ``named``: with the clip's structure named (:data:`STRUCTURE_OF`); ``prior``:
    plain ``auto`` with a prior trained on the clip's structure (:func:`trained_prior_reference`)."""
    from napari_svi.estimate import estimate_blur

    records = []
    for name in clips:
        truth = load(name, frames, crop, dev_data)
        if prior:
            named, references = True, trained_prior_reference(STRUCTURE_OF[name], dev_data)
        else:
            references = STRUCTURE_OF[name]
        for temporal, spatial, noise in itertools.product(TEMPORAL, SPATIAL, NOISE):
            y, _ = measure(truth, temporal, spatial, noise)
            est = estimate_blur(y, structure=references if named else None)
            rec = {"clip": name, "temporal": temporal, "spatial": spatial, "noise": noise,
                   "est_temporal": est.temporal_psf, "est_spatial": est.spatial_psf, "noise_sigma": est.noise_sigma,
                   "seconds": est.seconds, "confidence": est.confidence, "scores": _jsonable(est.scores)}
            score(rec)
            records.append(rec)
            progress(f"{name:16s} {temporal:12s} {spatial:12s} {noise:6s} -> {rec['est_temporal']:14s} "
                     f"{rec['est_spatial']:14s} {'T' if rec['hit_temporal'] else '.'}{'S' if rec['hit_spatial'] else '.'} "
                     f"{est.seconds:.1f} s")
    return records


def score(rec: dict) -> dict:
    rec["hit_temporal"] = hit(rec["temporal"], rec["est_temporal"])
    rec["hit_spatial"] = hit(rec["spatial"], rec["est_spatial"])
    rec["hit"] = rec["hit_temporal"] and rec["hit_spatial"]
    rec["error_temporal"] = error(rec["temporal"], rec["est_temporal"])
    rec["error_spatial"] = error(rec["spatial"], rec["est_spatial"])
    return rec


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=float))


def summary(records: list[dict]) -> dict:
    def rate(rows, key):
        return round(float(np.mean([r[key] for r in rows])), 3) if rows else None

    out = {"cases": len(records), "hit_both": rate(records, "hit"), "hit_temporal": rate(records, "hit_temporal"),
           "hit_spatial": rate(records, "hit_spatial"), "hit_either_counted_separately": rate(
               [{"h": h} for r in records for h in (r["hit_temporal"], r["hit_spatial"])], "h"),
           "temporal_by_kind": {}, "spatial_by_kind": {}, "by_clip": {}, "by_noise": {},
           "seconds_mean": round(float(np.mean([r["seconds"] for r in records])), 2)}
    for kind in ("none", "uniform", "gaussian"):
        rows = [r for r in records if _parse(r["temporal"])[0] == kind]
        out["temporal_by_kind"][kind] = {"n": len(rows), "hit": rate(rows, "hit_temporal")}
        rows = [r for r in records if _parse(r["spatial"])[0] == kind]
        if rows:
            out["spatial_by_kind"][kind] = {"n": len(rows), "hit": rate(rows, "hit_spatial")}
    out["interval_coverage"] = interval_coverage(records)
    for key, field in (("by_clip", "clip"), ("by_noise", "noise")):
        for value in dict.fromkeys(r[field] for r in records):
            rows = [r for r in records if r[field] == value]
            out[key][value] = {"temporal": rate(rows, "hit_temporal"), "spatial": rate(rows, "hit_spatial"),
                               "both": rate(rows, "hit")}
    return out


def interval_coverage(records: list[dict]) -> dict:
    """Of the cases whose blur kind was read right (and is not "none"), the share whose true width lies in
    the interval the estimate reported; the temporal PSF by the model that answered."""
    groups: dict[str, list[bool]] = {}
    for r in records:
        for key in ("temporal", "spatial"):
            kind, value = _parse(r[key])
            conf = r["confidence"][f"{key}_psf"]
            if kind == "none" or _parse(r[f"est_{key}"])[0] != kind or not conf.get("interval"):
                continue
            lo, hi = conf["interval"]
            name = key if key == "spatial" else f"temporal, {conf.get('method', 'spectrum')}"
            groups.setdefault(name, []).append(lo - 1e-6 <= value <= hi + 1e-6)
    return {k: {"n": len(v), "covered": round(float(np.mean(v)), 3)} for k, v in sorted(groups.items())}


def drift_interval_calibration(records: list[dict]) -> dict:
    """How far the drift model's answers of the right kind strayed (as decided in ``records``, by the default
    rules): the 50, 80 and 90 % quantiles of sigma's ratio to the truth (either way) and of the box's error
    in frames; the 90 % ones set ``napari_svi.estimate_drift.INTERVAL_FACTOR`` and ``INTERVAL_FRAMES``."""
    ratio, frames = [], []
    for r in records:
        if r["confidence"]["temporal_psf"].get("method") != "drift model":
            continue
        (tk, tv), (ek, ev) = _parse(r["temporal"]), _parse(r["est_temporal"])
        if tk == ek == "gaussian":
            ratio.append(abs(np.log(ev / tv)))
        elif tk == ek == "uniform":
            frames.append(abs(ev - tv))
    q = (0.5, 0.8, 0.9)
    return {"gaussian_ratio": {"n": len(ratio), "quantiles": [round(float(np.exp(v)), 3) for v in np.quantile(ratio, q)]}
            if ratio else None,
            "box_frames": {"n": len(frames), "quantiles": [float(v) for v in np.quantile(frames, q)]} if frames else None,
            "quantile_levels": list(q)}


def calibrate(records: list[dict]) -> dict:
    """The decision rules that maximise the temporal and the spatial hit rate on ``records``, next to the
    rates of the defaults (ties: the first on the grid). Searched apart, each group with the others at
    their defaults: the spectral temporal rules, the spatial ones (they do not interact) and the gate of
    the drift model (``motion_*``)."""
    from napari_svi.estimate import DEFAULT_RULES, decide

    grids = {  # name: (which answer of decide() it is scored on, the grid)
        "temporal": (0, {"gaussian_margin": (-0.4, -0.3, -0.2, -0.1, 0.0, 0.1), "none_margin": (0.0, 0.1, 0.2, 0.3),
                         "min_temporal_sigma": (0.3, 0.35, 0.4, 0.45)}),
        "temporal, drift model": (0, {"motion_margin": (0.0, 0.5, 1.0, 2.0, 3.0, 5.0),
                                      "motion_residual_max": (1.2, 1.5, 3.0),
                                      "motion_gain_min": (1.2, 1.5, 2.0, 2.5, 3.0)}),
        "spatial": (1, {"native_spatial_sigma": (0.0, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3),
                        "min_spatial_sigma": (0.4, 0.5, 0.6, 0.7, 0.8)}),
    }

    def rate(rules, which: int) -> float:
        key = ("temporal", "spatial")[which]
        return float(np.mean([hit(r[key], decide(r["scores"], rules)[which]) for r in records]))

    out = {}
    for name, (which, grid) in grids.items():
        best, best_rate = None, -1.0
        for values in itertools.product(*grid.values()):
            rules = replace(DEFAULT_RULES, **dict(zip(grid, values, strict=True)))
            r = rate(rules, which)
            if r > best_rate + 1e-12:
                best, best_rate = {k: getattr(rules, k) for k in grid}, r
        out[name] = {"best_rules": best, "best_hit_rate": round(best_rate, 3),
                     "default_rules": {k: getattr(DEFAULT_RULES, k) for k in grid},
                     "default_hit_rate": round(rate(DEFAULT_RULES, which), 3)}
    out["drift model interval"] = drift_interval_calibration(records)
    return out


def markdown(records: list[dict], summ: dict, header: dict, restores: list[dict]) -> str:
    lines = ["# Blind PSF estimation", "", f"Command: `{header['command']}`", "",
             *([f"(estimates and likelihoods read from `{header['estimates_from']}`, made by "
                "`OMP_NUM_THREADS=1 python benchmarks/estimate_blind.py` with the same clips, in shards of "
                "`--only CLIP,... --save-records FILE`, and decided again by the current rules)", ""]
               if header.get("estimates_from") else []),
             f"Clips: {', '.join(header['clips'])}; {header['frames']} frames, crop {header['crop']} px; "
             f"noise: {'; '.join(f'{k}: {v}' for k, v in NOISE.items())}.", "",
             "A hit: box within one frame, Gaussian sigma within 25 %, 'none' where there is no blur.", "",
             "## Hit rates", "", "| | hit rate | cases |", "|---|---|---|",
             f"| temporal PSF | {summ['hit_temporal']:.2f} | {summ['cases']} |",
             f"| spatial PSF | {summ['hit_spatial']:.2f} | {summ['cases']} |",
             f"| both right in one case | {summ['hit_both']:.2f} | {summ['cases']} |"]
    for kind, v in summ["temporal_by_kind"].items():
        lines.append(f"| temporal, true {kind} | {v['hit']:.2f} | {v['n']} |")
    for kind, v in summ["spatial_by_kind"].items():
        lines.append(f"| spatial, true {kind} | {v['hit']:.2f} | {v['n']} |")
    lines += ["", "| clip / noise | temporal | spatial | both |", "|---|---|---|---|"]
    for group in ("by_clip", "by_noise"):
        for k, v in summ[group].items():
            lines.append(f"| {k} | {v['temporal']:.2f} | {v['spatial']:.2f} | {v['both']:.2f} |")
    lines += ["", "Intervals: of the cases whose kind was read right (not none), the share whose true width lies in the "
              "reported interval.", "", "| PSF, model | covered | cases |", "|---|---|---|"]
    for k, v in summ.get("interval_coverage", {}).items():
        lines.append(f"| {k} | {v['covered']:.2f} | {v['n']} |")
    lines += ["", f"Mean time per estimate: {summ['seconds_mean']:.1f} s ({header['machine']}).", ""]
    if restores:
        lines += ["## Restore with `auto` against the true PSF", "",
                  "| clip | true temporal | true spatial | noise | estimated | PSNR true PSF | PSNR auto | auto - true |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in restores:
            lines.append(f"| {r['clip']} | {r['temporal']} | {r['spatial']} | {r['noise']} | {r['est_temporal']}, "
                         f"{r['est_spatial']} | {r['psnr_true']:.2f} | {r['psnr_auto']:.2f} | {r['psnr_auto'] - r['psnr_true']:+.2f} |")
        diff = [r["psnr_auto"] - r["psnr_true"] for r in restores]
        lines += ["", f"Mean auto - true: {np.mean(diff):+.2f} dB over {len(diff)} cases "
                  f"(measurement {np.mean([r['psnr_measurement'] for r in restores]):.2f} dB).", ""]
    def err(value, kind: str) -> str:
        if value is None:
            return "other kind"
        return f"{value:+.0f} frames" if kind == "uniform" else f"{100 * value:+.0f} %" if kind == "gaussian" else "0"

    lines += ["## Every case", "", "Error: estimated minus true box length (frames), or relative error of a Gaussian sigma.",
              "", "| clip | temporal | spatial | noise | estimated temporal | error | estimated spatial | error | hit T/S |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['clip']} | {r['temporal']} | {r['spatial']} | {r['noise']} | {r['est_temporal']} | "
                     f"{err(r['error_temporal'], _parse(r['temporal'])[0])} | {r['est_spatial']} | "
                     f"{err(r['error_spatial'], _parse(r['spatial'])[0])} | "
                     f"{'T' if r['hit_temporal'] else '.'}{'S' if r['hit_spatial'] else '.'} |")
    return "\n".join(lines) + "\n"


def restore_subset(records: list[dict], n: int, dev_data: Path, progress=print, threads: int = 1) -> list[dict]:
    """``n`` blurred cases spread over clips and settings: restore a 10-frame, 64-px clip degraded the same way
    (defaults, ``threads`` torch threads) with the PSFs estimated for the case (from its full-size measurement) and with
    the true PSFs; PSNR against the truth on its range."""
    from napari_svi.benchmark.metrics import psnr, truth_scale
    from napari_svi.operators import OperatorSpec
    from napari_svi.restore import restore

    picked = _picked(records, n)
    out = []
    for r in picked:
        truth = load(r["clip"], 10, 64, dev_data)
        y, spec = measure(truth, r["temporal"], r["spatial"], r["noise"])
        auto = OperatorSpec(temporal_psf=None if r["est_temporal"] == "none" else r["est_temporal"],
                            spatial_psf=None if r["est_spatial"] == "none" else r["est_spatial"])
        scale = truth_scale(truth)
        row = {k: r[k] for k in ("clip", "temporal", "spatial", "noise")}
        row.update(est_temporal=r["est_temporal"], est_spatial=r["est_spatial"],
                   psnr_measurement=psnr(scale.to_unit(truth), scale.to_unit(y)))
        same = (r["est_temporal"], r["est_spatial"]) == (r["temporal"], r["spatial"])
        for label, op in (("true", spec), ("auto", auto)):
            if label == "auto" and same:  # the estimate is the truth: the same restore
                row["psnr_auto"], row["seconds_auto"] = row["psnr_true"], row["seconds_true"]
                continue
            t0 = time.perf_counter()
            res = restore(y, op, threads=threads)
            row[f"psnr_{label}"] = psnr(scale.to_unit(truth), scale.to_unit(res.restored))
            row[f"seconds_{label}"] = round(time.perf_counter() - t0, 1)
        out.append(row)
        progress(f"restore {row['clip']} {row['temporal']} {row['spatial']} {row['noise']}: auto {row['est_temporal']} "
                 f"{row['est_spatial']} {row['psnr_auto']:.2f} dB, true {row['psnr_true']:.2f} dB")
    return out


def referee_cases(records: list[dict], only: list[dict] | None, frames: int, crop: int, dev_data: Path,
                  cache: Path | None, threads: int, progress=print) -> None:
    """Ask the prior referee (the trial ``prior_referee.py``, not in the package) about every record it would be asked about
    (all, or those in ``only``), as ``restore --spatial-psf auto`` does, on the same measurement the
    estimate saw; the record's spatial answer, confidence and hit are updated in place. Answers are kept
    in ``cache`` (by case) and reused."""
    from prior_referee import asks, referee

    from napari_svi.priors.loading import load_prior
    from napari_svi.restore import restore

    done = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    prior = None
    for r in records if only is None else only:
        if not asks(r["est_spatial"], r["confidence"]["spatial_psf"]):
            continue
        key = "|".join(r[k] for k in ("clip", "temporal", "spatial", "noise"))
        if key not in done:
            prior = prior or load_prior("default", "cpu", channels=1)
            y, _ = measure(load(r["clip"], frames, crop, dev_data), r["temporal"], r["spatial"], r["noise"])
            run = referee(y, r["est_temporal"], r["est_spatial"], r["confidence"]["spatial_psf"], prior,
                          lambda d, op, p=prior: restore(d, op, prior=p, threads=threads).restored)
            try:
                while True:
                    next(run)
            except StopIteration as stop:
                spatial, conf = stop.value
            done[key] = {"spatial": spatial, "confidence": conf}
            if cache is not None:
                cache.write_text(json.dumps(done, indent=0, default=float))
            progress(f"referee {key}: {r['est_spatial']} -> {spatial} ({conf['referee']['seconds']:.0f} s)")
        r["est_spatial"], r["confidence"]["spatial_psf"] = done[key]["spatial"], done[key]["confidence"]
        score(r)


def _picked(records: list[dict], n: int) -> list[dict]:
    """The ``n`` blurred cases :func:`restore_subset` restores (a fixed draw)."""
    blurred = [r for r in records if r["temporal"] != "none" or r["spatial"] != "none"]
    rng = np.random.default_rng(0)
    return [blurred[i] for i in sorted(rng.choice(len(blurred), size=min(n, len(blurred)), replace=False))]


def recheck(records: list[dict], n: int, frames: int, crop: int, dev_data: Path, progress=print) -> int:
    """Estimate the ``n`` restored cases (:func:`_picked`) again from their measurements and compare with the
    stored records' answers (after a change to the code the stored likelihoods came from); returns how
    many answers changed."""
    from napari_svi.estimate import estimate_blur

    changed, picked = 0, _picked(records, n)
    for r in picked:
        y, _ = measure(load(r["clip"], frames, crop, dev_data), r["temporal"], r["spatial"], r["noise"])
        est = estimate_blur(y)
        same = (est.temporal_psf, est.spatial_psf) == (r["est_temporal"], r["est_spatial"])
        changed += not same
        progress(f"{r['clip']} {r['temporal']} {r['spatial']} {r['noise']}: stored {r['est_temporal']} {r['est_spatial']}, "
                 f"now {est.temporal_psf} {est.spatial_psf}, noise {r['noise_sigma']:.4g} -> {est.noise_sigma:.4g}"
                 f"{'' if same else ' CHANGED'}")
    progress(f"changed {changed} of {len(picked)}")
    return changed


#: How much a wrong PSF costs a restore: (clip, true temporal, true spatial, noise, PSFs tried).
SENSITIVITY = (
    ("walls", "uniform:6", "none", "gauss", (("uniform:6", "none"), ("uniform:5", "none"), ("uniform:7", "none"),
                                             ("gaussian:1.7", "none"), ("gaussian:1.9", "none"))),
    ("mito", "none", "gaussian:1", "gauss", (("none", "gaussian:1"), ("none", "gaussian:0.65"),
                                            ("gaussian:0.5", "gaussian:0.65"), ("uniform:2", "gaussian:0.65"))),
)


def sensitivity(dev_data: Path, progress=print) -> list[dict]:
    """PSNR of restores (10 frames of 64 x 64, defaults, 1 thread) with the true and with nearby wrong PSFs."""
    from napari_svi.benchmark.metrics import psnr, truth_scale
    from napari_svi.operators import OperatorSpec
    from napari_svi.restore import restore

    out = []
    for clip, temporal, spatial, noise, tried in SENSITIVITY:
        truth = load(clip, 10, 64, dev_data)
        y, _ = measure(truth, temporal, spatial, noise)
        scale = truth_scale(truth)
        for t, sp in tried:
            op = OperatorSpec(temporal_psf=None if t == "none" else t, spatial_psf=None if sp == "none" else sp)
            value = psnr(scale.to_unit(truth), scale.to_unit(restore(y, op, threads=1).restored))
            out.append({"clip": clip, "temporal": temporal, "spatial": spatial, "noise": noise,
                        "used_temporal": t, "used_spatial": sp, "psnr": round(value, 2)})
            progress(f"sensitivity {clip} true {temporal} {spatial}: with {t} {sp} {value:.2f} dB")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", choices=("heldout", "dev"), default="heldout")
    p.add_argument("--dev-data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--restore", type=int, default=0, metavar="N", help="restore N cases with auto and true PSFs")
    p.add_argument("--sensitivity", action="store_true",
                   help="only restore two cases with the true and with nearby wrong PSFs (sensitivity.md)")
    p.add_argument("--only", default=None, metavar="CLIP,...", help="estimate only these of the clips (a shard)")
    p.add_argument("--save-records", default=None, metavar="FILE", help="write the records of this run to FILE")
    p.add_argument("--records", default=None, metavar="FILE,...",
                   help="reuse the estimates of these records files, merged (no re-estimation)")
    p.add_argument("--calibrate", action="store_true", help="print the decision rules that fit these records best")
    p.add_argument("--referee", choices=("none", "restored", "all"), default="none",
                   help="trial: ask the prior referee (prior_referee.py) where it is asked, in the restored cases or all")
    p.add_argument("--referee-cache", default=None, metavar="FILE", help="keep and reuse the referee's answers here")
    p.add_argument("--recheck", action="store_true",
                   help="only estimate the --restore cases again and compare with the stored --records")
    p.add_argument("--structure", choices=("none", "named", "prior"), default="none",
                   help="named: tell the estimate what each clip shows (STRUCTURE_OF); prior: plain auto with a prior "
                   "trained on the clip's structure alone (its references.json); none: blind to it")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the referee and the restores")
    p.add_argument("-o", "--output", default=None, help="folder for records.json, summary.json and report.md")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    clips = HELDOUT if args.clips == "heldout" else DEV
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(clips))
        if unknown:
            p.error(f"--only: {', '.join(unknown)} not among the {args.clips} clips ({', '.join(clips)})")
        clips = tuple(c for c in clips if c in args.only.split(","))
    dev_data = Path(args.dev_data)
    if args.sensitivity:
        rows = sensitivity(dev_data)
        if args.output:
            lines = ["# A restore with a wrong PSF", "", "Command: `OMP_NUM_THREADS=1 python benchmarks/estimate_blind.py "
                     "--sensitivity -o benchmarks/results/estimate`", "", "10 frames of 64 x 64, restore defaults, 1 thread.",
                     "", "| clip | true temporal | true spatial | noise | restored with | PSNR (dB) |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['clip']} | {r['temporal']} | {r['spatial']} | {r['noise']} | {r['used_temporal']}, "
                      f"{r['used_spatial']} | {r['psnr']:.2f} |" for r in rows]
            Path(args.output).mkdir(parents=True, exist_ok=True)
            (Path(args.output) / "sensitivity.md").write_text("\n".join(lines) + "\n")
        return 0
    if args.records:  # the stored likelihoods, decided again by the current rules
        from napari_svi.estimate import decide

        records = [r for f in args.records.split(",") for r in json.loads(Path(f).read_text())]
        records.sort(key=lambda r: clips.index(r["clip"]) if r["clip"] in clips else len(clips))
        for r in records:
            r["est_temporal"], r["est_spatial"], conf = decide(r["scores"])
            r["confidence"].update(conf)
            score(r)
    else:
        records = run_cases(clips, args.frames, args.crop, dev_data, named=args.structure == "named",
                            prior=args.structure == "prior")
    if args.recheck:
        recheck(records, args.restore, args.frames, args.crop, dev_data)
        return 0
    if args.referee != "none":
        referee_cases(records, _picked(records, args.restore) if args.referee == "restored" else None, args.frames,
                      args.crop, dev_data, Path(args.referee_cache) if args.referee_cache else None, args.threads)
    if args.save_records:
        Path(args.save_records).write_text(json.dumps(records, indent=0, default=float))
    if args.calibrate:
        calibration = calibrate(records)
        print(json.dumps(calibration, indent=1))
    summ = summary(records)
    print(json.dumps({k: v for k, v in summ.items() if k != "by_clip"}, indent=1))
    restores = restore_subset(records, args.restore, dev_data, threads=args.threads) if args.restore else []
    if args.output:
        import platform

        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        header = {"command": f"OMP_NUM_THREADS={args.threads} python benchmarks/estimate_blind.py " + " ".join(sys.argv[1:] if argv is None else argv),
                  "clips": list(clips), "frames": args.frames, "crop": args.crop,
                  "machine": f"{platform.processor() or platform.machine()}, {args.threads} thread(s)"}
        if args.records:
            header["estimates_from"] = args.records
        tag = f"_{args.clips}" if args.clips != "heldout" else ""
        (out / f"records{tag}.json").write_text(json.dumps(records, indent=0, default=float))
        (out / f"summary{tag}.json").write_text(json.dumps({"header": header, "summary": summ, "restores": restores}, indent=1))
        (out / f"report{tag}.md").write_text(markdown(records, summ, header, restores))
    if restores:
        print(f"auto - true PSNR: {np.mean([r['psnr_auto'] - r['psnr_true'] for r in restores]):+.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
