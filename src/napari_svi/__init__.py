"""napari-svi: restore microscopy time-lapses with an image diffusion prior.

Kwon & Ye, "Solving Video Inverse Problems Using Image Diffusion Models" (ICLR 2025): time is the
batch axis of a pretrained image diffusion model, DDIM sampling is batch-consistent (noise shared
by all frames) and a few conjugate-gradient steps over the whole spatio-temporal stack follow every
denoising step. This package is the Qt-free core; the napari plugin lives in ``napari_svi._napari``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-svi")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from .degrade import degrade  # noqa: E402
from .io import read_stack, write_stack  # noqa: E402
from .operators import OperatorSpec  # noqa: E402
from .priors.loading import load_prior  # noqa: E402
from .restore import RestoreCancelled, RestoreResult, iter_restore, restore  # noqa: E402
from .training import TrainConfig, train  # noqa: E402

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
