"""Temporal forward model: a 1-D PSF along the frame axis, a boundary rule and frame subsampling.

The whole temporal model is one dense ``(T_out, T)`` matrix ``M`` (``y[o] = sum_t M[o, t] x[t]``),
built once in float64. That is exact, makes the adjoint a transpose, and costs nothing because
``T`` is small per temporal window (tens of frames).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..validation import check_positive_int
from .base import LinearOperator

BOUNDARIES = ("symmetric", "circular")
_NUMPY_PAD_MODE = {"symmetric": "symmetric", "circular": "wrap"}


def boundary_indices(n: int, before: int, after: int, boundary: str, name: str = "boundary") -> np.ndarray:
    """Source index of every sample of a length-``n`` axis padded by ``before`` and ``after`` samples.

    ``boundary="symmetric"`` mirrors with the edge sample repeated (numpy's ``'symmetric'``:
    ``x1 x0 | x0 x1 ... x_{n-1} | x_{n-1} x_{n-2}``), ``"circular"`` wraps (numpy's ``'wrap'``). Pads
    longer than ``n`` repeat the mirroring / wrapping exactly as ``numpy.pad`` does.

    Returns
    -------
    numpy.ndarray of int64, shape (before + n + after,)
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"{name} must be one of {BOUNDARIES}, got {boundary!r}")
    return np.pad(np.arange(n, dtype=np.int64), (before, after), mode=_NUMPY_PAD_MODE[boundary])


def temporal_matrix(
    kernel: np.ndarray, n_frames: int, boundary: str = "symmetric", subsample: int = 1, offset: int = 0,
    *, measured: np.ndarray | None = None, solve: np.ndarray | None = None,
) -> np.ndarray:
    """Dense matrix of a temporal convolution with boundary handling and frame subsampling.

    Parameters
    ----------
    kernel : numpy.ndarray, shape (L,)
        Temporal PSF, weights per frame (normally summing to 1; not renormalised here). Index
        ``c = L // 2`` is the centre: one bright frame ``q`` is spread over frames
        ``q - c, ..., q - c + L - 1`` with weights ``kernel[0], ..., kernel[L - 1]`` (for even ``L``
        one frame more before ``q`` than after; the convention of ``scipy.ndimage.convolve``).
    n_frames : int
        ``T``, frames of the true stack.
    boundary : {"symmetric", "circular"}
        How frames beyond the first and last are extended: ``"symmetric"`` mirrors with the edge
        frame repeated (numpy ``pad`` mode ``'symmetric'``: ``f1 f0 | f0 f1 ...``), the realistic
        default; ``"circular"`` wraps around (as in Kwon & Ye, for reproduction). Kernels longer than
        ``T`` repeat the mirroring / wrapping as ``numpy.pad`` does.
    subsample : int
        Keep every ``subsample``-th blurred frame (temporal super-resolution / frame interpolation).
    offset : int
        First kept frame, ``0 <= offset < n_frames``.
    measured : numpy.ndarray of int, optional
        Only these rows (indices of measured frames); default all.
    solve : numpy.ndarray of int, optional
        Only these columns (true frames, in this order): the block of one temporal window, built
        in O(window) without the dense matrix of the whole stack. Every nonzero tap of a built row
        must fall inside ``solve`` (windows from :func:`napari_svi.windows.plan_windows` do).

    Returns
    -------
    numpy.ndarray, float64, shape (T_out, n_frames)
        ``T_out = ceil((n_frames - offset) / subsample)``; rows are the kept frames
        ``offset, offset + subsample, ...`` (shape ``(len(measured), len(solve))`` with those).

    Notes
    -----
    True convolution with centre ``c = L // 2``::

        y[o] = sum_j kernel[j] * x_ext[offset + o * subsample + c - j]

    where ``x_ext`` is ``x`` extended by the boundary rule.

    Examples
    --------
    >>> temporal_matrix(np.ones(3) / 3, 4)
    array([[0.66666667, 0.33333333, 0.        , 0.        ],
           [0.33333333, 0.33333333, 0.33333333, 0.        ],
           [0.        , 0.33333333, 0.33333333, 0.33333333],
           [0.        , 0.        , 0.33333333, 0.66666667]])
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 1 or kernel.size == 0:
        raise ValueError(f"kernel must be a non-empty 1-D array, got shape {kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise ValueError("kernel contains NaN or infinite values")
    n_frames = check_positive_int(n_frames, "n_frames")
    subsample = check_positive_int(subsample, "subsample")
    if isinstance(offset, bool) or int(offset) != offset or not 0 <= int(offset) < n_frames:
        raise ValueError(f"offset must be an integer in [0, n_frames={n_frames}), got {offset!r}")
    offset = int(offset)
    length = kernel.size
    centre = length // 2
    # x_ext[i] = x[index[i]], x_ext starting `length - 1 - centre` frames before frame 0.
    index = boundary_indices(n_frames, length - 1 - centre, centre, boundary)
    kept = np.arange(offset, n_frames, subsample)
    assert kept.size == math.ceil((n_frames - offset) / subsample)
    if measured is not None:
        kept = kept[np.asarray(measured, dtype=np.int64)]
    # frame t + c - j of x sits at t + length - 1 - j of x_ext: column of tap j in each row
    cols = index[kept[:, None] + length - 1 - np.arange(length)[None, :]]
    width = n_frames
    if solve is not None:
        position = np.full(n_frames, -1, dtype=np.int64)
        position[np.asarray(solve, dtype=np.int64)] = np.arange(len(solve))
        cols = position[cols]
        if np.any(cols[:, kernel != 0] < 0):
            raise ValueError("a measured frame reaches outside the window; choose it with plan_windows")
        cols, width = np.where(cols < 0, 0, cols), len(solve)  # zero taps add nothing wherever they point
    matrix = np.zeros((kept.size, width))
    rows = np.repeat(np.arange(kept.size), length)
    np.add.at(matrix, (rows, cols.ravel()), np.tile(kernel, kept.size))
    return matrix


class TemporalOperator(LinearOperator):
    """Apply a ``(T_out, T)`` matrix along the frame axis: ``y[o] = sum_t M[o, t] x[t]``.

    Parameters
    ----------
    matrix : numpy.ndarray or torch.Tensor, shape (T_out, T)
        Usually from :func:`temporal_matrix`; kept in float64.
    in_shape : tuple of int
        ``(T, C, H, W)`` of the true stack; the output is ``(T_out, C, H, W)``.
    """

    def __init__(self, matrix, in_shape):
        m = torch.as_tensor(np.asarray(matrix, dtype=np.float64))
        if m.ndim != 2:
            raise ValueError(f"matrix must be 2-D (T_out, T), got shape {tuple(m.shape)}")
        t, c, h, w = in_shape
        if m.shape[1] != t:
            raise ValueError(f"matrix has {m.shape[1]} columns but in_shape has T={t} frames")
        super().__init__(in_shape, (m.shape[0], c, h, w))
        self.matrix = m.numpy()
        self._register("matrix", m)

    def _apply(self, equation: str, x: torch.Tensor) -> torch.Tensor:
        # float32 on CUDA may run matmuls in TF32 (10-bit mantissa) when the user allows it, which
        # would break the exact adjoint; the matrix is tiny, so compute in float64 there.
        work = torch.float64 if (x.is_cuda and x.dtype == torch.float32) else x.dtype
        m = self._buffer("matrix", x.device, work)
        out = torch.einsum(equation, m, x.to(work))
        return out.to(x.dtype)

    def _forward(self, x):
        return self._apply("ot,tchw->ochw", x)

    def _adjoint(self, y):
        return self._apply("ot,ochw->tchw", y)
