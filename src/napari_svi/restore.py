"""``restore``: the one entry point that the widget, the command line and scripts call.

It checks every argument before any heavy work, maps intensities to [0, 1] by percentiles, pads
frames to the prior's size multiple, runs the batch-consistent sampler (:mod:`napari_svi.sampler`)
on each 2-D + t stack, and maps the estimate back to the input's units as float32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from .intensity import DEFAULT_PERCENTILES, IntensityScale, percentile_scale
from .operators import Crop, OperatorSpec
from .priors.base import DiffusionPrior
from .sampler import default_gamma, svi_steps
from .validation import check_positive_int, check_stack, load_mask, move_time_axis


class RestoreCancelled(Exception):
    """The caller stopped a restore before it finished; no result exists."""


@dataclass
class RestoreResult:
    """What :func:`restore` returns.

    Attributes
    ----------
    restored : np.ndarray, float32
        Estimate of the true stack in the input's units and axis order (the posterior mean when
        several samples were drawn). Time and image sizes are those of the true stack.
    std : np.ndarray or None
        Per-pixel standard deviation over the posterior samples (``samples > 1``), same shape.
    samples : np.ndarray or None
        All samples, shape ``(samples, *restored.shape)``, when ``samples > 1``.
    metadata : dict
        Every parameter, the prior's name, the noise level used and the napari-svi version.
    """

    restored: np.ndarray
    std: np.ndarray | None = None
    samples: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)


def estimate_noise_sigma(y01: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Standard deviation of white noise in a measurement ``(T, H, W)`` on the [0, 1] scale.

    Without a mask, scikit-image's wavelet estimator (Donoho & Johnstone 1994) per frame, median
    over frames. With a mask, a robust MAD of ``y - mean of its 4 neighbours`` over pixels whose
    neighbours are all observed (that residual has variance ``1.25 sigma^2`` for white noise).
    """
    if mask is None:
        from skimage.restoration import estimate_sigma

        return float(np.median([estimate_sigma(f) for f in y01]))
    m = np.broadcast_to(mask != 0, y01.shape)
    inner = m[:, 1:-1, 1:-1] & m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:]
    neigh = (y01[:, :-2, 1:-1] + y01[:, 2:, 1:-1] + y01[:, 1:-1, :-2] + y01[:, 1:-1, 2:]) / 4
    r = (y01[:, 1:-1, 1:-1] - neigh)[inner]
    if r.size < 16:
        raise ValueError("noise_sigma='auto' needs more observed pixels; give noise_sigma as a number")
    return float(1.4826 * np.median(np.abs(r - np.median(r))) / math.sqrt(1.25))


def _check_settings(steps, eta, cg_steps, samples, seed, noise_sigma, gamma) -> None:
    check_positive_int(steps, "steps")
    check_positive_int(cg_steps, "cg_steps", minimum=0)
    check_positive_int(samples, "samples")
    check_positive_int(seed, "seed", minimum=0)
    if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    if not (noise_sigma is None or noise_sigma == "auto" or (
        isinstance(noise_sigma, (int, float)) and math.isfinite(noise_sigma) and noise_sigma >= 0
    )):
        raise ValueError(f"noise_sigma must be 'auto', None (noiseless) or a number >= 0, got {noise_sigma!r}")
    if not (gamma == "auto" or (isinstance(gamma, (int, float)) and gamma > 0)):
        raise ValueError(f"gamma must be 'auto' or a positive number (inf = noiseless form), got {gamma!r}")


def iter_restore(
    data,
    operator: OperatorSpec | None = None,
    *,
    prior: str | DiffusionPrior = "default",
    time_axis: int = 0,
    steps: int = 20,
    eta: float = 0.15,
    cg_steps: int = 5,
    noise_sigma: float | str | None = "auto",
    gamma: float | str = "auto",
    seed: int = 0,
    samples: int = 1,
    device: str = "auto",
    batch_consistent: bool = True,
    true_frames: int | None = None,
    preview_every: int = 0,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> Generator[dict, None, RestoreResult]:
    """Restore a time-lapse step by step; a generator that returns a :class:`RestoreResult`.

    Everything is validated before the first yield. Each yield is ``{"step", "total", "estimate"}``
    with ``estimate`` the current estimate (input units, true-stack shape) every ``preview_every``
    steps and ``None`` otherwise. Closing the generator cancels the restore. See :func:`restore`
    for the parameters.
    """
    from .priors.loading import load_prior, resolve_device

    t_start = time.perf_counter()
    spec = operator if operator is not None else OperatorSpec()
    if not isinstance(spec, OperatorSpec):
        raise ValueError(f"operator must be an OperatorSpec or None, got {type(spec).__name__}")
    arr = check_stack(data, time_axis=time_axis, name="data")
    _check_settings(steps, eta, cg_steps, samples, seed, noise_sigma, gamma)
    check_positive_int(preview_every, "preview_every", minimum=0)
    stacks, restore_axes = move_time_axis(arr, time_axis)
    n_stacks, t_m, h_m, w_m = stacks.shape
    spec.validate((t_m, h_m, w_m))
    t, h, w = spec.true_shape((t_m, h_m, w_m), true_frames)
    dev = resolve_device(device)
    prior_obj = prior if isinstance(prior, DiffusionPrior) else load_prior(prior, dev, channels=1)
    prior_obj = prior_obj.to(dev).eval()
    if prior_obj.channels != 1:
        raise ValueError(f"the prior expects {prior_obj.channels} channels; load it with channels=1 to adapt it")
    mask = None if spec.mask is None else load_mask(spec.mask)

    m = prior_obj.size_multiple
    hp, wp = -(-h // m) * m, -(-w // m) * m
    operator_true = spec.build((t, 1, h, w), device=dev, dtype=torch.float32)
    op = operator_true @ Crop((t, 1, hp, wp), (t, 1, h, w)) if (hp, wp) != (h, w) else operator_true

    out = np.zeros((samples, n_stacks, t, h, w), dtype=np.float32)
    scales: list[IntensityScale] = []
    sigmas: list[float | None] = []
    gammas: list[float] = []
    total = n_stacks * samples * steps
    done = 0
    for k in range(n_stacks):
        y_units = np.asarray(stacks[k])
        scale = percentile_scale(y_units, percentiles, name="data")
        y01 = scale.to_unit(y_units)
        if noise_sigma == "auto":
            sigma01 = estimate_noise_sigma(y01, mask)
        else:
            sigma01 = None if noise_sigma is None else scale.sigma_to_unit(noise_sigma)
        g = (math.inf if not sigma01 else default_gamma(sigma01)) if gamma == "auto" else float(gamma)
        scales.append(scale)
        sigmas.append(sigma01)
        gammas.append(g)
        y = torch.from_numpy(y01)[:, None].to(dev)
        for s in range(samples):
            gen = torch.Generator(device="cpu").manual_seed(seed + s)
            for info in svi_steps(
                prior_obj, y, op, steps=steps, eta=eta, cg_steps=cg_steps, gamma=g,
                batch_consistent=batch_consistent, generator=gen,
            ):
                done += 1
                estimate = None
                last = info["i"] + 1 == steps
                if last or (preview_every and done % preview_every == 0):
                    x01 = info["denoised"][:, 0, :h, :w].float().cpu().numpy()
                    out[s, k] = scale.from_unit(x01)
                    if not last:
                        estimate = restore_axes(out[s].copy())
                yield {"step": done, "total": total, "estimate": estimate}

    restored = restore_axes(out.mean(axis=0) if samples > 1 else out[0])
    std = restore_axes(out.std(axis=0)) if samples > 1 else None
    all_samples = np.stack([restore_axes(o) for o in out]) if samples > 1 else None
    from . import __version__

    metadata = {
        "napari_svi_version": __version__,
        "method": "SVI (Kwon & Ye, ICLR 2025): batch-consistent DDIM + CG data consistency",
        "prior": prior_obj.name,
        "operator": spec.to_dict(),
        "time_axis": int(time_axis),
        "steps": steps,
        "eta": float(eta),
        "cg_steps": cg_steps,
        "noise_sigma": noise_sigma if noise_sigma in (None, "auto") else float(noise_sigma),
        "noise_sigma_used": [None if s is None else s * sc.span for s, sc in zip(sigmas, scales)],
        "gamma": [g if math.isfinite(g) else "inf" for g in gammas],
        "seed": seed,
        "samples": samples,
        "batch_consistent": bool(batch_consistent),
        "device": str(dev),
        "intensity_scale": [[sc.low, sc.high] for sc in scales],
        "percentiles": list(percentiles),
        "input_shape": list(arr.shape),
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    return RestoreResult(restored=restored, std=std, samples=all_samples, metadata=metadata)


def restore(data, operator: OperatorSpec | None = None, *, callback: Callable[[dict], object] | None = None, **kwargs) -> RestoreResult:
    """Restore a degraded microscopy time-lapse with an image diffusion prior.

    Parameters
    ----------
    data : array_like, shape (..., T_m, ..., Y_m, X_m)
        The measurement (NumPy or dask), any numeric dtype and range, time axis at
        ``time_axis``; the last two axes are Y and X. Further axes (channels, z) are restored one
        2-D + t stack at a time. Not modified.
    operator : OperatorSpec, optional
        Forward model A (temporal PSF, temporal subsampling, spatial PSF, downsampling, mask);
        ``None`` means identity (pure denoising).
    prior : str or DiffusionPrior
        ``"default"`` (bundled), a prior folder, a diffusers folder or an ADM checkpoint file.
    time_axis : int
        Index of the time axis in ``data``.
    steps : int
        Denoising steps (network evaluations per frame); 20 in the paper.
    eta : float
        DDIM stochasticity in [0, 1]; 0.15 in the paper.
    cg_steps : int
        Conjugate-gradient iterations after every step; 5 in the paper.
    noise_sigma : float, "auto" or None
        Standard deviation of the measurement noise in the data's units; ``"auto"`` estimates it,
        ``None`` assumes noiseless data (solves the normal equations).
    gamma : float or "auto"
        Data-consistency weight of the noisy CG form; ``"auto"`` derives it from the noise level.
    seed : int
        Seed; the same seed, input and device give the same result.
    samples : int
        Posterior samples to draw (seeds ``seed .. seed + samples - 1``); with more than one the
        result is their mean and ``std`` their per-pixel standard deviation.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    batch_consistent : bool
        Share noise across frames (the method); ``False`` is the ablation.
    true_frames : int, optional
        Number of frames of the true stack when ``temporal_subsample > 1`` (default
        ``(T_m - 1) * s + 1``).
    callback : callable, optional
        Receives ``{"step", "total", "estimate"}`` after every step; returning ``True`` cancels
        (raises :class:`RestoreCancelled`).

    Returns
    -------
    RestoreResult

    Notes
    -----
    Measurement model ``y = A x + n``. Each step: ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``,
    then ``M`` CG steps on ``(I + gamma A^T A) x = x0 + gamma A^T y`` (or ``A^T A x = A^T y`` when
    noiseless), then DDIM re-noising with noise shared by all frames.

    Examples
    --------
    >>> from napari_svi import OperatorSpec, restore
    >>> result = restore(stack, OperatorSpec(temporal_psf="uniform:7"), steps=20)  # doctest: +SKIP
    """
    gen = iter_restore(data, operator, **kwargs)
    try:
        while True:
            info = next(gen)
            if callback is not None and callback(info) is True:
                gen.close()
                raise RestoreCancelled(f"restore cancelled after step {info['step']} of {info['total']}")
    except StopIteration as stop:
        return stop.value
