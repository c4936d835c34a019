"""The one assembly of a forward model: temporal PSF -> spatial PSF -> downsampling -> mask.

Used for a whole stack (:meth:`napari_svi.operators.OperatorSpec.build`) and for every piece of a
restore (:mod:`napari_svi.pieces`), so that both are the same operator by construction.
"""

from __future__ import annotations

import numpy as np

from .base import ComposedOperator, Identity, LinearOperator
from .spatial import Downsample, Mask, SpatialConvolution
from .temporal import TemporalOperator


def forward_model(
    shape,
    *,
    temporal: np.ndarray | None = None,
    psf: np.ndarray | None = None,
    spatial_boundary: str = "symmetric",
    downsample: int = 1,
    observed: np.ndarray | None = None,
) -> LinearOperator:
    """``A`` on stacks of ``shape`` ``(T, C, H, W)``, with the absent or trivial parts left out.

    Parameters
    ----------
    temporal : numpy.ndarray, shape (T_m, T), optional
        The temporal model (:func:`~napari_svi.operators.temporal.temporal_matrix`); ``None``: none.
    psf : numpy.ndarray, shape (kh, kw), optional
        Spatial PSF (skipped when 1 x 1), convolved with ``spatial_boundary`` at the frame edges.
    downsample : int
        Mean over ``downsample x downsample`` blocks.
    observed : numpy.ndarray, optional
        At measurement resolution, ``(H_m, W_m)`` or ``(T_m, H_m, W_m)``, nonzero = observed;
        skipped when everything is observed.

    Returns
    -------
    LinearOperator
        :class:`~napari_svi.operators.base.Identity` when no part is left.
    """
    parts: list[LinearOperator] = []
    current = tuple(shape)
    if temporal is not None:
        parts.append(TemporalOperator(temporal, current))
        current = parts[-1].out_shape
    if psf is not None and psf.size > 1:
        parts.append(SpatialConvolution(psf, current, boundary=spatial_boundary))
    if downsample > 1:
        parts.append(Downsample(downsample, current))
        current = parts[-1].out_shape
    if observed is not None and not np.all(observed != 0):
        parts.append(Mask(observed, current))
    if not parts:
        return Identity(shape)
    return parts[0] if len(parts) == 1 else ComposedOperator(*reversed(parts))
