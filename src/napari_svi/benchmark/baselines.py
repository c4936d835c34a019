"""Classical restoration baselines that use the same forward operator ``A`` as SVI.

All work on ``(T, C, H, W)`` torch tensors on the [0, 1] scale, with ``y`` of shape
``operator.out_shape``, and return an estimate of shape ``operator.in_shape``. Each iterative one is
a step generator (yields ``{"i", "x"}`` after every iteration, so a caller can watch or stop it)
plus a thin function that drains it.

- :func:`measurement_estimate`: the measurement brought to the true stack's grid (no solving).
- :func:`cg_least_squares`: conjugate gradient on the normal equations ``A^T A x = A^T y``.
- :func:`richardson_lucy`: the Richardson-Lucy multiplicative update on the whole spatio-temporal
  operator (needs a nonnegative ``A``: convolutions with nonnegative PSFs, block means, masks).
- :func:`tv_admm`: total-variation regularised least squares solved by ADMM.
- :func:`tv_denoise`: 3-D TV denoising, run after a few CG steps ("CG + TV").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..cg import conjugate_gradient
from ..classical import gradient, gradient_adjoint, richardson_lucy, richardson_lucy_steps, tv_admm, tv_admm_steps  # noqa: F401 (the baselines' TV and RL)
from ..operators import OperatorSpec
from ..operators.base import LinearOperator

# ---------------------------------------------------------------- the measurement on the true grid


def measurement_estimate(y: np.ndarray, spec: OperatorSpec, true_shape: tuple[int, int, int]) -> np.ndarray:
    """The measurement resampled to the true stack's grid: what a user sees before any restoration.

    Parameters
    ----------
    y : numpy.ndarray, shape (T_m, H_m, W_m)
        Measurement in any units; missing (masked) pixels stay as they are in ``y`` (zero).
    spec : OperatorSpec
        Its ``temporal_subsample`` and ``downsample`` say how to resample.
    true_shape : tuple of int
        ``(T, H, W)`` of the true stack.

    Returns
    -------
    numpy.ndarray, float32, shape (T, H, W)
        Frames linearly interpolated in time where only every ``s``-th frame was measured (frames
        after the last measured one repeat it); frames upsampled bilinearly (``skimage.transform.
        resize``, order 1, pixel centres aligned with the block means) where ``downsample > 1``.
    """
    from skimage.transform import resize

    t, h, w = true_shape
    y = np.asarray(y, dtype=np.float32)
    if y.shape[1:] != (h, w):
        y = np.stack([resize(f, (h, w), order=1, mode="edge", anti_aliasing=False) for f in y]).astype(np.float32)
    s = int(spec.temporal_subsample)
    if y.shape[0] != t:
        measured = np.arange(y.shape[0]) * s
        flat = y.reshape(y.shape[0], -1)
        out = np.empty((t, flat.shape[1]), dtype=np.float32)
        for k in range(t):
            j = min(np.searchsorted(measured, k, side="right") - 1, len(measured) - 1)
            if measured[j] == k or j + 1 >= len(measured):
                out[k] = flat[j]
            else:
                a = (k - measured[j]) / s
                out[k] = (1 - a) * flat[j] + a * flat[j + 1]
        y = out.reshape(t, h, w)
    return y


# ---------------------------------------------------------------- conjugate gradient (no prior)


def cg_least_squares(
    y: torch.Tensor, operator: LinearOperator, n_iter: int, x0: torch.Tensor | None = None, tol: float = 0.0
) -> torch.Tensor:
    """Least squares ``argmin ||A x - y||^2`` by CG on ``A^T A x = A^T y`` from ``x0`` (default ``A^T y``).

    SVI's data-consistency step without the prior. With few iterations the start acts as a
    regulariser; run to convergence (``tol`` > 0, many iterations) it fits the noise too.
    """
    aty = operator.adjoint(y)
    return conjugate_gradient(operator.normal, aty, aty if x0 is None else x0, n_iter, tol=tol)


# ---------------------------------------------------------------- Richardson-Lucy


def is_nonnegative(spec: OperatorSpec) -> bool:
    """Whether every part of ``spec`` has nonnegative weights (so Richardson-Lucy applies)."""
    kernel = spec.temporal_kernel()
    psf = spec.spatial_kernel()
    return (kernel is None or bool(np.all(kernel >= 0))) and (psf is None or bool(np.all(psf >= 0)))


# ---------------------------------------------------------------- oracle tuning on the ground truth


def best_iterate(steps: Iterator[dict], score: Callable[[torch.Tensor], float]) -> tuple[torch.Tensor, int, float]:
    """Drain ``steps`` and keep the iterate with the highest ``score`` (e.g. PSNR to the truth).

    Returns ``(x, iterations, score)`` with ``iterations`` = index + 1 of the best iterate.
    """
    best, best_i, best_s = None, 0, -math.inf
    for info in steps:
        s = score(info["x"])
        if s > best_s:
            best, best_i, best_s = info["x"].clone(), info["i"] + 1, s
    if best is None:
        raise ValueError("the iteration produced no iterate")
    return best, best_i, best_s


def log_search(score: Callable[[float], float], start: float, factor: float = 10 ** 0.5, *,
               max_evals: int = 8, refine: bool = True) -> tuple[float, float, dict[float, float]]:
    """Maximise ``score(value)`` over positive values on a geometric grid; returns ``(best, score, tried)``.

    Evaluates ``start``, walks by ``factor`` in the improving direction until the score drops (at
    most ``max_evals`` evaluations), then, if ``refine``, tries the two half-steps around the best.
    """
    tried: dict[float, float] = {}

    def f(v: float) -> float:
        if v not in tried:
            tried[v] = score(v)
        return tried[v]

    f(start)
    f(start * factor)
    direction = factor if tried[start * factor] > tried[start] else 1 / factor
    best = max(tried, key=tried.get)
    while len(tried) < max_evals:
        nxt = best * direction
        if f(nxt) <= tried[best]:
            break
        best = nxt
    best = max(tried, key=tried.get)
    if refine:
        for v in (best * math.sqrt(factor), best / math.sqrt(factor)):
            f(v)
        best = max(tried, key=tried.get)
    return best, tried[best], tried


# ---------------------------------------------------------------- CG followed by TV denoising


def tv_denoise(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Isotropic 3-D total-variation denoising of a stack ``(T, C, H, W)`` (each channel over T, H, W).

    scikit-image's Chambolle projection (``denoise_tv_chambolle``) with ``weight``; time is treated
    as a third spatial axis. With :func:`cg_least_squares` before it this is the "CG + TV" pipeline.
    """
    from skimage.restoration import denoise_tv_chambolle

    arr = x.detach().cpu().numpy()
    out = np.stack([denoise_tv_chambolle(arr[:, c], weight=weight) for c in range(arr.shape[1])], axis=1)
    return torch.from_numpy(out.astype(np.float32)).to(x.device)
