"""Sample data: the held-out half of a real nuclei time-lapse, and a measurement made from it.

Both files ship inside the package (``napari_svi/sample_data/``); ``sample_data/`` at the top of
the repository explains them and holds the script that made the blurred one. The blurred sample
carries its forward model (box of 7 frames, symmetric boundary) and noise level in
``layer.metadata["napari_svi"]``, which "Restore time-lapse" reads to fill in its fields.
"""

from __future__ import annotations

from ..datasets import HELD_OUT_FILE, sample_data_dir
from ..io import read_stack

BLURRED_FILE = "nuclei_timelapse_blurred.tif"
CONTRAST = (0.0, 255.0)  # both are on the uint8 scale of the original recording


def blurred_nuclei_timelapse() -> list[tuple]:
    """The "Blurred nuclei time-lapse" sample: 30 x 511 x 256 (T, Y, X) with its operator in metadata."""
    data, info = read_stack(sample_data_dir() / BLURRED_FILE)
    meta = {
        "name": "blurred nuclei",
        "contrast_limits": CONTRAST,
        "colormap": "gray",
        "metadata": {"napari_svi": info.metadata},
    }
    return [(data, meta, "image")]


def nuclei_timelapse_ground_truth() -> list[tuple]:
    """The "Nuclei time-lapse (ground truth)" sample: the held-out stack the blurred one was made from."""
    data, _ = read_stack(sample_data_dir() / HELD_OUT_FILE)
    meta = {
        "name": "nuclei ground truth",
        "contrast_limits": CONTRAST,
        "colormap": "gray",
        "metadata": {"napari_svi": {"kind": "ground truth", "source": HELD_OUT_FILE}},
    }
    return [(data, meta, "image")]
