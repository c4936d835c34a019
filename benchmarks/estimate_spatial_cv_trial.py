"""Trial (dev clips only): choose the spatial PSF by how well a restore predicts pixels it did not see.

For each candidate spatial sigma, a random fraction of the measured pixels is held out (a mask),
the stack is restored with the candidate (true temporal PSF, defaults, seed 0 for every candidate),
and the restore, blurred by the candidate's forward model, predicts the held-out pixels. The
candidate with the smallest held-out error wins. Printed per case: held-out error per candidate
(relative to the noise variance) and the PSNR of each masked restore against the truth.

    OMP_NUM_THREADS=2 python benchmarks/estimate_spatial_cv_trial.py --clips actin-left,walls-left
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from estimate_blind import DEV, load, measure  # noqa: E402

CANDIDATES = (0.0, 0.7, 1.0, 1.4, 2.0, 2.6)


def cv_case(truth, y, spec, candidates, holdout: float, seed: int, threads: int):
    from dataclasses import replace

    from napari_svi.benchmark.metrics import psnr, truth_scale
    from napari_svi.degrade import degrade
    from napari_svi.restore import restore

    rng = np.random.default_rng(seed)
    keep = rng.random(y.shape) >= holdout
    scale = truth_scale(truth)
    rows = []
    for s in candidates:
        psf = None if s == 0 else f"gaussian:{s:g}"
        op = replace(spec, spatial_psf=psf, mask=keep.astype(np.uint8))
        t0 = time.perf_counter()
        res = restore(np.where(keep, y, 0), op, threads=threads, seed=0)
        pred = degrade(res.restored, replace(spec, spatial_psf=psf), noise_sigma=0.0)
        err = float(np.mean((pred[~keep] - y[~keep]) ** 2))
        fit = float(np.mean((pred[keep] - y[keep]) ** 2))
        rows.append({"sigma": s, "heldout_mse": err, "seen_mse": fit,
                     "psnr": psnr(scale.to_unit(truth), scale.to_unit(res.restored)),
                     "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def trial_arguments(description: str, argv=None, **extra) -> argparse.Namespace:
    """The dev cases of a spatial trial (clips, temporal and spatial PSFs, noises) and its output file."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--clips", default=",".join(DEV))
    ap.add_argument("--temporal", default="none,uniform:5")
    ap.add_argument("--spatial", default="none,gaussian:1,gaussian:2")
    ap.add_argument("--noise", default="gauss,pg300")
    for name, kwargs in extra.items():
        ap.add_argument(f"--{name}", **kwargs)
    ap.add_argument("--dev-data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("-o", "--output", type=Path)
    return ap.parse_args(argv)


def dev_cases(args):
    """``(clip, temporal, spatial, noise, truth, y, spec)`` for every case of ``args``: 10 frames of 64 px."""
    for clip in args.clips.split(","):
        truth = load(clip, 10, 64, args.dev_data)
        for temporal, spatial, noise in itertools.product(*(getattr(args, k).split(",") for k in ("temporal", "spatial", "noise"))):
            y, spec = measure(truth, temporal, spatial, noise)
            yield clip, temporal, spatial, noise, truth, y, spec


def main(argv=None) -> int:
    args = trial_arguments(__doc__.splitlines()[0], argv, holdout={"type": float, "default": 0.2},
                           threads={"type": int, "default": 2})
    out = []
    for clip, temporal, spatial, noise, truth, y, spec in dev_cases(args):
        rows = cv_case(truth, y, spec, CANDIDATES, args.holdout, 1, args.threads)
        best_cv = min(rows, key=lambda r: r["heldout_mse"])
        best_psnr = max(rows, key=lambda r: r["psnr"])
        out.append({"clip": clip, "temporal": temporal, "spatial": spatial, "noise": noise, "rows": rows,
                    "cv_choice": best_cv["sigma"], "psnr_choice": best_psnr["sigma"]})
        line = " ".join(f"{r['sigma']:g}:{r['heldout_mse'] / rows[0]['heldout_mse']:.3f}/{r['psnr']:.1f}" for r in rows)
        print(f"{clip:16s} {temporal:10s} {spatial:11s} {noise:6s} cv={best_cv['sigma']:g} "
              f"best={best_psnr['sigma']:g} (lost {best_psnr['psnr'] - best_cv['psnr']:.2f} dB) | {line}", flush=True)
    if args.output:
        args.output.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
