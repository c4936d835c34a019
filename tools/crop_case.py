"""The new-user crop case of issue 10: Restore at its defaults on 12-frame 96 x 96 crops of the bundled blurred sample.

Each crop is restored as the widget does when prefilled from the sample's record (temporal PSF
uniform:7, symmetric boundary, the recorded noise sigma) and scored against the held-out truth
(PSNR over the crop, data range of the truth crop's 0.1-99.9 percentiles, as the suite scores).

    python tools/crop_case.py --threads 1 [--crops 3] [--json FILE]
"""

import argparse
import json
import sys
import time

import numpy as np
import torch

from napari_svi import OperatorSpec, restore
from napari_svi.benchmark.metrics import psnr
from napari_svi.benchmark.quality import truth_scale
from napari_svi.datasets import load_heldout_timelapse, sample_data_dir
from napari_svi.io import read_stack


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--crops", type=int, default=3, help="how many crops, most structured first (default: 3)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    blurred, info = read_stack(sample_data_dir() / "nuclei_timelapse_blurred.tif")
    record = info.metadata
    op = record.get("operator", {})
    spec = OperatorSpec(temporal_psf=op.get("temporal_psf"), temporal_boundary=op.get("temporal_boundary", "symmetric"))
    sigma = float(record["noise_sigma"])
    truth = load_heldout_timelapse().astype(np.float32)
    # crops of 12 x 96 x 96 on a 96-px grid, most structured (largest truth variance) first
    corners = [(r, c) for r in range(0, truth.shape[1] - 95, 96) for c in range(0, truth.shape[2] - 95, 96)]
    corners.sort(key=lambda rc: -float(truth[:12, rc[0]:rc[0] + 96, rc[1]:rc[1] + 96].var()))
    rows = []
    for r, c in corners[: args.crops]:
        y = np.asarray(blurred[:12, r:r + 96, c:c + 96], np.float32)
        tr = truth[:12, r:r + 96, c:c + 96]
        ts = truth_scale(tr)
        t0 = time.perf_counter()
        out = restore(y, spec, noise_sigma=sigma, threads=args.threads)
        seconds = time.perf_counter() - t0
        row = {"crop": [r, c], "input_psnr": round(psnr(ts.to_unit(tr), ts.to_unit(y)), 2),
               "restored_psnr": round(psnr(ts.to_unit(tr), ts.to_unit(out.restored)), 2), "seconds": round(seconds, 1),
               "blend_weight": out.metadata.get("blend_weight")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
