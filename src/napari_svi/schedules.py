"""Noise schedules of the 1000-step diffusion process and the timesteps a sampler visits.

All schedules are returned as float64 tensors of length ``n_train`` holding
``alpha_bar[t] = prod_{s <= t} (1 - beta[s])`` (Ho et al. 2020, eq. 4).
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "cosine")
N_TRAIN_STEPS = 1000


def linear_betas(n_train: int = N_TRAIN_STEPS, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear beta schedule of DDPM (Ho et al. 2020), scaled as in guided-diffusion for ``n_train != 1000``."""
    scale = 1000.0 / n_train
    return torch.linspace(scale * beta_start, scale * beta_end, n_train, dtype=torch.float64)


def cosine_betas(n_train: int = N_TRAIN_STEPS, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal (2021), eq. 17, betas clipped at ``max_beta``."""

    def f(t: float) -> float:
        return math.cos((t / n_train + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(n_train)]
    return torch.tensor(betas, dtype=torch.float64)


def alphas_cumprod(schedule: str = "linear", n_train: int = N_TRAIN_STEPS) -> torch.Tensor:
    """``alpha_bar[t]`` for ``t = 0 .. n_train - 1`` of the named schedule (``linear`` or ``cosine``)."""
    if schedule == "linear":
        betas = linear_betas(n_train)
    elif schedule == "cosine":
        betas = cosine_betas(n_train)
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0)


def sampling_timesteps(steps: int, n_train: int = N_TRAIN_STEPS) -> list[int]:
    """Evenly spaced timesteps, largest first: ``steps=20`` gives 950, 900, ..., 50, 0 (DDIM's uniform skip)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= n_train:
        raise ValueError(f"steps must be an integer in [1, {n_train}], got {steps!r}")
    stride = n_train / steps
    return [int(round(i * stride)) for i in range(steps)][::-1]


def partial_timesteps(steps: int, start: int, n_train: int = N_TRAIN_STEPS) -> list[int]:
    """``steps`` evenly spaced timesteps from ``start`` down to 0, largest first (a warm start at ``start``).

    ``partial_timesteps(5, 200)`` gives 200, 150, 100, 50, 0; one step is ``[start]``.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= n_train:
        raise ValueError(f"steps must be an integer in [1, {n_train}], got {steps!r}")
    if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start < n_train:
        raise ValueError(f"start must be an integer timestep in [0, {n_train - 1}], got {start!r}")
    if steps == 1:
        return [start]
    return sorted({int(round(start * i / (steps - 1))) for i in range(steps)}, reverse=True)
