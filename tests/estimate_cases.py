"""A helper of the blind-estimate tests (not a test module): a clip degraded with known settings."""

import numpy as np

from napari_svi.degrade import degrade
from napari_svi.operators import OperatorSpec


def measured(truth, temporal=None, spatial=None, noise=0.01, seed=0):
    """``truth`` blurred by the given PSFs, with Gaussian noise of ``noise`` times its 99.9th percentile."""
    spec = OperatorSpec(temporal_psf=temporal, spatial_psf=spatial)
    return degrade(truth, spec, noise_sigma=noise * float(np.percentile(truth, 99.9)), seed=seed)
