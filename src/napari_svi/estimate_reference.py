"""The spatial blur measured against a reference: sharp images of the structure that was imaged.

The spectral model of :mod:`napari_svi.estimate_fit` takes a structure's spatial spectrum to be a power
law, so the softness a structure has of its own (nuclei are smooth blobs, filaments are not) and an
added Gaussian blur look alike: a 1 px blur on nuclei fits a smaller width than no blur on actin
(``benchmarks/results/estimate/attempts_2026-12-04.md``, section 5). Given a reference, the model's
spatial spectrum becomes the reference's own, ``A R(rho)`` (amplitude free, shape fixed), and the
Gaussian fitted on top of it is the blur *relative to the reference*. With the images the prior was
trained on as the reference, that is the blur a restore should take out.

References:

- a structure the default prior learnt (:data:`STRUCTURES`): the ring powers of its training images,
  bundled as ``priors/default/references.json`` (made by ``tools/make_references.py``);
- sharp images of the user's own structure (a TIFF, or an array of frames);
- the training images of a prior made by ``napari-svi train`` (:func:`prior_references`): training writes
  their ring power into the prior folder's ``references.json``, and plain ``auto`` measures against it,
  because a restore with that prior takes "sharp" to mean what it learnt.

The choice is the user's: the spectrum alone does not tell structures apart (on the calibration clips
the most likely reference was the right one in 28 of 180 cases), which is the ambiguity itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from .estimate_fit import SPATIAL_SIGMAS, SpectralFit, SpectralTable, spatial_gain2, spectral_table, temporal_mixing
from .psf import temporal_kernel

#: Names a user gives for the default prior's structures, and the bundled references they pick.
STRUCTURES = {"actin": "actin", "mitochondria": "mitochondria", "mito": "mitochondria", "nuclei": "nuclei",
              "walls": "walls", "cell-walls": "walls"}
REFERENCE_FILE = "references.json"
#: Tiles (pixels, half-overlapping) of the reference images whose mean ring power is the reference; the more
#: structured half is kept.
TILE = 96
#: The spatial interval is at least sigma x/÷ this: 90 % of the calibration clips' errors with their structure
#: named (115 blurred cases; benchmarks/results/estimate/reference/dev_notilt.jsonl), the likelihood's own
#: interval being far narrower than the error between clips.
INTERVAL_FACTOR = 1.19
#: Frames of a reference stack that are read (evenly spaced); of a prior's training images, TRAINING_FRAMES.
MAX_REFERENCE_FRAMES, TRAINING_FRAMES = 8, 24
#: The one structure of a trained prior's ``references.json``: its training images.
TRAINED = "trained"


@dataclass(frozen=True)
class Reference:
    """One reference spectrum: ``log_power`` of its structure at ring centres ``rho`` (cycles per pixel)."""

    name: str
    source: str
    rho: np.ndarray
    log_power: np.ndarray

    def at(self, rho: np.ndarray) -> np.ndarray:
        return np.interp(rho, self.rho, self.log_power)


def reference_power(frames, tile: int = TILE) -> tuple[np.ndarray, np.ndarray]:
    """``(rho, power)``: the ring centres and the mean ring power (the rings of
    :func:`~napari_svi.estimate_fit.spectral_table`) of the more structured half of the ``tile``-pixel tiles
    of 2-D ``frames``, each frame's noise power taken out."""
    from .noise import estimate_noise_sigma

    total, count = 0.0, 0
    for img in frames:
        img = np.asarray(img, dtype=np.float64)
        img = img / max(float(np.percentile(img, 99.9)), 1e-12)
        noise_var = estimate_noise_sigma(img[None].astype(np.float32)) ** 2
        size = min(tile, *img.shape)
        step = max(size // 2, 1)
        tiles = [img[r : r + size, c : c + size] for r in range(0, img.shape[0] - size + 1, step)
                 for c in range(0, img.shape[1] - size + 1, step)]
        cut = float(np.median([t.var() for t in tiles]))
        for t in tiles:
            if t.var() >= cut:
                table = spectral_table(t[None], 0.0)
                power = table.power[0]
                total = total + np.maximum(power - noise_var, 0.02 * power)
                count += 1
    return table.rho, total / count


def _read_table(text: str, where: str) -> dict:
    """``{structure: [Reference, ...]}`` of a ``references.json`` text (ValueError naming ``where``)."""
    try:
        table = json.loads(text)
        rho = np.asarray(table["rho"], dtype=np.float64)
        refs = {name: [Reference(name, r["source"], rho, np.asarray(r["log_power"], dtype=np.float64)) for r in entries]
                for name, entries in table["structures"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{where} is not a reference table of napari-svi ({type(err).__name__}: {err})") from None
    if any(len(r.log_power) != len(rho) for entries in refs.values() for r in entries):
        raise ValueError(f"{where} is not a reference table of napari-svi (a spectrum does not match its rings)")
    return refs


def bundled_references() -> dict:
    """``{structure: [Reference, ...]}`` of the default prior's training images."""
    return _read_table((resources.files("napari_svi") / "priors" / "default" / REFERENCE_FILE).read_text(),
                       "the bundled references.json")


def prior_references(prior) -> list[Reference] | None:
    """The reference a prior folder carries: its ``references.json`` when that names exactly one structure (a
    prior made by ``napari-svi train``: its training images). None for the default prior (four structures:
    name one), a checkpoint file, a loaded prior or a folder without the file; ValueError for a file that
    cannot be read."""
    if not isinstance(prior, str | os.PathLike) or str(prior) == "default" or not Path(prior).is_dir():
        return None
    file = Path(prior) / REFERENCE_FILE
    if not file.is_file():
        return None
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the prior's reference table {str(file)!r} ({err})") from None
    table = _read_table(text, f"the prior's reference table {str(file)!r}")
    if len(table) != 1:
        return None
    name = f"prior {Path(prior).resolve().name}"
    return [replace(r, name=name, source=f"{r.source} ({file})") for r in next(iter(table.values()))]


def write_training_reference(folder, frames, sources: list[str] | None = None) -> Path | None:
    """Write ``folder/references.json`` (the bundled file's format, one structure, :data:`TRAINED`): the ring
    power of up to :data:`TRAINING_FRAMES` of a prior's training ``frames`` (2-D arrays). Nothing is written,
    and None returned, when no frame is 32 px or more a side with any structure."""
    usable = [np.asarray(f, dtype=np.float64) for f in frames if min(np.shape(f)) >= 32 and float(np.ptp(f)) > 0]
    if not usable:
        return None
    usable = [usable[i] for i in np.unique(np.linspace(0, len(usable) - 1, min(len(usable), TRAINING_FRAMES)).round().astype(int))]
    tile = min(TILE, *(min(f.shape) for f in usable))
    rho, power = reference_power(usable, tile)
    table = {"made_by": "napari-svi train", "tile_px": tile, "rho": [round(float(r), 6) for r in rho],
             "structures": {TRAINED: [{"source": "the prior's training images" + (f": {', '.join(sources)}" if sources else ""),
                                       "log_power": [round(float(v), 5) for v in np.log(power)]}]}}
    path = Path(folder) / REFERENCE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def resolve_reference(structure) -> list[Reference]:
    """The references ``structure`` names: a bundled structure (:data:`STRUCTURES`), a TIFF of sharp images
    of it, or an array of them ``(Y, X)`` / ``(N, Y, X)``; references already resolved are returned as they are.
    ValueError says what is allowed."""
    if isinstance(structure, Reference):
        return [structure]
    if isinstance(structure, list | tuple) and structure and all(isinstance(r, Reference) for r in structure):
        return list(structure)
    if isinstance(structure, str | Path) and str(structure).strip().lower() in STRUCTURES:
        return bundled_references()[STRUCTURES[str(structure).strip().lower()]]
    if isinstance(structure, str | Path):
        path = Path(structure)
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise ValueError(f"structure {str(structure)!r} is neither a structure the default prior learnt "
                             f"({', '.join(sorted(set(STRUCTURES.values())))}) nor a TIFF of sharp images (.tif)")
        if not path.is_file():
            raise ValueError(f"structure: the reference TIFF {str(path)!r} does not exist")
        import tifffile

        try:
            frames = tifffile.imread(path)
        except Exception as err:  # corrupt or not a TIFF: say which file
            raise ValueError(f"structure: cannot read the reference TIFF {str(path)!r} ({err})") from None
        return [Reference(path.stem, str(path), *_rings(frames, f"structure ({path.name})"))]
    return [Reference("given", "array", *_rings(structure, "structure"))]


def _rings(frames, name: str) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(frames)
    if arr.ndim < 2 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real sharp images (Y, X) or (N, Y, X), got shape {arr.shape}, dtype {arr.dtype}")
    if arr.ndim >= 3 and arr.shape[-1] in (3, 4):
        raise ValueError(f"{name} looks like a colour image (last axis {arr.shape[-1]}): give one channel of sharp images")
    arr = arr.reshape(-1, *arr.shape[-2:])
    if min(arr.shape[-2:]) < 32:
        raise ValueError(f"{name}: reference images need at least 32 x 32 pixels, got {arr.shape[-2]} x {arr.shape[-1]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    pick = np.unique(np.linspace(0, len(arr) - 1, min(len(arr), MAX_REFERENCE_FRAMES)).round().astype(int))
    frames = [a for a in arr[pick] if float(np.ptp(a)) > 0]
    if not frames:
        raise ValueError(f"{name} is constant: a reference needs structure")
    rho, power = reference_power(frames)
    return rho, np.log(power)


def reference_fit(table: SpectralTable, reference: Reference) -> SpectralFit:
    """A :class:`SpectralFit` whose spatial spectrum is the reference's: ``P(f, rho) = A R(rho) m(f / rho) / rho``
    (summed over ``f`` the speed term spans about ``rho``, so the spatial power is ``A R(rho)``); no tilt."""
    fit = SpectralFit(table)
    t = table.frames
    offset = np.tile(reference.at(table.rho) - np.log(table.rho), t)
    fit.beyond = fit.beyond + np.tile(offset, 3)
    fit.theta[1] = 0.0
    fit.bounds[1] = (0.0, 0.0)  # the shape is the reference's: only the amplitude is free
    return fit


def spatial_against(table: SpectralTable, temporal: str, references: list[Reference]) -> dict:
    """The spatial Gaussian relative to the most likely of ``references`` at a fixed temporal PSF: its
    ``sigma`` (pixels), the likelihood ``profile`` over the grid (units of estimate_fit per 1000
    coefficients), and which reference."""
    kernel = None if temporal == "none" else temporal_kernel(temporal)
    mixing = temporal_mixing(kernel, table.frames)
    per_1000 = float(table.count.sum()) * table.frames / 1000.0
    best = None
    for ref in references:
        fit = reference_fit(table, ref)
        cache = {}

        def nll(s: float, fit=fit, cache=cache) -> float:
            key = round(float(s), 4)
            if key not in cache:
                cache[key] = fit.nll(mixing, spatial_gain2(s, table.rho)) / per_1000
            return cache[key]

        grid = (0.0, *SPATIAL_SIGMAS)
        profile = {s: nll(s) for s in grid}
        sigma = min(profile, key=profile.get)
        if sigma > 0:
            i = grid.index(sigma)
            res = minimize_scalar(nll, bounds=(grid[i - 1], grid[min(i + 1, len(grid) - 1)]), method="bounded",
                                  options={"xatol": 0.02})
            sigma = float(res.x) if res.fun < profile[sigma] else sigma
        row = {"reference": ref.name, "source": ref.source, "sigma": sigma, "nll": nll(sigma),
               "profile": {f"{k:g}": v for k, v in profile.items()}}
        if best is None or row["nll"] < best["nll"]:
            best = row
    return best


def reference_decision(ref: dict, min_sigma: float, interval_margin: float) -> tuple[str, dict]:
    """``(spatial_psf, confidence)`` from :func:`spatial_against`'s result: "none" below ``min_sigma``."""
    sigma = ref["sigma"]
    spatial = "none" if sigma < min_sigma else f"gaussian:{sigma:.2g}"
    profile = {float(k): v for k, v in ref["profile"].items()}
    near = sorted({sigma, *(k for k, v in profile.items() if v <= ref["nll"] + interval_margin)})
    if sigma > 0:
        near = sorted({*near, sigma / INTERVAL_FACTOR, sigma * INTERVAL_FACTOR})
    margin = profile[0.0] - ref["nll"]
    if spatial == "none":  # how much worse the least blur that would be reported fits
        lead = min(v for k, v in profile.items() if k >= min_sigma) - ref["nll"]
        level = "high" if lead > 1.0 else "medium" if lead > 0.2 else "low"
    else:
        level = "high" if margin > 1.0 and near[-1] - near[0] <= 0.5 * sigma else "medium" if margin > 0.2 else "low"
    return spatial, {"kind": spatial.split(":")[0], "method": "reference", "reference": ref["reference"],
                     "reference_source": ref["source"], "interval": [round(near[0], 3), round(near[-1], 3)],
                     "unit": "pixels (sigma)", "margin_over_none": round(margin, 3), "level": level,
                     "fitted_sigma_px": round(sigma, 3), "native_sigma_px": 0.0}

