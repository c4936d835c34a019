"""A restore cut into spatial tiles against the whole-frame restore, on a real clip.

Crops ``--frames`` x ``--size`` x ``--size`` pixels of the held-out real nuclei time-lapse that ships
with the package (or, with ``--clip actin|mito|walls``, takes the realistic suite's drifting held-out
crop of that structure), degrades it (temporal box of ``--box`` frames, Gaussian noise ``--noise`` on the
[0, 1] scale of the clip's range), and restores it with the bundled prior twice: whole frames, and
cut into ``--tile``-pixel spatial tiles (a ``memory_budget`` that fits exactly such a tile). Prints
the PSNR of the measurement and of both restores against the clean clip and writes them as JSON.

    OMP_NUM_THREADS=1 python benchmarks/tiles_vs_whole.py --steps 10 [-o benchmarks/results/tiles_vs_whole.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def psnr(x: np.ndarray, ref: np.ndarray, peak: float) -> float:
    """The package's PSNR (:func:`napari_svi.benchmark.metrics.psnr`) with ``peak`` as the data range."""
    from napari_svi.benchmark.metrics import psnr as unit_psnr

    return unit_psnr(np.asarray(ref, np.float64) / peak, np.asarray(x, np.float64) / peak)


def coverage(spec, shape, budget: int, size_multiple: int) -> np.ndarray:
    """How many tiles solve each pixel of a frame under ``budget`` (the tiled restore's plan)."""
    from napari_svi.pieces import plan_restore

    plan = plan_restore(spec, shape, window=None, memory_budget=budget, size_multiple=size_multiple)
    count = np.zeros(plan.frame_shape)
    for rows in plan.rows:
        for cols in plan.cols:
            count[np.ix_(rows.solve, cols.solve)] += 1
    return count


def main(argv: list[str] | None = None) -> int:
    from napari_svi.benchmark.suite import SUITE_CLIPS, load_clip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="nuclei", choices=tuple(SUITE_CLIPS),
                        help="nuclei: the held-out time-lapse crop (--top, --left); actin, mito, walls: the "
                             "realistic suite's drifting held-out crops (napari_svi.benchmark.suite.load_clip)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--top", type=int, default=192, help="first row of the crop")
    parser.add_argument("--left", type=int, default=64, help="first column of the crop")
    parser.add_argument("--box", type=int, default=7, help="temporal box PSF, frames")
    parser.add_argument("--noise", type=float, default=0.01, help="Gaussian noise std, fraction of the clip's range")
    parser.add_argument("--tile", type=int, default=64, help="spatial tile edge, pixels")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gamma", default="auto", help="restore's gamma: auto (one per 64-px window) | piece (default: auto)")
    parser.add_argument("--start", default="tv", help="restore's start: tv | noise (default: tv)")
    parser.add_argument("--blend", default="cv", help="restore's blend: cv | none (default: cv)")
    parser.add_argument("--whole-samples", type=int, default=1,
                        help="also restore the whole frame as the mean of this many samples (> 1), for comparison")
    parser.add_argument("-o", "--output", default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)

    import torch

    from napari_svi import OperatorSpec, degrade, restore
    from napari_svi.datasets import load_heldout_timelapse
    from napari_svi.priors.loading import load_prior

    torch.set_num_threads(args.threads)
    if args.clip == "nuclei":
        clean = load_heldout_timelapse()[: args.frames, args.top : args.top + args.size, args.left : args.left + args.size]
        where = f"heldout nuclei [:{args.frames}, {args.top}:+{args.size}, {args.left}:+{args.size}]"
    else:
        clean = load_clip(args.clip, args.frames, args.size)[0]
        where = f"suite {args.clip} (held-out, drifting), {args.frames} x {args.size} x {args.size}"
    clean = clean.astype(np.float32)
    peak = float(clean.max() - clean.min())
    spec = OperatorSpec(temporal_psf=f"uniform:{args.box}")
    y = degrade(clean, spec, noise_sigma=args.noise * peak, seed=args.seed)
    prior = load_prior("default", "cpu", channels=1)
    kw = dict(prior=prior, steps=args.steps, seed=args.seed, device="cpu", window=None, gamma=args.gamma,
              start=args.start, blend=args.blend)
    budget = args.frames * 20 * 4 * args.tile**2  # what windows.tile_for_budget needs for one tile
    rows = {"measurement": {"psnr_db": psnr(y, clean, peak)}}
    runs = [("whole frame", {}), (f"{args.tile}-px tiles", {"memory_budget": budget})]
    if args.whole_samples > 1:
        runs.append((f"whole frame, mean of {args.whole_samples} samples", {"samples": args.whole_samples}))
    cover = coverage(spec, y.shape, budget, prior.size_multiple)
    for name, extra in runs:
        t0 = time.perf_counter()
        result = restore(y, spec, **kw, **extra)
        rows[name] = {"psnr_db": psnr(result.restored, clean, peak), "seconds": round(time.perf_counter() - t0, 1),
                      "tiles": result.metadata["tiles"]}
        # the PSNR over the pixels that 1, 2, 4 ... tiles solve (overlapping tiles are blended there)
        rows[name]["psnr_db_by_tile_coverage"] = {
            str(int(c)): psnr(result.restored[:, cover == c], clean[:, cover == c], peak) for c in np.unique(cover)}
    names = list(rows)
    rows["difference_db"] = rows[names[2]]["psnr_db"] - rows[names[1]]["psnr_db"]
    record = {"clip": where,
              "degradation": f"uniform:{args.box}, noise {args.noise} of range", "steps": args.steps,
              "gamma": args.gamma, "start": args.start, "blend": args.blend, "eta": result.metadata.get("eta"), "threads": args.threads, "results": rows}
    print(json.dumps(record, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
