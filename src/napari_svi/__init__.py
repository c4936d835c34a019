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

_EXPORTS = {
    "restore": "napari_svi.restore",
    "iter_restore": "napari_svi.restore",
    "RestoreResult": "napari_svi.restore",
    "RestoreCancelled": "napari_svi.restore",
    "OperatorSpec": "napari_svi.operators",
    "degrade": "napari_svi.degrade",
    "load_prior": "napari_svi.priors.loading",
    "train": "napari_svi.training",
    "TrainConfig": "napari_svi.training",
    "read_stack": "napari_svi.io",
    "write_stack": "napari_svi.io",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    # Lazy: `import napari_svi` (done by napari when it reads the manifest) must not import torch.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'napari_svi' has no attribute {name!r}")
