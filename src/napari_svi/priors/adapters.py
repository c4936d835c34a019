"""Adapters that make networks and priors fit the sampler's ``(x, t) -> eps`` contract.

- :class:`EpsChannels`: keeps the eps part of a learned-variance output (guided-diffusion, diffusers
  ``learned_range``: the first ``C`` of ``2 C`` channels).
- :class:`DiffusersUNet`: a diffusers ``UNet2DModel`` predicting eps, x_0 or v, turned into eps.
- :func:`adapt_channels`: a prior for ``C_prior`` channels used on a stack with ``C`` channels.
"""

from __future__ import annotations

import torch
from torch import nn

from ..validation import check_positive_int
from .base import DiffusionPrior


class EpsChannels(nn.Module):
    """``network(x, t)[:, :channels]``: eps of a network that also predicts its variance."""

    def __init__(self, network: nn.Module, channels: int):
        super().__init__()
        self.network = network
        self.channels = int(channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.network(x, t)[:, : self.channels]


class DiffusersUNet(nn.Module):
    """eps from a diffusers ``UNet2DModel`` trained to predict ``epsilon``, ``sample`` or ``v_prediction``.

    With ``x_t = sqrt(a) x_0 + sqrt(1 - a) eps``: from ``x_0``, ``eps = (x_t - sqrt(a) x_0) / sqrt(1 - a)``;
    from ``v = sqrt(a) eps - sqrt(1 - a) x_0`` (Salimans & Ho 2022), ``eps = sqrt(a) v + sqrt(1 - a) x_t``.
    """

    PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor, prediction_type: str, channels: int):
        super().__init__()
        if prediction_type not in self.PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {self.PREDICTION_TYPES}, got {prediction_type!r}")
        self.unet = unet
        self.prediction_type = prediction_type
        self.channels = int(channels)
        self.alphas_cumprod = alphas_cumprod.detach().to(device="cpu", dtype=torch.float64)  # stays on the CPU

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.unet(x, t).sample[:, : self.channels]
        if self.prediction_type == "epsilon":
            return out
        a = self.alphas_cumprod[t.cpu()].to(device=out.device, dtype=out.dtype).reshape(-1, 1, 1, 1)
        if self.prediction_type == "sample":
            return (x - a.sqrt() * out) / (1 - a).sqrt()
        return a.sqrt() * out + (1 - a).sqrt() * x


class ChannelAdaptedPrior(DiffusionPrior):
    """A prior for ``prior.channels`` channels applied to ``channels``-channel frames.

    - 1-channel stack, 3-channel prior (e.g. ImageNet ADM on fluorescence): the frame is repeated
      into all channels and the predicted eps averaged over them.
    - ``C``-channel stack, 1-channel prior: every channel is denoised as its own image (channels
      become part of the batch), so the prior couples no channels.
    """

    def __init__(self, prior: DiffusionPrior, channels: int):
        if not (prior.channels == 1 or channels == 1):
            raise ValueError(
                f"cannot use a {prior.channels}-channel prior on {channels}-channel data: only a 1-channel "
                "prior on any number of channels, or any prior on 1-channel data, is supported"
            )
        super().__init__(
            prior,
            prior.alphas_cumprod,
            channels=channels,
            size_multiple=prior.size_multiple,
            name=prior.name,
            info={**prior.info, "adapted_from_channels": prior.channels},
        )

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        prior: DiffusionPrior = self.network  # type: ignore[assignment]
        b, c, h, w = x.shape
        if c != self.channels:
            raise ValueError(f"expected {self.channels}-channel frames, got {c}")
        if c == prior.channels:
            return prior.predict_noise(x, t)
        if c == 1:  # gray frame into an RGB prior
            return prior.predict_noise(x.repeat(1, prior.channels, 1, 1), t).mean(dim=1, keepdim=True)
        eps = prior.predict_noise(x.reshape(b * c, 1, h, w), t.repeat_interleave(c))
        return eps.reshape(b, c, h, w)


def adapt_channels(prior: DiffusionPrior, channels: int) -> DiffusionPrior:
    """``prior`` itself when it already has ``channels`` channels, else a :class:`ChannelAdaptedPrior`."""
    if check_positive_int(channels, "channels") == prior.channels:
        return prior
    return ChannelAdaptedPrior(prior, channels)


__all__ = ["ChannelAdaptedPrior", "DiffusersUNet", "EpsChannels", "adapt_channels"]
