"""Trial: the spatial PSF relative to the prior's own training images (a reference spectrum per structure).

The spectral model of :mod:`napari_svi.estimate_fit` takes a structure's spatial spectrum to be a power
law, so a structure's own softness (nuclei, smooth blobs) and an added Gaussian look alike. Here the
power law is replaced by the measured spectrum ``R(rho)`` of the images the prior was trained on (the
left halves of the shared stills, the training half of the nuclei time-lapse), with a free tilt
``rho^-delta``: a Gaussian fitted on top of ``R`` is the blur relative to what the prior learnt as
sharp, which is what a restore needs. Each reference structure is fitted; the most likely one wins.

For the calibration clips (``--clips dev``, windows of those same left halves) the references leave
out the clip's own window; for the held-out clips (right halves) they use the whole left halves.

Only the spatial answer is re-fitted: the temporal PSF is held at the estimate stored in the records.

    OMP_NUM_THREADS=2 python benchmarks/estimate_reference_trial.py --clips dev --records benchmarks/results/estimate/records_dev.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimate_blind as eb  # noqa: E402

TILE, STRIDE = 96, 48
TILT = True  #: a free tilt rho^-delta on the reference (--no-tilt: none)
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def reference_power(frames: list[np.ndarray], exclude=None) -> np.ndarray:
    """Mean ring power (32 rings) of the structured 96-px tiles of ``frames``, their noise taken out.

    ``exclude``: ``(r0, r1, c0, c1)``, tiles overlapping it are skipped.
    """
    from napari_svi.estimate_fit import spectral_table
    from napari_svi.noise import estimate_noise_sigma

    sums, counts = 0.0, 0
    for img in frames:
        img = np.asarray(img, dtype=np.float64)
        img = img / max(float(np.percentile(img, 99.9)), 1e-12)
        nv = estimate_noise_sigma(img[None].astype(np.float32)) ** 2
        tiles = []
        for r in range(0, img.shape[0] - TILE + 1, STRIDE):
            for c in range(0, img.shape[1] - TILE + 1, STRIDE):
                if exclude is not None:
                    r0, r1, c0, c1 = exclude
                    if r < r1 and r + TILE > r0 and c < c1 and c + TILE > c0:
                        continue
                tile = img[r : r + TILE, c : c + TILE]
                tiles.append((float(tile.var()), tile))
        if not tiles:
            continue
        cut = float(np.median([v for v, _ in tiles]))
        for v, tile in tiles:
            if v >= cut:
                p = spectral_table(tile[None], 0.0).power[0]
                sums = sums + np.maximum(p - nv, 0.02 * p)
                counts += 1
    return sums / counts


def references(clips: str, dev_clip: str | None) -> dict[str, np.ndarray]:
    """Reference ring powers per structure; a dev clip's own window is left out of its reference."""
    import tifffile

    from napari_svi.datasets import HELD_OUT_FIRST_COLUMN, load_bio_sample

    out = {}
    for name, file in (("actin", "BPAE_actin.tif"), ("mito", "BPAE_mito.tif"), ("bpae-nuclei", "BPAE_nuclei.tif"),
                       ("walls", "maize_clsm.tif")):
        img = tifffile.imread(SHARED / file)
        left = img[:, : img.shape[1] // 2]
        exclude = None
        if clips == "dev" and dev_clip == {"bpae-nuclei": "bpae-nuclei-left"}.get(name, f"{name}-left"):
            r, c = eb.window_corner(img)
            exclude = (r, r + 192, c, c + 192)
        out[name] = reference_power([left], exclude)
    tl = load_bio_sample("2D_timelapse.tif")[:, :, :HELD_OUT_FIRST_COLUMN]
    exclude = None
    if clips == "dev" and dev_clip == "nuclei-train":
        h, w = tl.shape[1:]
        y0, x0 = (h - 96) // 2, (w - 96) // 2
        exclude = (y0 - 16, y0 + 96 + 16, x0 - 16, x0 + 96 + 16)
    out["nuclei-timelapse"] = reference_power(list(tl[::6]), exclude)
    return out


def fit_for(table, log_ref: np.ndarray | None):
    """A :class:`SpectralFit` whose spatial spectrum is ``R(rho) rho^-delta`` (``None``: the power law)."""
    from napari_svi.estimate_fit import SpectralFit

    fit = SpectralFit(table)
    if log_ref is not None:
        t, r = table.power.shape
        offset = np.tile(log_ref - np.log(table.rho), t)  # rho^-(alpha+1) R m: summed over f (m(f / rho) spans ~rho), R rho^-alpha
        fit.beyond = fit.beyond + np.tile(offset, 3)
        fit.theta[1] = 0.0
        if not TILT:
            fit.bounds[1] = (0.0, 0.0)
    return fit


def spatial_answer(table, temporal: str, log_ref):
    from napari_svi.estimate import SPATIAL_SIGMAS, _Search

    search = _Search(fit_for(table, log_ref))
    grid = (0.0, *SPATIAL_SIGMAS)
    prof = {s: search.nll(temporal, s) for s in grid}
    best = min(prof, key=prof.get)
    sigma = search.refine(lambda s: search.nll(temporal, s), grid, best) if best > 0 else 0.0
    return sigma, search.nll(temporal, sigma), prof


def table_of(y: np.ndarray):
    from napari_svi.estimate_fit import spectral_table
    from napari_svi.intensity import measurement_scale
    from napari_svi.noise import stack_noise_sigma

    scale = measurement_scale(y, name="data")
    sigma01 = stack_noise_sigma(y, scale, "auto")
    return spectral_table(scale.to_unit(y), sigma01)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", choices=("heldout", "dev"), default="dev")
    p.add_argument("--records", required=True)
    p.add_argument("--temporals", default="none,uniform:3,uniform:6,uniform:9,gaussian:1,gaussian:2")
    p.add_argument("--only", default=None, help="comma-separated clip names")
    p.add_argument("--out", default=None, help="JSON lines, one per case")
    p.add_argument("--no-tilt", action="store_true")
    args = p.parse_args(argv)
    global TILT
    TILT = not args.no_tilt
    recs = {(r["clip"], r["temporal"], r["spatial"], r["noise"]): r for r in json.load(open(args.records))}
    clips = eb.HELDOUT if args.clips == "heldout" else eb.DEV
    if args.only:
        clips = [c for c in clips if c in args.only.split(",")]
    temporals = args.temporals.split(",")
    out = open(args.out, "a") if args.out else None
    for clip in clips:
        refs = {k: np.log(v) for k, v in references(args.clips, clip).items()}
        # one reference for every structure: the mean shape of theirs (the amplitude is free, so each is centred)
        refs["pooled"] = np.mean([lr - lr.mean() for lr in refs.values()], axis=0)
        truth = eb.load(clip, 24, 96, SHARED)
        for temporal in temporals:
            for spatial in eb.SPATIAL:
                for noise in eb.NOISE:
                    rec = recs[(clip, temporal, spatial, noise)]
                    start = time.perf_counter()
                    y, _ = eb.measure(truth, temporal, spatial, noise)
                    table = table_of(y)
                    fits = {name: spatial_answer(table, rec["est_temporal"], lr)[:2] for name, lr in refs.items()}
                    fits["power-law"] = spatial_answer(table, rec["est_temporal"], None)[:2]
                    ref = min((k for k in fits if k not in ("power-law", "pooled")), key=lambda k: fits[k][1])
                    row = {"clip": clip, "temporal": temporal, "spatial": spatial, "noise": noise,
                           "est_temporal": rec["est_temporal"], "est_spatial_now": rec["est_spatial"], "reference": ref,
                           "sigma": round(fits[ref][0], 3),
                           "fits": {k: [round(s, 3), round(v, 3)] for k, (s, v) in fits.items()},
                           "seconds": round(time.perf_counter() - start, 1)}
                    print(f"{clip:16s} {temporal:12s} {spatial:11s} {noise:6s} now {rec['est_spatial']:13s} "
                          f"ref {ref:16s} sigma {row['sigma']:.2f}  " +
                          " ".join(f"{k[:5]}:{s:.2f}/{v - fits['power-law'][1]:+.1f}" for k, (s, v) in fits.items()),
                          flush=True)
                    if out:
                        out.write(json.dumps(row) + "\n")
                        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
