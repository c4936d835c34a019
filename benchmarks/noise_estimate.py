"""How close ``noise_sigma="auto"`` comes to the true noise on the realistic suite's degraded clips.

For every clip and task of ``napari-svi benchmark suite`` (held-out clips, the suite's noise: Poisson at
50 or 300 photons plus 2 photons of read noise), the true noise is the root mean square of the
measurement minus the noiseless measurement over the observed entries. Printed: the estimate
(:func:`napari_svi.noise.stack_noise_sigma`, as a restore uses it) over the truth. ``--neighbours``
also prints the rule before 2026-12-07, which binned the time residual by the two neighbours' mean
(correlated with it) instead of the three frames' mean.

    OMP_NUM_THREADS=1 python benchmarks/noise_estimate.py [--crop 128 --frames 10] [--neighbours]
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def neighbours_rule(y01: np.ndarray, mask: np.ndarray | None) -> float:
    """The estimate with the time residual binned by its two neighbours' mean (the rule before 2026-12-07)."""
    from napari_svi.noise import _binned_sigma, _haar_diagonal

    m = np.ones(y01.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask) != 0, y01.shape)
    r, level = _haar_diagonal(y01, m)
    sigma = _binned_sigma(r, level, 16)
    seen = m[1:-1] & m[:-2] & m[2:]
    around = (y01[:-2] + y01[2:]) / 2
    return min(sigma, _binned_sigma((around - y01[1:-1])[seen], around[seen], 16) / math.sqrt(1.5))


def main(argv=None) -> int:
    from napari_svi.benchmark.quality import QualitySettings, make_measurement
    from napari_svi.benchmark.suite import SUITE_CLIPS, SUITE_TASKS, load_clip
    from napari_svi.degrade import degrade
    from napari_svi.intensity import measurement_scale
    from napari_svi.noise import NOISE_ESTIMATE_FRAMES, stack_noise_sigma

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--neighbours", action="store_true", help="also the rule before 2026-12-07")
    args = p.parse_args(argv)
    settings = QualitySettings()
    ratios, old = [], []
    print(f"{'clip':7s} {'task':15s} estimate / true" + ("   (neighbours' mean)" if args.neighbours else ""))
    for clip in SUITE_CLIPS:
        for task in SUITE_TASKS.values():
            truth = load_clip(clip, task.frames or args.frames, args.crop)[0]
            y, spec, _ = make_measurement(truth, task, settings)
            clean = degrade(truth, spec, seed=settings.seed)
            mask = spec.mask_array()
            seen = np.ones(y.shape, bool) if mask is None else np.broadcast_to(mask != 0, y.shape)
            true = float(np.sqrt(np.mean(np.square((y - clean)[seen]))))
            scale = measurement_scale(y, name="data", mask=mask)
            ratio = stack_noise_sigma(y, scale, "auto", mask) * scale.span / true
            ratios.append(ratio)
            line = f"{clip:7s} {task.name:15s} {ratio:.3f}"
            if args.neighbours and y.shape[0] <= NOISE_ESTIMATE_FRAMES:
                old.append(neighbours_rule(scale.to_unit(y).astype(np.float64), mask) * scale.span / true)
                line += f"   {old[-1]:.3f}"
            print(line, flush=True)
    print(f"estimate / true over {len(ratios)} cases: {min(ratios):.3f}-{max(ratios):.3f}, median {np.median(ratios):.3f}")
    if old:
        print(f"neighbours' mean: {min(old):.3f}-{max(old):.3f}, median {np.median(old):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
