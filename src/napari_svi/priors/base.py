"""The one interface every diffusion prior offers to the sampler.

A prior predicts the noise ``eps`` in ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` for a batch
of frames ``x_t`` of shape ``(B, C, H, W)`` scaled to ``[-1, 1]``, at integer timesteps ``t`` of
its own 1000-step schedule. Adapters for each checkpoint family only have to provide ``network``
(any module ``(x, t) -> eps``) and the schedule it was trained with.
"""

from __future__ import annotations

import torch
from torch import nn


class DiffusionPrior(nn.Module):
    """An eps-prediction image diffusion model plus what the sampler must know about it.

    Parameters
    ----------
    network : nn.Module
        Called as ``network(x, t)`` with ``x`` (B, C, H, W) in [-1, 1] and ``t`` (B,) int64;
        returns eps of shape (B, C, H, W).
    alphas_cumprod : torch.Tensor
        ``alpha_bar[t]`` for the network's training steps, float64, shape (N_train,).
    channels : int
        Number of image channels the network expects.
    size_multiple : int
        Frame height and width are padded to a multiple of this before the network sees them.
    name : str
        Human-readable name recorded in results' metadata.
    """

    def __init__(
        self,
        network: nn.Module,
        alphas_cumprod: torch.Tensor,
        *,
        channels: int,
        size_multiple: int,
        name: str,
        info: dict | None = None,
    ):
        super().__init__()
        self.network = network
        # a float64 CPU tensor, not a buffer: ``.to(device)`` leaves it on the CPU (Apple's MPS has no float64)
        self.alphas_cumprod = alphas_cumprod.detach().to(device="cpu", dtype=torch.float64)
        self.channels = int(channels)
        self.size_multiple = int(size_multiple)
        self.name = name
        self.info = dict(info or {})

    @property
    def n_train_steps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps(x_t, t) for ``x`` (B, C, H, W) in [-1, 1] and ``t`` (B,) integer timesteps."""
        return self.network(x, t)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.predict_noise(x, t)


class GaussianPrior(DiffusionPrior):
    """Analytic prior ``x_0 ~ N(mean, std^2 I)`` (per pixel, in [-1, 1] units) with exact eps.

    For this prior ``E[x_0 | x_t]`` is known in closed form, hence so is the optimal noise
    prediction ``eps = (x_t - sqrt(abar) E[x_0 | x_t]) / sqrt(1 - abar)``. Used to test samplers
    without weights: a sampler run with it must reproduce the Gaussian posterior.
    """

    def __init__(self, mean: torch.Tensor | float, std: float, alphas_cumprod: torch.Tensor, channels: int = 1):
        super().__init__(nn.Identity(), alphas_cumprod, channels=channels, size_multiple=1, name="gaussian")
        self.mean = torch.as_tensor(mean, dtype=torch.float64).detach().cpu()  # float64 master, like alphas_cumprod
        self.std = float(std)

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod[t.cpu()].to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        var0 = self.std**2
        # x_t = sqrt(abar) x0 + sqrt(1-abar) eps  =>  E[x0|x_t] = mean + k (x_t - sqrt(abar) mean)
        k = abar.sqrt() * var0 / (abar * var0 + (1 - abar))
        x0 = mean + k * (x - abar.sqrt() * mean)
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()
