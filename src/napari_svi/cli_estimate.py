"""``napari-svi estimate``: the temporal PSF, the spatial PSF and the noise level of a time-lapse, from the data.

Prints them in the spec strings of ``restore`` (``--temporal-psf``, ``--spatial-psf``,
``--noise-sigma``) with how sure the estimate is; ``--json`` prints exactly one JSON object and
nothing else on standard output. See :mod:`napari_svi.estimate`.
"""

from __future__ import annotations

import argparse
import json

EPILOG = """The estimate reads the middle 48 frames and the centre 192 x 192 pixels (seconds on one core).
A box of K frames is told from a Gaussian by the temporal spectrum, which a box zeroes at 1/K cycles
per frame; where the noise hides that, the confidence says so (level 'low') and names the other kind.
Without --structure the spatial blur is measured against a power-law spectrum, less the 1.2 px every image
shows; smooth structures (nuclei, cell walls) blurred by 1 px then read as 'none'. Naming what was imaged
(--structure nuclei, or a TIFF of sharp images of it) measures the blur against that structure's own
spectrum instead: on held-out clips the spatial answer was right in 93 % of cases, against 84 % without
(but on actin, sharper than the reference, in 74 % against 100 %; see the README).
A prior made by napari-svi train carries the spectrum of its training images (references.json), and
--prior FOLDER measures the spatial blur against it, as a restore with that prior and a plain 'auto' does.
Restore with the estimate directly: napari-svi restore IN.tif -o OUT.tif --temporal-psf auto --spatial-psf auto
(or --spatial-psf auto:nuclei to name the structure)"""


def add_parser(sub) -> None:
    p = sub.add_parser("estimate", help="estimate the temporal and spatial blur and the noise from the data",
                       description="Estimate the temporal PSF (a box of K frames, a Gaussian in frames, or none), "
                       "the spatial PSF (a Gaussian in pixels, or none) and the noise level of a measured "
                       "time-lapse, each with an interval and a confidence level.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="input TIFF or zarr store (.zarr)")
    p.add_argument("--time-axis", type=int, default=None, help="index of the time axis (default: from the file's axes, else 0)")
    p.add_argument("--structure", default=None, metavar="NAME|FILE",
                   help="what was imaged, as the reference of sharpness for the spatial blur: actin, mitochondria, nuclei, "
                   "walls (the default prior's structures) or a TIFF of sharp images of it (default: none, a power law)")
    p.add_argument("--prior", default=None, metavar="FOLDER",
                   help="a prior folder made by napari-svi train: the spatial blur is measured against the images it "
                   "was trained on, as restore --prior FOLDER --spatial-psf auto does (not with --structure)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object {temporal_psf, spatial_psf, noise_sigma, confidence} and nothing else")
    p.set_defaults(func=run)


def json_record(est) -> dict:
    """The ``--json`` object: the three estimates and the confidence, nothing else."""
    return {"temporal_psf": est.temporal_psf, "spatial_psf": est.spatial_psf,
            "noise_sigma": float(est.noise_sigma), "confidence": est.confidence}


def describe(est) -> list[str]:
    """Lines for a person: each estimate, its interval and its confidence, and the restore flags."""
    t, s, n = (est.confidence[k] for k in ("temporal_psf", "spatial_psf", "noise_sigma"))

    def span(conf: dict, unit: str) -> str:
        interval = conf.get("interval")
        lo, hi = (round(interval[0], 2), round(interval[1], 2)) if interval else (None, None)
        return "" if lo is None else f" (plausible {lo:g}-{hi:g} {unit})" if hi != lo else ""

    alternative = f"; the other kind, {t['alternative']}, fits almost as well" if t.get("alternative") and \
        t.get("level") == "low" and est.temporal_psf != "none" else ""
    via = " (read from how the whole field drifts)" if t.get("method") == "drift model" else ""
    against = f"against the {s['reference']} reference, {s.get('reference_source')}" if s.get("method") == "reference" \
        else f"less the {s.get('native_sigma_px')} px every image has"
    return [
        f"temporal PSF: {est.temporal_psf}{span(t, t.get('unit', 'frames'))}, confidence {t.get('level')}{alternative}{via}",
        f"spatial PSF:  {est.spatial_psf}{span(s, 'px')}, confidence {s.get('level')} "
        f"(fitted {s.get('fitted_sigma_px')} px, {against})",
        f"noise sigma:  {est.noise_sigma:.4g} (data units; the spectrum's floor says {n['spectral_floor']:.4g})",
        f"restore with: --temporal-psf {est.temporal_psf} --spatial-psf {est.spatial_psf} --noise-sigma {est.noise_sigma:.4g}",
        f"({est.seconds:.1f} s on {est.confidence['frames_used']} frames of "
        f"{est.confidence['pixels_used'][0]} x {est.confidence['pixels_used'][1]} pixels)",
    ]


def run(args) -> int:
    from .estimate import estimate_blur
    from .estimate_reference import resolve_reference
    from .io import read_input

    references = None if args.structure is None else resolve_reference(args.structure)  # checked before the input
    if args.prior is not None:
        references = prior_reference(args.prior, args.structure)
    data, _, time_axis, _ = read_input(args.input, args.time_axis)
    est = estimate_blur(data, time_axis=time_axis, structure=references)
    if args.json:
        print(json.dumps(json_record(est)))
    else:
        print("\n".join(describe(est)))
    return 0


def prior_reference(prior: str, structure) -> list:
    """The reference of ``--prior`` (ValueError when it is also given ``--structure`` or carries none)."""
    from pathlib import Path

    from .estimate_reference import prior_references

    if structure is not None:
        raise ValueError("give --structure or --prior, not both: each names what the spatial blur is measured against")
    if prior != "default" and not Path(prior).is_dir():
        raise ValueError(f"--prior {prior!r}: no such prior folder")
    references = prior_references(prior)
    if references is None:
        raise ValueError(f"--prior {prior!r} carries no reference of its training images (a folder made by napari-svi "
                         "train has one); the default prior learnt four structures: name one with --structure")
    return references
