"""Trial (dev clips only): does deconvolving with too wide a spatial PSF show as negative values?

Fluorescence is nonnegative. A TV deconvolution (the restore's start: discrepancy-principle weight)
with the true spatial PSF stays about nonnegative on the [0, 1] scale of the measurement (0 = its
0.1th percentile after smoothing); with a PSF wider than the blur it rings below zero at edges. For
each case and candidate sigma this prints the PSNR of the TV estimate against the truth and the
negative energy ``mean(min(x, 0)^2) / sigma_noise^2``.

    OMP_NUM_THREADS=2 python benchmarks/estimate_positivity_trial.py [-o out.json]
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from estimate_spatial_cv_trial import dev_cases, trial_arguments  # noqa: E402

CANDIDATES = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def curve(truth, y, spec, candidates):
    import torch

    from napari_svi.benchmark.metrics import psnr, truth_scale
    from napari_svi.classical import discrepancy_tv
    from napari_svi.intensity import measurement_scale
    from napari_svi.noise import stack_noise_sigma

    scale = measurement_scale(y)
    sigma = stack_noise_sigma(y, scale, "auto")
    y01 = torch.from_numpy(scale.to_unit(y))[:, None].double()
    t_scale = truth_scale(truth)
    rows = []
    for s in candidates:
        op = replace(spec, spatial_psf=None if s == 0 else f"gaussian:{s:g}", mask=None).build(tuple(y01.shape))
        x, weight, chi2 = discrepancy_tv(y01, op, sigma)
        x01 = x[:, 0].numpy()
        neg = float(np.mean(np.minimum(x01, 0.0) ** 2)) / sigma**2
        frac = float(np.mean(x01 < -3 * sigma))
        rows.append({"sigma": s, "psnr": psnr(t_scale.to_unit(truth), t_scale.to_unit(scale.from_unit(x01))),
                     "neg": neg, "frac": frac, "weight": weight, "chi2": chi2})
    return rows


def main(argv=None) -> int:
    args = trial_arguments(__doc__.splitlines()[0], argv)
    out = []
    for clip, temporal, spatial, noise, truth, y, spec in dev_cases(args):
        rows = curve(truth, y, spec, CANDIDATES)
        out.append({"clip": clip, "temporal": temporal, "spatial": spatial, "noise": noise, "rows": rows})
        best = max(rows, key=lambda r: r["psnr"])
        line = " ".join(f"{r['sigma']:g}:{r['psnr']:.1f}/{r['neg']:.2f}" for r in rows)
        print(f"{clip:16s} {temporal:10s} {spatial:11s} {noise:6s} best={best['sigma']:g} | {line}", flush=True)
    if args.output:
        args.output.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
