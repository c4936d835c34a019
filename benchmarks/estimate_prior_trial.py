"""Trial (dev clips only): does the prior tell a restore that is too blurry from one that is too sharp?

For a calibration clip degraded with a known temporal box and a spatial Gaussian of 0 or 1 px, restore
with each candidate spatial sigma, then let the bundled prior redraw the restore's fine detail: diffuse it
to timestep ``--t0`` (one noise draw shared by every candidate and frame) and run ``--steps`` deterministic
DDIM steps back to 0 with no data term. If the restore is blurrier than the images the prior learnt, the
redrawn one has more fine detail; if it is over-sharpened (ringing, noise), less. Prints, per candidate,
the PSNR of the restore and ``log2`` of the redrawn over the restored power above ``--cut`` cycles per pixel.

    OMP_NUM_THREADS=2 python benchmarks/estimate_prior_trial.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimate_blind as eb  # noqa: E402
from prior_referee import fine_power as high_power  # noqa: E402
from prior_referee import redraw  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv=None) -> int:
    from napari_svi.benchmark.metrics import psnr, truth_scale
    from napari_svi.intensity import measurement_scale
    from napari_svi.operators import OperatorSpec
    from napari_svi.priors.loading import load_prior
    from napari_svi.restore import restore

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", default="actin-left,mito-left,walls-left,bpae-nuclei-left")
    p.add_argument("--temporal", default="uniform:3")
    p.add_argument("--candidates", default="0,0.75,1,1.5")
    p.add_argument("--spatials", default="none,gaussian:1", help="true spatial PSFs")
    p.add_argument("--noise", default="gauss", choices=("gauss", "pg300"))
    p.add_argument("--t0", type=int, default=150)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--cut", type=float, default=0.2)
    p.add_argument("--redraws", type=int, default=1, help="noise draws per candidate; the log ratios are averaged")
    p.add_argument("--temporals", default=None,
                   help="true temporal PSFs to cycle through, case by case (instead of --temporal for all)")
    p.add_argument("--noises", default=None, help="comma-separated noises, each case in each (instead of --noise)")
    p.add_argument("--save", default=None, metavar="FILE", help="append one JSON line per case to FILE")
    args = p.parse_args(argv)
    temporals = (args.temporals or args.temporal).split(",")
    noises = (args.noises or args.noise).split(",")
    cuts = (0.1, 0.15, 0.2, 0.3)
    torch.set_num_threads(2)
    prior = load_prior("default", "cpu", channels=1)
    cands = [float(c) for c in args.candidates.split(",")]
    case = 0
    for clip in args.clips.split(","):
        truth = eb.load(clip, 10, 64, DATA)
        for spatial in args.spatials.split(","):
            for noise in noises:
                temporal = temporals[case % len(temporals)]
                case += 1
                y, _ = eb.measure(truth, temporal, spatial, noise)
                scale, tscale = measurement_scale(y), truth_scale(truth)
                cells, rec = [], {"clip": clip, "temporal": temporal, "spatial": spatial, "noise": noise, "candidates": {}}
                for s in cands:
                    op = OperatorSpec(temporal_psf=None if temporal == "none" else temporal,
                                      spatial_psf=None if s == 0 else f"gaussian:{s:g}")
                    x = restore(y, op, threads=2).restored
                    x01 = scale.to_unit(x).astype(np.float64)
                    draws = [redraw(prior, x01, args.t0, args.steps, seed=k) for k in range(args.redraws)]
                    gains = {c: float(np.mean([math.log2(high_power(d, c) / max(high_power(x01, c), 1e-30))
                                               for d in draws])) for c in cuts}
                    quality = psnr(tscale.to_unit(truth), tscale.to_unit(x))
                    rec["candidates"][f"{s:g}"] = {"psnr": round(quality, 3), "gain": {f"{c:g}": round(v, 4) for c, v in gains.items()}}
                    cells.append(f"{s:g}: {quality:.2f} dB {gains.get(args.cut, gains[0.2]):+.2f}")
                print(f"{clip:17s} {temporal:12s} {spatial:10s} {noise:5s}", " | ".join(cells), flush=True)
                if args.save:
                    with open(args.save, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
