"""Batch-consistent DDIM sampling with conjugate-gradient data consistency (SVI).

Kwon & Ye, "Solving Video Inverse Problems Using Image Diffusion Models", ICLR 2025, on top of
DDS (Chung, Lee & Ye, ICLR 2024). Time is the batch axis of an image diffusion model; the start
``x_T`` and the fresh noise of every step are drawn once for one frame and shared by all frames;
after every Tweedie denoising step a few CG iterations over the whole stack enforce ``y = A x``.

:func:`svi_steps` is the loop as a generator that yields after every step (what a napari
``thread_worker`` needs for progress, previews and cancel); :func:`svi_sample` drains it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .cg import conjugate_gradient
from .noise import ResidualGamma, relative_variance
from .operators.base import LinearOperator
from .priors.base import DiffusionPrior
from .schedules import partial_timesteps, sampling_timesteps

GammaRule = Callable[[int, float], float]


def operator_statistics(operator: LinearOperator, device, dtype=torch.float32, probes: int = 4) -> tuple[float, float]:
    """``(m, tr(A^T A))``: the number of measured entries and a Hutchinson estimate of the trace.

    ``m`` counts the entries of ``A 1`` that are not zero (masked pixels and missing frames drop
    out); the trace is the mean of ``||A z||^2`` over ``probes`` fixed-seed Rademacher vectors ``z``.
    """
    shape = tuple(operator.in_shape)
    measured = float((operator.forward(torch.ones(shape, device=device, dtype=dtype)) != 0).sum())
    g = torch.Generator(device="cpu").manual_seed(12345)
    total = 0.0
    for _ in range(probes):
        z = (torch.randint(0, 2, shape, generator=g, dtype=torch.int8) * 2 - 1).to(device=device, dtype=dtype)
        total += float(operator.forward(z).square().sum())
    return measured, total / probes


class Regions:
    """Square windows of the measurement (about ``region`` true pixels a side) for a gamma per window.

    The windows overlap by half, as 64-px tiles do (:func:`napari_svi.windows.spread_starts`), so a
    structure in the middle of a frame gets a window of its own instead of the corner of four.
    :meth:`sums` adds a measurement-shaped tensor up per window (over frames and channels too);
    :meth:`expand` turns one value per window into a smooth weight map of the measurement's frame size
    (the windows' raised-cosine blend weights, :func:`napari_svi.windows.blend_weights`, in the log
    domain), so no seam marks a window edge.
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], region: int):
        from .windows import blend_weights, spread_starts

        self.hm, self.wm = int(out_shape[-2]), int(out_shape[-1])
        self.b = max(4, round(region * self.hm / int(in_shape[-2])))  # in measurement pixels (downsampling)
        self.rows, self.cols = (spread_starts(n, self.b, self.b // 2) for n in (self.hm, self.wm))
        self.nr, self.nc = len(self.rows), len(self.cols)
        self.ramps = [torch.as_tensor(np.stack([np.pad(w, (s, n - s - w.size)) for s, w in zip(starts, blend_weights(starts, self.b, n), strict=True)]))
                      for starts, n in ((self.rows, self.hm), (self.cols, self.wm))]

    def sums(self, a: torch.Tensor) -> torch.Tensor:
        a = a.to(torch.float64).sum(dim=tuple(range(a.ndim - 2)))
        c = torch.nn.functional.pad(a.cumsum(0).cumsum(1), (1, 0, 1, 0))  # c[i, j] = a[:i, :j].sum()
        r0 = torch.tensor(self.rows)
        c0 = torch.tensor(self.cols)
        r1, c1 = (r0 + self.b).clamp_max(self.hm), (c0 + self.b).clamp_max(self.wm)
        return c[r1][:, c1] - c[r0][:, c1] - c[r1][:, c0] + c[r0][:, c0]

    def expand(self, values: torch.Tensor) -> torch.Tensor:
        if values.numel() == 1:
            return values.reshape(1, 1, 1, 1).float()
        rows, cols = (r.to(values.device, torch.float64) for r in self.ramps)
        return (rows.T @ values.double().log() @ cols).exp().float()[None, None]


def regional_statistics(operator: LinearOperator, regions: Regions, device, dtype=torch.float32,
                        probes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`operator_statistics` per region: measured entries and the trace of ``A^T A`` restricted to each."""
    shape = tuple(operator.in_shape)
    measured = regions.sums((operator.forward(torch.ones(shape, device=device, dtype=dtype)) != 0).to(dtype))
    g = torch.Generator(device="cpu").manual_seed(12345)
    total = torch.zeros_like(measured)
    for _ in range(probes):
        z = (torch.randint(0, 2, shape, generator=g, dtype=torch.int8) * 2 - 1).to(device=device, dtype=dtype)
        total += regions.sums(operator.forward(z).square())
    return measured, total / probes


def _noise(shape: tuple[int, ...], batch_consistent: bool, generator: torch.Generator, device, dtype) -> torch.Tensor:
    """Gaussian noise for a stack ``(T, C, H, W)``: one draw repeated over T when batch-consistent."""
    if batch_consistent:
        z = torch.randn((1, *shape[1:]), generator=generator, device=generator.device, dtype=torch.float32)
        z = z.expand(shape)
    else:
        z = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return z.to(device=device, dtype=dtype).contiguous()


def data_consistency(
    x0: torch.Tensor,
    y: torch.Tensor,
    operator: LinearOperator,
    cg_steps: int,
    gamma: float | torch.Tensor,
) -> torch.Tensor:
    """A few CG steps from ``x0`` (on the [0, 1] scale) towards the data ``y``.

    ``gamma = inf`` solves the noiseless normal equations ``A^T A x = A^T y``; a finite ``gamma``
    solves ``(I + gamma A^T A) x = x0 + gamma A^T y`` (DDS, eq. 12), i.e. the proximal step
    ``argmin 1/2 ||x - x0||^2 + gamma/2 ||y - A x||^2``. A tensor ``gamma`` (a weight per
    measured entry, broadcast to ``y``) weighs the data term entry by entry:
    ``(I + A^T W A) x = x0 + A^T W y``.
    """
    if torch.is_tensor(gamma):
        return conjugate_gradient(lambda v: v + operator.adjoint(gamma * operator.forward(v)),
                                  x0 + operator.adjoint(gamma * y), x0, cg_steps)
    aty = operator.adjoint(y)
    if math.isinf(gamma):
        return conjugate_gradient(operator.normal, aty, x0, cg_steps)
    return conjugate_gradient(lambda v: v + gamma * operator.normal(v), x0 + gamma * aty, x0, cg_steps)


def unseen_frames(operator: LinearOperator) -> torch.Tensor | None:
    """Frames of the stack that no measurement depends on (``A^T`` is zero there), or ``None``.

    Frame interpolation (temporal subsampling without temporal blur), or a whole frame masked out.
    """
    probe = torch.rand(operator.out_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    reach = operator.adjoint(probe.to(torch.float32)).abs().amax(dim=tuple(range(1, len(operator.in_shape))))
    unseen = reach == 0
    return unseen.cpu() if bool(unseen.any()) and not bool(unseen.all()) else None


#: A :func:`fill_unseen` weight that replaces frames without data by the interpolation (to float precision).
INTERPOLATE = 1e12


def fill_unseen(x: torch.Tensor, unseen: torch.Tensor, weight: float) -> torch.Tensor:
    """Pull frames without data towards the linear interpolation of their nearest measured frames.

    ``x_k <- (x_k + weight * interp_k) / (1 + weight)`` for every unseen frame ``k``; frames beyond the
    first or last measured one take its value. Without this, data consistency never touches such
    frames and they stay unconditional prior samples.
    """
    seen_idx = torch.nonzero(~unseen).flatten().tolist()
    out = x.clone()
    for k in torch.nonzero(unseen).flatten().tolist():
        before = [i for i in seen_idx if i < k]
        after = [i for i in seen_idx if i > k]
        if before and after:
            a, b = before[-1], after[0]
            w = (k - a) / (b - a)
            interp = (1 - w) * x[a] + w * x[b]
        else:
            interp = x[before[-1] if before else after[0]]
        out[k] = (x[k] + weight * interp) / (1 + weight)
    return out


def svi_steps(
    prior: DiffusionPrior,
    y: torch.Tensor,
    operator: LinearOperator,
    *,
    steps: int = 20,
    eta: float = 0.15,
    cg_steps: int = 5,
    gamma: float | GammaRule = math.inf,
    batch_consistent: bool = True,
    generator: torch.Generator | None = None,
    noise: Callable[[int], torch.Tensor] | None = None,
    fill_weight: float = 4.0,
    start: torch.Tensor | None = None,
    start_t: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Iterator[dict]:
    """Run SVI step by step, yielding ``{"i", "t", "steps", "x", "denoised"}`` after each step.

    Parameters
    ----------
    prior : DiffusionPrior
        Noise predictor; sees the stack ``(T, C, H, W)`` as a batch of T frames in [-1, 1].
    y : torch.Tensor
        Measurement on the [0, 1] scale, shape ``operator.out_shape``.
    operator : LinearOperator
        Forward model ``A`` from the stack (shape ``operator.in_shape`` = ``(T, C, H, W)``, H and W
        multiples of ``prior.size_multiple``) to ``y``.
    steps : int
        Number of denoising steps (NFE), evenly spaced over the prior's 1000-step schedule.
    eta : float
        DDIM stochasticity in [0, 1]: the fraction of fresh noise when re-noising.
    cg_steps : int
        CG iterations per step (``M``).
    gamma : float, callable or ResidualGamma
        Data-consistency weight; ``inf`` for noiseless data. A callable gets ``(i, alpha_bar_t)``;
        a :class:`ResidualGamma` sets it at every step from the residual of the denoised estimate.
    batch_consistent : bool
        Share the start and the per-step noise across frames (the paper's method). ``False``
        draws them per frame (the ablation).
    generator : torch.Generator, optional
        Source of randomness (its device decides where noise is drawn); seeded by the caller.
    noise : callable, optional
        ``noise(k)`` returns the k-th noise draw (k = 0 is x_T, k = i + 1 the noise after step i),
        shape ``(1 or T, C, H, W)``; replaces ``generator``. Lets spatial tiles cut their noise from
        one frame-sized field so that overlapping tiles agree.
    fill_weight : float
        For frames that no measurement reaches (frame interpolation): weight of the pull towards
        the linear interpolation of the nearest measured frames after every CG step
        (:func:`fill_unseen`); 0 leaves them to the prior alone.
    start : torch.Tensor, optional
        A warm start (Chung, Sim & Ye, "Come-Closer-Diffuse-Faster", CVPR 2022): an estimate of
        the clean stack on the [0, 1] scale, shape ``operator.in_shape``, diffused forward to
        timestep ``start_t`` (``x = sqrt(abar) (2 start - 1) + sqrt(1 - abar) z`` with the first
        noise draw) instead of starting from pure noise; the ``steps`` steps then run from
        ``start_t`` down to 0 (:func:`~napari_svi.schedules.partial_timesteps`).
    start_t : int, optional
        The timestep of the warm start (required with ``start``).

    Yields
    ------
    dict
        ``i`` (0-based step), ``t`` (timestep), ``steps``, ``x`` (state for the next step in
        [-1, 1], or the final estimate after the last step), ``denoised`` (data-consistent
        estimate of the clean stack on the [0, 1] scale).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if cg_steps < 0:
        raise ValueError(f"cg_steps must be >= 0, got {cg_steps}")
    shape = tuple(operator.in_shape)
    device = y.device
    y = operator.observed(y)  # residuals and gamma over observed entries only, whatever y holds elsewhere
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(0)
    abar = prior.alphas_cumprod.to(torch.float64).cpu()
    if (start is None) != (start_t is None):
        raise ValueError("start and start_t go together: give both or neither")
    if start is not None and tuple(start.shape) != shape:
        raise ValueError(f"start must have the operator's input shape {shape}, got {tuple(start.shape)}")
    timesteps = (sampling_timesteps(steps, prior.n_train_steps) if start is None
                 else partial_timesteps(steps, int(start_t), prior.n_train_steps))
    adaptive = gamma if isinstance(gamma, ResidualGamma) else None
    gamma_rule = gamma if callable(gamma) else (lambda i, a, g=float(gamma): g)
    regions = None
    if adaptive is not None and adaptive.region is not None:
        regions = Regions(shape, tuple(operator.out_shape), adaptive.region)
        measured, trace = regional_statistics(operator, regions, device, dtype)
        seen = operator.forward(torch.ones(shape, device=device, dtype=dtype)) != 0
        noise_share = regions.sums(relative_variance(y, seen))
    elif adaptive is not None:
        measured, trace = operator_statistics(operator, device, dtype)
    unseen = unseen_frames(operator) if fill_weight > 0 else None

    def draw(k: int) -> torch.Tensor:
        if noise is None:
            return _noise(shape, batch_consistent, generator, device, dtype)
        return noise(k).to(device=device, dtype=dtype).expand(shape).contiguous()

    x = draw(0)
    if start is not None:
        a0 = float(abar[timesteps[0]])
        x = math.sqrt(a0) * (2 * start.to(device=device, dtype=dtype) - 1) + math.sqrt(1 - a0) * x
    for i, t in enumerate(timesteps):
        a_t = float(abar[t])
        a_prev = float(abar[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
        with torch.inference_mode():
            eps = prior.predict_noise(x, t_batch).to(dtype)
        eps = eps.clone()  # leave inference mode: CG updates tensors in place
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        x0 = (x0 + 1) / 2
        if regions is not None:
            g_regions = adaptive.regional(regions.sums((y - operator.forward(x0)).square()), measured, trace, noise_share)
            weight = regions.expand(g_regions).to(device=device, dtype=dtype)
            g = float(g_regions.median())  # reported: the median region's gamma
        elif adaptive is not None:
            g = weight = adaptive(float((y - operator.forward(x0)).square().sum()), measured, trace)
        else:
            g = weight = gamma_rule(i, a_t)
        x0 = data_consistency(x0, y, operator, cg_steps, weight)
        if unseen is not None:
            x0 = fill_unseen(x0, unseen.to(x0.device), fill_weight)
        if i + 1 == len(timesteps):
            yield {"i": i, "t": t, "steps": len(timesteps), "x": 2 * x0 - 1, "denoised": x0, "gamma": g}
            return
        z = draw(i + 1)
        x = math.sqrt(a_prev) * (2 * x0 - 1) + math.sqrt(1 - a_prev) * (eta * z + math.sqrt(1 - eta**2) * eps)
        yield {"i": i, "t": t, "steps": len(timesteps), "x": x, "denoised": x0, "gamma": g}


def svi_sample(
    prior: DiffusionPrior,
    y: torch.Tensor,
    operator: LinearOperator,
    *,
    callback: Callable[[dict], object] | None = None,
    **kwargs,
) -> torch.Tensor:
    """Run :func:`svi_steps` to the end and return the estimate on the [0, 1] scale.

    ``callback`` receives each step's dict; returning ``True`` stops and raises
    :class:`SamplingCancelled`.
    """
    out = None
    for info in svi_steps(prior, y, operator, **kwargs):
        out = info["denoised"]
        if callback is not None and callback(info) is True:
            raise SamplingCancelled(f"cancelled after step {info['i'] + 1} of {info['steps']}")
    return out


class SamplingCancelled(Exception):
    """Raised when a progress callback asks the sampler to stop."""
