"""Image diffusion priors: one interface (``DiffusionPrior.predict_noise(x, t) -> eps``), the
project's UNet, the guided-diffusion (ADM) UNet, loaders for every checkpoint family, channel
adaptation and tiled evaluation."""

from .adapters import adapt_channels
from .adm import ADMConfig, ADMUNet
from .base import DiffusionPrior, GaussianPrior
from .loading import load_prior, resolve_device
from .tiling import TiledPrior
from .unet import UNet, UNetConfig

__all__ = [
    "ADMConfig",
    "ADMUNet",
    "DiffusionPrior",
    "GaussianPrior",
    "TiledPrior",
    "UNet",
    "UNetConfig",
    "adapt_channels",
    "load_prior",
    "resolve_device",
]
