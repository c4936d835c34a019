"""gamma per piece against gamma per 64-px window (``restore(gamma=...)``) on the calibration clips, never the held-out ones.

The clips of ``benchmarks/estimate_blind.py --clips dev`` (left halves of the shared stills, drifting, and
the training half of the nuclei time-lapse), 8 x 128 x 128, degraded with each task (a temporal PSF, or
``TEMPORAL+SPATIAL``) and noise 0.01 of the range, seed 0, restored at the defaults with each ``gamma``
setting. Prints the PSNR per clip and the mean change against the first setting.

    OMP_NUM_THREADS=2 python benchmarks/gamma_region_dev.py piece,auto uniform:7,gaussian:1.5,uniform:3+gaussian:1.5
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blend_region_dev import compare  # noqa: E402

from napari_svi import restore  # noqa: E402
from napari_svi.priors.loading import load_prior  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(2)
    prior = load_prior("default", "cpu", channels=1)
    compare(sys.argv[1].split(","), sys.argv[2].split(",") if len(sys.argv) > 2 else ["uniform:7"],
            lambda gamma, y, spec: restore(y, spec, prior=prior, seed=0, device="cpu", window=None, gamma=gamma))
