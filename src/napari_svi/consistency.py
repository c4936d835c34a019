"""Is a restoration consistent with its measurement? The check that tells a user when not to trust it.

A restoration ``x`` of a measurement ``y = A x_true + n`` with noise of standard deviation ``sigma``
should leave a residual ``y - A x`` that looks like the noise: over the ``m`` observed entries,
``chi2 = ||y - A x||^2 / (m sigma^2)`` is about 1. Much larger means the result contradicts the data
(the prior invented or removed structure the measurement does not allow); much smaller means it
copied the noise (the data were over-fitted and noise was amplified into the result).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .operators.base import LinearOperator

#: ``chi2`` above this: the result is not consistent with the data (warn the user).
CHI2_HIGH = 2.0
#: ``chi2`` below this: the result fits the noise (warn the user).
CHI2_LOW = 0.25


def residual_chi2(y01: np.ndarray | torch.Tensor, operator: LinearOperator, x01: np.ndarray | torch.Tensor,
                  noise_sigma01: float, observed: np.ndarray | torch.Tensor | None = None) -> float:
    """``||y - A x||^2 / (m sigma^2)`` over the observed entries (all where ``observed`` is None).

    ``y01`` has ``operator.out_shape``, ``x01`` ``operator.in_shape``, both on the solver's [0, 1]
    scale, as ``noise_sigma01``.
    """
    if not noise_sigma01 > 0:
        raise ValueError(f"noise_sigma01 must be positive, got {noise_sigma01}")
    y = torch.as_tensor(np.asarray(y01, np.float32) if not torch.is_tensor(y01) else y01).float()
    x = torch.as_tensor(np.asarray(x01, np.float32) if not torch.is_tensor(x01) else x01).float()
    r = (y - operator.forward(x)).double()
    if observed is not None:
        keep = torch.as_tensor(np.array(observed) if not torch.is_tensor(observed) else observed) != 0
        keep = keep.expand_as(r)
        r = r[keep]
    m = r.numel()
    if m == 0:
        raise ValueError("no observed entries to compare with")
    return float(r.square().sum() / (m * noise_sigma01**2))


def verdict(chi2: float) -> dict:
    """A record for the metadata: ``chi2``, ``consistent`` and, when not, a message for the user."""
    if not math.isfinite(chi2):
        return {"chi2": None, "consistent": False, "message": "the data residual is not finite"}
    out: dict = {"chi2": round(chi2, 4), "consistent": CHI2_LOW <= chi2 <= CHI2_HIGH,
                 "limits": [CHI2_LOW, CHI2_HIGH]}
    if chi2 > CHI2_HIGH:
        out["message"] = (f"the restored stack does not explain the measurement: its residual is {chi2:.1f} times "
                          "the noise level. Check the forward model (PSFs, downsampling, time axis) and the noise "
                          "level; do not trust structure the measurement does not show")
    elif chi2 < CHI2_LOW:
        out["message"] = (f"the restored stack fits the noise: its residual is only {chi2:.2f} times the noise "
                          "level. The noise level may be set too low; the result may hold amplified noise")
    return out
