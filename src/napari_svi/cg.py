"""Conjugate gradient over a whole spatio-temporal stack.

The unknown is a tensor of any shape (a stack ``(T, C, H, W)``); inner products run over all of
its elements, so frames are coupled exactly as the operator couples them and the solve is one
linear system for the whole stack, not one per frame.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dtype == torch.float64:
        return torch.sum(a * b)
    if a.device.type == "mps":  # Apple's GPU has no float64: accumulate in float32 there
        return torch.sum(a * b, dtype=torch.float32)
    return torch.sum(a * b, dtype=torch.float64)


def conjugate_gradient(
    apply_a: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor,
    n_iter: int,
    *,
    tol: float = 0.0,
) -> torch.Tensor:
    """Approximately solve ``A x = b`` for symmetric positive semi-definite ``A`` by CG from ``x0``.

    Parameters
    ----------
    apply_a : callable
        ``x -> A x`` for tensors shaped like ``b``.
    b : torch.Tensor
        Right-hand side, any shape.
    x0 : torch.Tensor
        Starting point, same shape as ``b``. With few iterations the start acts as a regulariser
        (DDS: the Tweedie estimate is the start, so CG stays near the data manifold).
    n_iter : int
        Maximum number of iterations (``M`` in the paper; 0 returns ``x0``).
    tol : float
        Early stop when ``||r|| <= tol * ||b||``. ``0`` runs all ``n_iter`` iterations without
        synchronising the device for the check.

    Returns
    -------
    torch.Tensor
        The iterate after at most ``n_iter`` steps (a new tensor; inputs are not modified).

    Notes
    -----
    Hestenes & Stiefel (1952). Inner products are accumulated in float64 (float32 on Apple's MPS).
    """
    x = x0.clone()
    if n_iter <= 0:
        return x
    r = b - apply_a(x)
    p = r.clone()
    rs = _dot(r, r)
    stop2 = (tol**2) * _dot(b, b) if tol > 0 else None
    for _ in range(n_iter):
        if stop2 is not None and rs <= stop2:
            break
        ap = apply_a(p)
        pap = _dot(p, ap)
        if stop2 is not None and pap <= 0:
            break  # p lies in the null space of A: nothing left to correct
        alpha = torch.where(pap > 0, rs / pap.clamp_min(1e-300), torch.zeros_like(pap))
        x.add_(alpha.to(x.dtype) * p)
        r.sub_(alpha.to(r.dtype) * ap)
        rs_new = _dot(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-300), torch.zeros_like(rs))
        p = r + beta.to(r.dtype) * p
        rs = rs_new
    return x
