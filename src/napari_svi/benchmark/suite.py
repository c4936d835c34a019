"""The realistic quality suite: held-out clips of several kinds of structure, realistic degradations.

Clips (none seen by any training of the default prior):

``nuclei``
    The held-out half of the real nuclei time-lapse that ships with napari-svi (real motion).
``actin``, ``mito``, ``walls``
    Held-out crops (right halves) of real fluorescence stills: F-actin and mitochondria of BPAE
    cells, and a confocal section of maize cell walls (``benchmarks/data/suite``, CC BY 4.0; see
    its README). A still has no time axis, so each becomes a *pseudo time-lapse*: the crop drifts
    along a smooth sub-pixel path (about 0.7 px per frame with a slow wobble, cubic-spline
    resampling), the motion a long exposure integrates into a temporal blur.

Tasks (:data:`SUITE_TASKS`): symmetric time boundary, Poisson-Gaussian noise at 50 or 300 photons
at the truth's 99.9th percentile plus read noise of 2 photons; temporal box of 3-5 frames or a
Gaussian; spatial Gaussian blur of 1.5 px and a widefield Airy PSF from NA, wavelength and pixel
size; 2x and 4x block-mean downsampling; 50 % missing pixels; frame interpolation; a short stack.
Each (clip, task) runs every method of :mod:`.quality`; the classical ones are tuned on the truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from .quality import METHODS, ORACLE_METHODS, QualitySettings, Task, run_quality

#: Realistic degradations (see the module docstring); photons at the truth's 99.9th percentile.
SUITE_TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("box5-low", "box of 5 frames, 50 photons", temporal_psf="uniform:5", peak_photons=50),
        Task("box5", "box of 5 frames, 300 photons", temporal_psf="uniform:5", peak_photons=300),
        Task("gauss1.5", "Gaussian temporal PSF sigma 1.5 frames, 300 photons", temporal_psf="gaussian:1.5",
             peak_photons=300),
        Task("box3+blur1.5", "box of 3 frames + Gaussian spatial PSF sigma 1.5 px, 300 photons",
             temporal_psf="uniform:3", spatial_psf="gaussian:1.5", peak_photons=300),
        Task("box3+airy", "box of 3 frames + widefield Airy PSF (NA 1.2, 520 nm, 65 nm pixels), 300 photons",
             temporal_psf="uniform:3", spatial_psf="airy:1.2,520,65", peak_photons=300),
        Task("box3+sr2", "box of 3 frames + 2x2 downsampling, 300 photons", temporal_psf="uniform:3", downsample=2,
             peak_photons=300),
        Task("box3+sr4", "box of 3 frames + 4x4 downsampling, 300 photons", temporal_psf="uniform:3", downsample=4,
             peak_photons=300),
        Task("box5+inpaint50", "box of 5 frames + 50% of the pixels missing (per frame), 300 photons",
             temporal_psf="uniform:5", missing_fraction=0.5, peak_photons=300),
        Task("interp2", "every second frame missing, no blur, 300 photons", temporal_psf=None, temporal_subsample=2,
             peak_photons=300),
        Task("box3-short8", "a short stack of 8 frames, box of 3 frames, 50 photons", temporal_psf="uniform:3",
             peak_photons=50, frames=8),
    )
}

#: Clip name -> (file under the suite data folder or None for the shipped nuclei time-lapse, structure).
SUITE_CLIPS: dict[str, tuple[str | None, str]] = {
    "nuclei": (None, "nuclei (real time-lapse)"),
    "actin": ("BPAE_actin_heldout.tif", "actin filaments (pseudo time-lapse)"),
    "mito": ("BPAE_mito_heldout.tif", "mitochondria, organelles (pseudo time-lapse)"),
    "walls": ("maize_clsm_heldout.tif", "plant cell walls, membranes (pseudo time-lapse)"),
}


def default_data_dir() -> Path:
    """``benchmarks/data/suite`` of a source checkout (the suite's still crops are not in the wheel)."""
    return Path(__file__).resolve().parents[3] / "benchmarks" / "data" / "suite"


def drift_path(frames: int, speed_px: float = 0.7) -> np.ndarray:
    """Sub-pixel offsets ``(frames, 2)`` (rows, columns) of a smooth drift with a slow wobble, from 0."""
    t = np.arange(frames, dtype=np.float64)
    dy = speed_px * 0.8 * t + 0.6 * np.sin(0.5 * t)
    dx = speed_px * 0.6 * t + 0.6 * (1 - np.cos(0.4 * t))
    return np.stack([dy, dx], axis=1)


def pseudo_timelapse(still: np.ndarray, frames: int, crop: int, speed_px: float = 0.7) -> np.ndarray:
    """A still ``(H, W)`` drifting along :func:`drift_path`, centred crops ``(frames, crop, crop)`` float32."""
    from scipy import ndimage

    still = np.asarray(still, dtype=np.float32)
    h, w = still.shape
    path = drift_path(frames, speed_px)
    span = int(math.ceil(np.abs(path).max())) + 4
    if crop + 2 * span > min(h, w):
        raise ValueError(f"a crop of {crop} px with {frames} frames of drift needs a still of at least "
                         f"{crop + 2 * span} px, got {h} x {w}")
    r0, c0 = (h - crop) // 2, (w - crop) // 2
    out = np.empty((frames, crop, crop), dtype=np.float32)
    for k, (dy, dx) in enumerate(path):
        moved = ndimage.shift(still, (-dy, -dx), order=3, mode="reflect")
        out[k] = moved[r0 : r0 + crop, c0 : c0 + crop]
    return np.maximum(out, float(still.min()))  # cubic splines ring slightly below the darkest value


def load_clip(name: str, frames: int, crop: int, data_dir: Path | None = None) -> tuple[np.ndarray, dict]:
    """The ground-truth clip ``(frames, crop, crop)`` of suite clip ``name`` and a record of its origin."""
    from .quality import prepare_truth

    if name not in SUITE_CLIPS:
        raise ValueError(f"unknown suite clip {name!r}; choose from {list(SUITE_CLIPS)}")
    file, what = SUITE_CLIPS[name]
    if file is None:
        from ..datasets import HELD_OUT_FILE, load_heldout_timelapse

        truth, record = prepare_truth(load_heldout_timelapse(), frames=frames, crop=crop)
        return truth, {"clip": name, "structure": what, "source": HELD_OUT_FILE, **record}
    import tifffile

    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    path = folder / file
    if not path.is_file():
        raise FileNotFoundError(f"suite clip {name!r} needs {path}; give --data-dir with the suite's crops "
                                "(made by tools/make_suite_data.py)")
    truth = pseudo_timelapse(tifffile.imread(path), frames, crop)
    return truth, {"clip": name, "structure": what, "source": str(path.name), "shape": list(truth.shape),
                   "motion": "drift_path, 0.7 px/frame, cubic spline"}


def run_suite(
    prior,
    *,
    clips: tuple[str, ...] = tuple(SUITE_CLIPS),
    tasks: tuple[str, ...] = tuple(SUITE_TASKS),
    methods: tuple[str, ...] = METHODS,
    frames: int = 12,
    crop: int = 96,
    settings: QualitySettings | None = None,
    data_dir: Path | None = None,
    progress: Callable[[str], object] | None = print,
) -> dict:
    """Run every (clip, task, method); returns ``{"records", "clips", "tasks", "settings"}``.

    Each record is a :mod:`.quality` record with a ``"clip"`` key added.
    """
    settings = settings or QualitySettings()
    records, clip_records, details = [], {}, {}
    for name in clips:
        truth, record = load_clip(name, frames, crop, data_dir)
        clip_records[name] = record
        result = run_quality(truth, prior, tasks=tasks, methods=methods, settings=replace(settings),
                             progress=(lambda line, n=name: progress(f"{n:7s} {line}")) if progress else None,
                             registry=SUITE_TASKS)
        records += [{"clip": name, **r} for r in result.records]
        details[name] = result.details["tasks"]
    return {"records": records, "clips": clip_records, "details": details,
            "tasks": {k: SUITE_TASKS[k].description for k in tasks}}


def summarise(records: list[dict]) -> list[dict]:
    """Per task: the mean PSNR of every method over the clips, the best oracle-tuned classical method,
    SVI's margin over it, and the clips where SVI is below the measurement or below that method."""
    out = []
    for task in dict.fromkeys(r["task"] for r in records):
        rows = [r for r in records if r["task"] == task]
        by = {}
        for r in rows:
            by.setdefault(r["method"], {})[r["clip"]] = r["psnr"]
        means = {m: float(np.mean(list(v.values()))) for m, v in by.items()}
        oracle = [m for m in ORACLE_METHODS if m in means]
        best = max(oracle, key=means.get) if oracle else None
        entry = {"task": task, "mean_psnr": {m: round(v, 3) for m, v in means.items()}, "best_classical": best}
        if "svi" in by:
            svi = by["svi"]
            if best is not None:
                entry["svi_minus_best"] = round(means["svi"] - means[best], 3)
                entry["clips_svi_below_best"] = [c for c in svi if svi[c] < by[best].get(c, -math.inf)]
            if "measurement" in by:
                entry["clips_svi_below_measurement"] = [c for c in svi if svi[c] < by["measurement"][c]]
        out.append(entry)
    return out


def suite_markdown(result: dict, header: dict) -> str:
    """The report: the summary per task, then PSNR / SSIM per clip and task, then seconds per clip."""
    records = result["records"]
    methods = [m for m in METHODS if any(r["method"] == m for r in records)]
    lines = ["# Realistic quality suite", "", f"Command: `{header.get('command', '')}`",
             f"Machine: {header.get('machine', {})}", ""]
    lines += ["Clips: " + "; ".join(f"**{k}** {v['structure']} ({v['source']})" for k, v in result["clips"].items()), ""]
    lines += ["Tasks: " + "; ".join(f"**{k}** {v}" for k, v in result["tasks"].items()), ""]
    lines += ["## Mean PSNR (dB) over the clips, per task", "",
              "| task | " + " | ".join(methods) + " | best classical (oracle) | SVI - best | clips SVI < best | "
              "clips SVI < measurement |", "|---" * (len(methods) + 5) + "|"]
    for e in summarise(records):
        mp = e["mean_psnr"]
        cells = [f"{mp[m]:.2f}" if m in mp else "n/a" for m in methods]
        lines.append(f"| {e['task']} | " + " | ".join(cells) + f" | {e.get('best_classical')} | "
                     f"{e.get('svi_minus_best', float('nan')):+.2f} | {', '.join(e.get('clips_svi_below_best', [])) or '-'}"
                     f" | {', '.join(e.get('clips_svi_below_measurement', [])) or '-'} |")
    lines += ["", "## Per clip: PSNR (dB) / SSIM / temporal error", ""]
    lines += ["| clip | task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for clip in result["clips"]:
        for task in result["tasks"]:
            rows = {r["method"]: r for r in records if r["clip"] == clip and r["task"] == task}
            if not rows:
                continue
            cells = [f"{rows[m]['psnr']:.2f} / {rows[m]['ssim']:.3f} / {rows[m]['temporal_error']:.4f}" if m in rows
                     else "n/a" for m in methods]
            lines.append(f"| {clip} | {task} | " + " | ".join(cells) + " |")
    svi = [r for r in records if r["method"] == "svi"]
    if svi:
        lines += ["", "## Seconds per SVI restore (one call, prior loaded)", ""]
        for clip in result["clips"]:
            secs = [r["seconds"] for r in svi if r["clip"] == clip]
            lines.append(f"- {clip}: mean {np.mean(secs):.1f} s over {len(secs)} tasks (min {min(secs):.1f}, "
                         f"max {max(secs):.1f})")
    return "\n".join(lines) + "\n"
