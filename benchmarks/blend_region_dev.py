"""Region size of the held-out blend (napari_svi.blend.BLEND_REGION) on the calibration clips, never the held-out ones.

The clips of ``benchmarks/estimate_blind.py --clips dev`` (left halves of the shared stills, drifting, and
the training half of the nuclei time-lapse), 8 x 128 x 128, degraded with each task (a temporal PSF, or
``TEMPORAL+SPATIAL``) and noise 0.01 of the range, seed 0, restored at the defaults with each region size
(``none``: one set of weights per piece). Prints the PSNR per clip and the mean change against the first.

    OMP_NUM_THREADS=2 python benchmarks/blend_region_dev.py none,64,32,16 uniform:7,gaussian:1.5,uniform:3+gaussian:1.5
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimate_blind as eb  # noqa: E402

import napari_svi.blend as b  # noqa: E402
from napari_svi import OperatorSpec, degrade, restore  # noqa: E402
from napari_svi.benchmark.metrics import psnr  # noqa: E402
from napari_svi.priors.loading import load_prior  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def dev_measurements(tasks):
    """``(clip, task, clean, peak, spec, y)`` for every calibration clip and task: 8 x 128 x 128, noise 0.01, seed 0."""
    for clip in eb.DEV:
        clean = eb.load(clip, 8, 128, DATA).astype(np.float32)
        peak = float(clean.max() - clean.min())
        for task in tasks:
            kind, _, val = task.partition("+")
            spec = OperatorSpec(temporal_psf=kind, spatial_psf=val or None)
            yield clip, task, clean, peak, spec, degrade(clean, spec, noise_sigma=0.01 * peak, seed=0)


def compare(settings, tasks, run) -> None:
    """Restore every dev measurement with ``run(setting, y, spec)`` per setting; print the PSNRs and the mean change."""
    res = {}
    for clip, task, clean, peak, spec, y in dev_measurements(tasks):
        row = []
        for setting in settings:
            p = psnr(clean / peak, run(setting, y, spec).restored / peak)
            row.append(p)
            res.setdefault((task, setting), []).append(p)
        print(f"{clip:18s} {task:22s}", " ".join(f"{g}:{p:.2f}" for g, p in zip(settings, row, strict=True)), flush=True)
    for task in tasks:
        base = np.array(res[(task, settings[0])])
        print(task, " ".join(f"{g}: {np.mean(np.array(res[(task, g)]) - base):+.3f} (min {np.min(np.array(res[(task, g)]) - base):+.2f})"
                             for g in settings[1:]))


def _blend_region(region, y, spec):
    b.BLEND_REGION = region
    return restore(y, spec, prior=PRIOR, seed=0, device="cpu", window=None)


if __name__ == "__main__":
    torch.set_num_threads(2)
    PRIOR = load_prior("default", "cpu", channels=1)
    compare([None if r == "none" else int(r) for r in sys.argv[1].split(",")],
            sys.argv[2].split(",") if len(sys.argv) > 2 else ["uniform:7"], _blend_region)
