"""A trial on the calibration clips only: what the spatial decision rule costs a restore.

The blind spatial PSF is reported beyond an assumed native blur (``DecisionRules.native_spatial_sigma``,
1.2 px, chosen by hit rate). This restores 24 blurred dev cases (10 frames of 64 x 64, restore
defaults) with the estimate under several native blurs and minimum sigmas and with the true PSFs,
and prints the PSNR difference per case and on average (``benchmarks/results/estimate/attempts_2026-12-04.md``,
section 4). Reads the stored likelihoods of ``records_dev.json``; no re-estimation.

    OMP_NUM_THREADS=2 python benchmarks/estimate_spatial_rule_trial.py
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VARIANTS = ((1.2, 0.6), (1.0, 0.6), (0.8, 0.6), (1.0, 0.4))  # (native_spatial_sigma, min_spatial_sigma)


def main() -> int:
    sys.path.insert(0, str(HERE))
    import estimate_blind as eb

    from napari_svi.benchmark.metrics import psnr, truth_scale
    from napari_svi.estimate import DEFAULT_RULES, decide
    from napari_svi.operators import OperatorSpec
    from napari_svi.restore import restore

    records = json.loads((HERE / "results" / "estimate" / "records_dev.json").read_text())
    blurred = [r for r in records if r["temporal"] != "none" or r["spatial"] != "none"]
    picked = [blurred[i] for i in sorted(np.random.default_rng(1).choice(len(blurred), size=24, replace=False))]
    variants = {f"native {n}, min {m}": replace(DEFAULT_RULES, native_spatial_sigma=n, min_spatial_sigma=m)
                for n, m in VARIANTS}
    out = {k: [] for k in variants}
    dev_data = HERE.parents[1] / "shared" / "data"
    for r in picked:
        truth = eb.load(r["clip"], 10, 64, dev_data)
        y, _ = eb.measure(truth, r["temporal"], r["spatial"], r["noise"])
        scale, cache = truth_scale(truth), {}
        for t, s in [(r["temporal"], r["spatial"]), *(decide(r["scores"], rules)[:2] for rules in variants.values())]:
            if (t, s) not in cache:
                op = OperatorSpec(temporal_psf=None if t == "none" else t, spatial_psf=None if s == "none" else s)
                cache[(t, s)] = psnr(scale.to_unit(truth), scale.to_unit(restore(y, op, threads=2).restored))
        true = cache[(r["temporal"], r["spatial"])]
        line = []
        for name, rules in variants.items():
            t, s, _ = decide(r["scores"], rules)
            out[name].append((cache[(t, s)] - true, eb.hit(r["spatial"], s)))
            line.append(f"{name}: {s} {out[name][-1][0]:+.2f}")
        print(r["clip"], r["temporal"], r["spatial"], r["noise"], "|", "; ".join(line), flush=True)
    for name, v in out.items():
        print(f"{name}: mean auto - true {np.mean([d for d, _ in v]):+.2f} dB, spatial hits {sum(h for _, h in v)} of {len(v)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
