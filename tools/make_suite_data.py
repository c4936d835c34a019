"""Cut the held-out crops of the realistic quality suite from the shared fluorescence stills.

Each still (``shared/data``, CC BY 4.0, see ``benchmarks/data/suite/README.md``) is split down the
middle: the LEFT half (columns < width // 2) is for training priors, the RIGHT half is held out. From
the right half this takes the 192 x 192 window with the most structure (largest variance of a
lightly smoothed copy, on a coarse grid, deterministic) and writes it as float32 TIFF.

    python tools/make_suite_data.py ../shared/data benchmarks/data/suite
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

SOURCES = {  # file stem -> (kind of structure, clip name)
    "BPAE_actin": "actin filaments (cytoskeleton)",
    "BPAE_mito": "mitochondria (organelles)",
    "maize_clsm": "plant cell walls (membranes)",
}
SIZE = 192


def held_out_window(image: np.ndarray, size: int = SIZE) -> tuple[int, int]:
    """Top-left corner (row, column in the whole image) of the most structured window of the right half."""
    h, w = image.shape
    start = w // 2
    half = ndimage.gaussian_filter(image[:, start:].astype(np.float64), 1.0)
    best, corner = -1.0, (0, start)
    for r in range(0, h - size + 1, 16):
        for c in range(0, half.shape[1] - size + 1, 16):
            v = float(half[r : r + size, c : c + size].var())
            if v > best:
                best, corner = v, (r, start + c)
    return corner


def main(src: str, dst: str) -> None:
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    for stem, what in SOURCES.items():
        image = tifffile.imread(Path(src) / f"{stem}.tif").astype(np.float32)
        r, c = held_out_window(image)
        crop = np.ascontiguousarray(image[r : r + SIZE, c : c + SIZE])
        tifffile.imwrite(out / f"{stem}_heldout.tif", crop, description=f"{what}; rows {r}:{r + SIZE}, "
                         f"columns {c}:{c + SIZE} of {stem}.tif ({image.shape[0]} x {image.shape[1]}); right half held out")
        print(stem, what, (r, c), crop.shape)


if __name__ == "__main__":
    main(*sys.argv[1:3])
