"""napari-svi: restore microscopy time-lapses with an image diffusion prior.

Kwon & Ye, "Solving Video Inverse Problems Using Image Diffusion Models" (ICLR 2025): time is the
batch axis of a pretrained image diffusion model, DDIM sampling is batch-consistent (noise shared
by all frames) and a few conjugate-gradient steps over the whole spatio-temporal stack follow every
denoising step. This package is the Qt-free core; the napari plugin lives in ``napari_svi._napari``.
"""

import importlib
import sys
import types

from ._version import __version__

# The public names are imported on first use, so that ``import napari_svi.cli`` (the command line)
# does not import PyTorch before it can report anything.
_EXPORTS = {
    "OperatorSpec": ".operators",
    "RestoreCancelled": ".restore",
    "RestoreResult": ".restore",
    "TrainConfig": ".training",
    "degrade": ".degrade",
    "estimate_blur": ".estimate",
    "iter_restore": ".restore",
    "load_prior": ".priors.loading",
    "read_stack": ".io",
    "restore": ".restore",
    "train": ".training",
    "write_stack": ".io",
}

__all__ = ["__version__", *_EXPORTS]


class _Package(types.ModuleType):
    """The package's module type: importing the submodule ``napari_svi.restore`` keeps the function
    :func:`napari_svi.restore` as the package's attribute (the import system would set the module)."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == "." + name:
            value = getattr(value, name)  # the submodule napari_svi.restore, fully run: its function
        super().__setattr__(name, value)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})


sys.modules[__name__].__class__ = _Package
