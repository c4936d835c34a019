"""Check the one modelling choice of the residual gamma rule: the factor m / tr(A^T A) (white error).

For a box of 7 frames (circular) that factor is 7. This sweep multiplies the residual estimate of
the denoised estimate's error variance by other factors c (1, 2, 4, 8, 16: ``scale = c / 7``) on 8
held-out clips (seed 3, 16 x 64 x 64) at noise sigma 0.01 and 0.03 (given), one JSON line per run.
The committed ``benchmarks/results/prior/gamma_factor.jsonl`` came from an earlier form of the rule
that took c directly; with the trace estimated by Hutchinson probes the two agree to about 1 %.

Run:  python tools/gamma_factor_sweep.py default 0 2 1,2,4,8,16   (part 0 of 2; run part 1 too)
"""

import json
import sys

import torch

sys.path.insert(0, "tools")
from evaluate_prior import heldout_clips  # noqa: E402

from napari_svi import OperatorSpec, degrade, load_prior, restore  # noqa: E402
from napari_svi.benchmark.metrics import psnr  # noqa: E402
from napari_svi.sampler import ResidualGamma  # noqa: E402

BOX7_FACTOR = 7.0  # m / tr(A^T A) for a box of 7 frames with circular boundary


def main(prior_name: str, part: int, nparts: int, factors: list[float]) -> None:
    torch.set_num_threads(1)
    restore_module = sys.modules["napari_svi.restore"]
    prior = load_prior(prior_name, "cpu")
    spec = OperatorSpec(temporal_psf="uniform:7", temporal_boundary="circular")
    for k, clip in enumerate(heldout_clips(8, 16, 64, seed=3)):
        if k % nparts != part:
            continue
        for sigma in (0.01, 0.03):
            y = degrade(clip, spec, noise_sigma=sigma, seed=1)
            for c in factors:
                restore_module.auto_gamma = lambda s, c=c: ResidualGamma(s, scale=c / BOX7_FACTOR)
                r = restore(y, spec, prior=prior, noise_sigma=sigma, device="cpu")
                print(json.dumps({"clip": k, "sigma": sigma, "scale": c, "psnr": psnr(r.restored, clip)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [float(c) for c in sys.argv[4].split(",")])
