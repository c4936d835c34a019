"""napari-svi: restore microscopy time-lapses with an image diffusion prior.

Kwon & Ye, "Solving Video Inverse Problems Using Image Diffusion Models" (ICLR 2025): time is the
batch axis of a pretrained image diffusion model, DDIM sampling is batch-consistent (noise shared
by all frames) and a few conjugate-gradient steps over the whole spatio-temporal stack follow every
denoising step. This package is the Qt-free core; the napari plugin lives in ``napari_svi._napari``.
"""

from ._version import __version__
from .degrade import degrade
from .io import read_stack, write_stack
from .operators import OperatorSpec
from .priors.loading import load_prior
from .restore import RestoreCancelled, RestoreResult, iter_restore, restore
from .training import TrainConfig, train

__all__ = [
    "__version__",
    "OperatorSpec",
    "RestoreCancelled",
    "RestoreResult",
    "TrainConfig",
    "degrade",
    "iter_restore",
    "load_prior",
    "read_stack",
    "restore",
    "train",
    "write_stack",
]
