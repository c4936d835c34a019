"""Classical total-variation restoration with the same forward operator ``A`` as SVI.

Used by :mod:`napari_svi.restore` for the warm start of the sampler (a TV estimate whose weight
held-out entries, SURE or the discrepancy principle set: :func:`holdout_tv`, :func:`sure_tv`,
:func:`discrepancy_tv`, chosen per forward model by :func:`napari_svi.warm_start.tv_rule`) and by the benchmark's
oracle-tuned baselines (:mod:`napari_svi.benchmark.baselines`). Tensors are ``(T, C, H, W)`` on the
[0, 1] scale; ``y`` has shape ``operator.out_shape``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from .cg import conjugate_gradient
from .operators.base import LinearOperator


def gradient(x: torch.Tensor, temporal_weight: float = 1.0) -> torch.Tensor:
    """Forward differences along T, H and W of ``x`` (T, C, H, W): shape (3, T, C, H, W).

    The last difference along each axis is 0 (Neumann boundary); the temporal one is scaled by
    ``temporal_weight``.
    """
    d = torch.zeros((3, *x.shape), dtype=x.dtype, device=x.device)
    d[0, :-1] = (x[1:] - x[:-1]) * temporal_weight
    d[1, :, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    d[2, :, :, :, :-1] = x[..., 1:] - x[..., :-1]
    return d


def gradient_adjoint(p: torch.Tensor, temporal_weight: float = 1.0) -> torch.Tensor:
    """Adjoint of :func:`gradient` (minus the divergence): (3, T, C, H, W) -> (T, C, H, W)."""
    out = torch.zeros(p.shape[1:], dtype=p.dtype, device=p.device)
    pt = p[0, :-1] * temporal_weight
    out[:-1] -= pt
    out[1:] += pt
    out[:, :, :-1] -= p[1, :, :, :-1]
    out[:, :, 1:] += p[1, :, :, :-1]
    out[..., :-1] -= p[2, ..., :-1]
    out[..., 1:] += p[2, ..., :-1]
    return out


def gradient_normal(x: torch.Tensor, temporal_weight: float = 1.0) -> torch.Tensor:
    """``D^T D x``: :func:`gradient_adjoint` of :func:`gradient` (minus the Neumann Laplacian) without the
    ``(3, T, C, H, W)`` stack of differences in between: about half the time of the two (the TV term of
    every CG step of the TV estimate). Equal to the composition up to rounding."""
    out = torch.zeros_like(x)
    for dim in (0, 2, 3):
        d = torch.diff(x, dim=dim)
        if dim == 0 and temporal_weight != 1.0:
            d.mul_(temporal_weight * temporal_weight)
        out.narrow(dim, 0, d.shape[dim]).sub_(d)
        out.narrow(dim, 1, d.shape[dim]).add_(d)
    return out


def tv_admm_steps(
    y: torch.Tensor,
    operator: LinearOperator,
    weight: float,
    n_iter: int = 50,
    *,
    rho: float | None = None,
    cg_steps: int = 5,
    temporal_weight: float = 1.0,
    x0: torch.Tensor | None = None,
) -> Iterator[dict]:
    """ADMM for ``argmin_x 1/2 ||A x - y||^2 + weight * TV(x)``, yielding ``{"i", "x"}``.

    Parameters
    ----------
    weight : float
        TV weight ``lambda`` on the [0, 1] scale (larger: smoother).
    n_iter : int
        ADMM iterations.
    rho : float, optional
        ADMM penalty; default ``10 * weight`` (the split is ``z = D x``).
    cg_steps : int
        CG iterations of each x-update, warm-started at the previous x.
    temporal_weight : float
        Scale of the temporal differences in TV (1: isotropic 3-D TV treating a frame step like a
        pixel step; 0: per-frame 2-D TV).
    x0 : torch.Tensor, optional
        Start (default ``A^T y``).

    Notes
    -----
    Isotropic TV ``sum_p sqrt((w_t D_t x)_p^2 + (D_y x)_p^2 + (D_x x)_p^2)`` with forward differences
    and Neumann boundaries. Scaled-form ADMM (Boyd et al. 2011, section 6.4)::

        x <- argmin 1/2 ||A x - y||^2 + rho/2 ||D x - z + u||^2   (CG on A^T A + rho D^T D)
        z <- shrink(D x + u, weight / rho)                          (per-voxel vector shrinkage)
        u <- u + D x - z
    """
    rho = 10.0 * weight if rho is None else float(rho)
    if weight <= 0 or rho <= 0:
        raise ValueError(f"weight and rho must be positive, got weight={weight}, rho={rho}")
    aty = operator.adjoint(y)
    x = (aty if x0 is None else x0).clone()
    z = gradient(x, temporal_weight)
    u = torch.zeros_like(z)

    def normal(v: torch.Tensor) -> torch.Tensor:
        return operator.normal(v) + rho * gradient_normal(v, temporal_weight)

    threshold = weight / rho
    for i in range(n_iter):
        x = conjugate_gradient(normal, aty + rho * gradient_adjoint(z - u, temporal_weight), x, cg_steps)
        dx = gradient(x, temporal_weight)
        v = dx + u
        magnitude = torch.sqrt((v * v).sum(dim=0, keepdim=True))
        z = v * torch.clamp(1 - threshold / magnitude.clamp_min(1e-12), min=0)
        u = v - z
        yield {"i": i, "x": x}


def tv_admm(y: torch.Tensor, operator: LinearOperator, weight: float, n_iter: int = 50, **kwargs) -> torch.Tensor:
    """Run :func:`tv_admm_steps` and return the estimate."""
    x = None
    for info in tv_admm_steps(y, operator, weight, n_iter, **kwargs):
        x = info["x"]
    return x if x is not None else operator.adjoint(y)




def richardson_lucy_steps(
    y: torch.Tensor, operator: LinearOperator, n_iter: int, *, eps: float = 1e-6
) -> Iterator[dict]:
    """Richardson-Lucy iterations ``x <- x * A^T(y / A x) / A^T 1``, yielding ``{"i", "x"}``.

    The multiplicative update for Poisson data (Richardson 1972, Lucy 1974), the same as
    ``skimage.restoration.richardson_lucy`` but with the whole spatio-temporal operator, so temporal
    and spatial blur, downsampling and masks are deconvolved jointly. ``y`` is clipped at 0 and the
    start is the constant mean of ``A^T y / A^T 1``; pixels that no measurement sees (``A^T 1 = 0``)
    keep it. ``eps`` guards the divisions.
    """
    yc = y.clamp_min(0)
    norm = operator.adjoint(torch.ones_like(y))
    seen = norm > 0
    norm = norm.clamp_min(eps)
    x = torch.full(operator.in_shape, float((operator.adjoint(yc) / norm)[seen].mean()), dtype=y.dtype, device=y.device)
    for i in range(n_iter):
        x = torch.where(seen, x * operator.adjoint(yc / operator.forward(x).clamp_min(eps)) / norm, x)
        yield {"i": i, "x": x}


def is_nonnegative_operator(operator: LinearOperator, probes: int = 2) -> bool:
    """Whether ``A`` and ``A^T`` map nonnegative stacks to nonnegative ones (so Richardson-Lucy applies),
    probed with random nonnegative stacks."""
    g = torch.Generator().manual_seed(3)
    for _ in range(probes):
        x = torch.rand(operator.in_shape, generator=g)
        y = torch.rand(operator.out_shape, generator=g)
        for out in (operator.forward(x), operator.adjoint(y)):
            if float(out.min()) < -1e-6 * float(out.abs().max().clamp_min(1e-30)):
                return False
    return True


def holdout_rl(y: torch.Tensor, fit_operator: LinearOperator, operator: LinearOperator, held: torch.Tensor,
               max_iter: int = 200, patience: int = 20) -> tuple[torch.Tensor, int] | None:
    """Richardson-Lucy stopped by cross-validation: iterate on the entries ``fit_operator`` sees (``y``
    without the held-out ones) and keep the iterate that best predicts the held-out entries ``held`` of
    ``y`` through ``operator`` (least squares), stopping once ``patience`` iterations in a row have not
    improved on it. Returns ``(x, iterations)``, or ``None`` when the operator is not nonnegative. The
    iteration count carries over to the solve with all the data (:func:`richardson_lucy`)."""
    if not is_nonnegative_operator(operator):
        return None
    observed = operator.observed(y)
    target = observed[held]
    best, best_err, best_n = None, math.inf, 0
    for info in richardson_lucy_steps(fit_operator.observed(y), fit_operator, max_iter):
        err = float((operator.forward(info["x"])[held] - target).square().sum())
        if err < best_err:
            best, best_err, best_n = info["x"], err, info["i"] + 1
        elif info["i"] + 1 - best_n >= patience:
            break
    return (best, best_n) if best is not None else None


def search_weight(score: Callable[[float, object], tuple[object, float]], start, *, high: float = 0.1,
                  low: float = 1e-4, factor: float = 1.5, patience: int = 2, refine: bool = True) -> tuple[object, float]:
    """The TV weight with the smallest ``score``: from ``high`` down to ``low`` in steps of ``factor``, each
    trial warm-started from the last (``score(weight, state) -> (state, value)``, ``start`` the first
    state), stopping once ``patience`` weights in a row have not improved; then the two weights half a
    step either side of the best, from its state (``refine``). Returns ``(state, weight)`` of the best."""
    best, best_value, best_w, worse = start, math.inf, high, 0
    state, weight = start, high
    while weight >= low * (1 - 1e-9) and worse < patience:
        state, value = score(weight, state)
        if value < best_value:
            best, best_value, best_w, worse = state, value, weight, 0
        else:
            worse += 1
        weight /= factor
    centre, centre_state = best_w, best
    for w in (centre * math.sqrt(factor), centre / math.sqrt(factor)) if refine else ():
        state, value = score(w, centre_state)
        if value < best_value:
            best, best_value, best_w = state, value, w
    return best, best_w


def holdout_tv(y: torch.Tensor, folds: list[tuple[LinearOperator, torch.Tensor]], operator: LinearOperator, *,
               n_iter: int = 10, factor: float = 2.0, **search) -> tuple[torch.Tensor, float]:
    """TV-ADMM with the weight chosen by cross-validation (:func:`search_weight`, ``n_iter`` ADMM
    iterations per trial): for each fold ``(fit_operator, held)``, fitted to the entries ``fit_operator``
    sees and scored by how well it predicts the held-out entries ``held`` of ``y`` through ``operator``
    (least squares, summed over the folds), weights a ``factor`` apart. Returns the first fold's estimate
    and the weight. (10 iterations and steps of 2, then the parabola, instead of 15 iterations and steps of 1.5 on
    every fold: about 30 % less time per restore, the realistic suite within 0.03 dB per task.) Unlike
    the discrepancy principle (:func:`discrepancy_tv`, which smooths 1-8x more than an oracle would), it
    needs no noise level."""
    observed = operator.observed(y)
    data = [(fit.observed(y), fit, held, observed[held]) for fit, held in folds]

    def score_on(parts):
        def score(weight, xs):
            xs = [tv_admm(fit_y, fit, weight, n_iter, x0=x) for x, (fit_y, fit, _, _) in zip(xs, parts, strict=True)]
            err = sum(float((operator.forward(x)[held] - target).square().sum())
                      for x, (_, _, held, target) in zip(xs, parts, strict=True))
            return xs, err
        return score

    if len(data) == 1:
        xs, weight = search_weight(score_on(data), [measurement_start(data[0][0], data[0][1])], factor=factor, **search)
        return xs[0], weight
    # the sweep down from ``high`` on the first fold; then on every fold (each started from the first
    # fold's estimate) the best weight and half a step either side, and the vertex of the parabola through
    # their errors in log-weight where it lies between them: about 18 fold-solves instead of 30 for 3 folds
    (x_first,), coarse = search_weight(score_on(data[:1]), [measurement_start(data[0][0], data[0][1])],
                                       factor=factor, **{**search, "refine": False})
    score = score_on(data)
    half = math.sqrt(factor)

    def trial(w):  # only the first fold's estimate is kept: the others were needed for the error alone
        xs, err = score(w, [x_first] * len(data))
        return w, xs[0], err

    trials = [trial(w) for w in (coarse / half, coarse, coarse * half)]
    (_, _, e_lo), (_, _, e_mid), (_, _, e_hi) = trials
    curvature = e_lo - 2 * e_mid + e_hi
    if curvature > 0:
        offset = 0.5 * (e_lo - e_hi) / curvature  # in half-steps, from the middle weight
        if 0.1 < abs(offset) < 1:
            w = coarse * half**offset
            trials.append(trial(w))
    weight, x, _ = min(trials, key=lambda t: t[2])
    return x, weight


def sure_tv(y: torch.Tensor, operator: LinearOperator, noise_sigma: float, *, n_iter: int = 15,
            epsilon: float = 1e-3, seed: int = 0, **search) -> tuple[torch.Tensor, float]:
    """TV-ADMM with the weight that minimises Stein's unbiased risk estimate of the error on the measured
    entries (Monte-Carlo SURE, Ramani, Blu & Unser 2008): ``||y - A x||^2 - m sigma^2 + 2 sigma^2 div``,
    the divergence from one probe ``b``, ``b . (A x(y + epsilon b) - A x(y)) / epsilon``; the weight by
    :func:`search_weight`, ``n_iter`` ADMM iterations per trial. For operators whose entries see one
    voxel each (noise, masks, missing frames) the risk on the measured entries is the image error there."""
    observed = operator.observed(y)
    measured = measured_entries(operator, y)
    g = torch.Generator(device="cpu").manual_seed(seed)
    probe = operator.observed(torch.randn(observed.shape, generator=g, dtype=observed.dtype).to(observed.device))
    scale = epsilon * max(float(observed.abs().max()), 1e-12)
    var = noise_sigma**2

    def score(weight, state):
        x, x_p = state
        x = tv_admm(observed, operator, weight, n_iter, x0=x)
        x_p = tv_admm(observed + scale * probe, operator, weight, n_iter, x0=x_p)
        ax = operator.forward(x)
        div = float((probe * (operator.forward(x_p) - ax)).sum()) / scale
        return (x, x_p), float((observed - operator.observed(ax)).square().sum()) - measured * var + 2 * var * div

    x0 = measurement_start(observed, operator)
    (x, _), weight = search_weight(score, (x0, x0), **search)
    return x, weight


def interpolated_problem(y: torch.Tensor, operator: LinearOperator) -> tuple[torch.Tensor, LinearOperator]:
    """For an operator whose entries each see one voxel and some frames none (frame interpolation): the
    measurement on the stack's grid with the unseen frames linearly interpolated
    (:func:`measurement_start`), and the mask of the voxels it holds (measured or interpolated), as a
    denoising problem. TV on it (the "CG + TV" pipeline) couples every measured frame to its neighbours
    in time; TV with the operator leaves the unseen frames free (suite interp2: 0.0-0.5 dB better)."""
    from .operators.spatial import Mask
    from .sampler import unseen_frames

    start = measurement_start(operator.observed(y), operator)
    reach = operator.adjoint(torch.ones(operator.out_shape, dtype=y.dtype, device=y.device)) != 0
    unseen = unseen_frames(operator)
    if unseen is not None:
        reach[unseen.to(reach.device)] = True
    return start, Mask(reach.all(dim=1), operator.in_shape)


def measured_entries(operator: LinearOperator, like: torch.Tensor) -> float:
    """How many entries of the measurement ``operator`` reaches (``A 1 != 0``)."""
    return float((operator.forward(torch.ones(operator.in_shape, dtype=like.dtype, device=like.device)) != 0).sum())


def richardson_lucy(y: torch.Tensor, operator: LinearOperator, n_iter: int, *, eps: float = 1e-6) -> torch.Tensor:
    """Run :func:`richardson_lucy_steps` for ``n_iter`` iterations and return the estimate."""
    x = None
    for info in richardson_lucy_steps(y, operator, n_iter, eps=eps):
        x = info["x"]
    return x if x is not None else y.new_zeros(operator.in_shape)


def fill_from_neighbours(x: torch.Tensor, known: torch.Tensor, size: int = 5, passes: int = 4) -> torch.Tensor:
    """``x`` ``(T, C, H, W)`` with every voxel outside ``known`` replaced by the mean of the known voxels in
    the ``size`` x ``size`` window around it in its frame, ``passes`` times over (each pass reaches
    further); voxels still without a known neighbour keep their value."""
    known = known.to(x.dtype)
    out = x * known
    for _ in range(passes):
        total = torch.nn.functional.avg_pool2d(out.flatten(0, 1)[:, None], size, 1, size // 2)
        count = torch.nn.functional.avg_pool2d(known.flatten(0, 1)[:, None], size, 1, size // 2)
        fill = (total / count.clamp_min(1e-12)).reshape(x.shape)
        reached = (count > 0).reshape(x.shape) & (known == 0)
        out = torch.where(reached, fill, out)
        known = torch.where(reached, torch.ones_like(known), known)
    return torch.where(known > 0, out, x)


def measurement_start(y: torch.Tensor, operator: LinearOperator) -> torch.Tensor:
    """The measurement brought to the stack's grid by the operator alone: ``A^T y / A^T 1`` where some
    measurement reaches a voxel; frames that no measurement reaches (frame interpolation) are the
    linear interpolation in time of the nearest reached frames; other unreached voxels (masked
    pixels) the mean of the reached voxels around them (:func:`fill_from_neighbours`; a start for
    iterative solvers, which move unreached voxels only slowly)."""
    from .sampler import INTERPOLATE, fill_unseen, unseen_frames

    reach = operator.adjoint(torch.ones_like(y))
    seen = reach > 1e-6 * float(reach.max().clamp_min(1e-30))
    x = operator.adjoint(y) / reach.clamp_min(1e-12)
    x = torch.where(seen, x, x[seen].mean() if bool(seen.any()) else torch.zeros_like(x))
    x = fill_from_neighbours(x, seen)
    unseen = unseen_frames(operator)
    return x if unseen is None else fill_unseen(x, unseen.to(x.device), INTERPOLATE)


def discrepancy_tv(y: torch.Tensor, operator: LinearOperator, noise_sigma: float, *, measured: float | None = None,
                   n_iter: int = 15, searches: int = 7, low: float = 1e-4, high: float = 0.3,
                   target: float = 1.0) -> tuple[torch.Tensor, float, float]:
    """TV-regularised least squares with the weight set by the discrepancy principle (Morozov).

    Bisects ``log weight`` in ``[low, high]`` for the weight whose TV-ADMM estimate leaves a data
    residual ``||y - A x||^2`` of ``target * m * noise_sigma^2`` over the ``m`` measured entries (the
    noise's own energy); each trial runs ``n_iter`` ADMM iterations from the previous trial's
    estimate. Returns ``(x, weight, chi2)`` of the last trial with ``chi2 <= target`` (the most
    smoothing one that still explains the data), or of the smallest weight tried. The principle
    errs towards smoothing (on the realistic suite 1-4x the weight an oracle picks on the ground
    truth with a temporal PSF, where :func:`holdout_tv` does better); the restore uses it with a
    spatial PSF (:func:`napari_svi.warm_start.tv_rule`).
    """
    if not noise_sigma > 0:
        raise ValueError(f"noise_sigma must be positive for the discrepancy principle, got {noise_sigma}")
    observed = operator.observed(y)
    if measured is None:
        measured = measured_entries(operator, y)
    energy = measured * noise_sigma**2
    lo, hi = math.log(low), math.log(high)
    x = measurement_start(observed, operator)
    best = None
    for _ in range(searches):
        mid = (lo + hi) / 2
        x = tv_admm(observed, operator, math.exp(mid), n_iter, x0=x)
        chi2 = float((operator.forward(x) - observed).square().sum()) / energy
        if chi2 > target:
            hi = mid
        else:
            lo = mid
            best = (x, math.exp(mid), chi2)
    if best is None:  # even the smallest weight tried leaves more than the noise: keep its estimate
        best = (x, math.exp(hi), chi2)
    return best
