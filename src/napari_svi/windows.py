"""Where to cut one large restoration, per axis: temporal windows and spatial tiles (1-D planning).

A long time-lapse is restored in temporal windows and, when a frame does not fit the memory
budget, in spatial tiles. This module plans each axis (a list of :class:`Span`);
:mod:`napari_svi.pieces` combines a window and a tile into a piece, a complete small inverse
problem (its own measurement and forward model). The pieces' estimates are blended with weights
that sum to one, so the result has no seams. The same starts and ramps
(:func:`spread_starts`, :func:`blend_weights`) tile the network's input
(:class:`~napari_svi.priors.tiling.TiledPrior`).

The key point is which measurements a piece may use. A measured frame (or pixel) depends on every
true frame (pixel) its PSF reaches. A piece that *keeps* true frames ``[a, b)`` therefore *solves*
for ``[a - margin, b + margin)`` and uses exactly the measured frames whose whole kernel support
lies inside the solved range: their forward model is exact, with no invented boundary. With
``margin = L - 1`` for a kernel of ``L`` frames (plus ``s - 1`` for temporal subsampling by ``s``)
every kept frame sees every measurement that touches it, as in a restore of the whole stack. At the
first and last frame of the stack the stack's own boundary rule (``symmetric``: mirrored;
``circular``: wrapped) is the true model and is kept. Spatial tiles work the same way, per axis,
with the spatial PSF and the downsampling blocks: a measured pixel outside the reach of its tile is
masked out (treated as unobserved).

Blending: where the kept ranges of neighbouring pieces overlap, each piece's weight follows a
raised-cosine ramp ``0.5 - 0.5 cos(pi (i + 1/2) / L)``; rising and falling ramps sum to one.
Weights are normalised per frame, so any number of overlapping pieces blends correctly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .operators.temporal import boundary_indices
from .validation import check_positive_int

#: Default number of frames a temporal window keeps (the paper restores 16-frame clips).
DEFAULT_WINDOW = 16
#: Default overlap, in frames, of the kept ranges of neighbouring windows (blended).
DEFAULT_WINDOW_OVERLAP = 4


@dataclass(frozen=True)
class Span:
    """One stretch of a 1-D axis (frames of a stack, or rows / columns of a frame) that a piece solves.

    Attributes
    ----------
    solve : numpy.ndarray of int64
        Positions (true frames or true pixels) solved for, in order. Contiguous, except that a
        circular boundary may wrap around the end of the axis.
    keep : tuple of int
        ``(start, stop)``: the positions this piece contributes to the result.
    weights : numpy.ndarray of float64, shape (stop - start,)
        Blending weight of each kept position; summed over all pieces, one at every position.
    measured : numpy.ndarray of int64
        Measured positions (frames at measurement rate, or pixels at measurement resolution) whose
        forward model lies entirely inside ``solve``: the data this piece uses.
    """

    solve: np.ndarray
    keep: tuple[int, int]
    weights: np.ndarray
    measured: np.ndarray

    @property
    def keep_in_solve(self) -> np.ndarray:
        """Indices into ``solve`` of the kept positions ``keep[0] .. keep[1] - 1``."""
        lookup = {int(p): i for i, p in enumerate(self.solve)}
        return np.array([lookup[p] for p in range(*self.keep)], dtype=np.int64)


def support(
    n_true: int, kernel_size: int, boundary: str, block: int, n_measured: int, *, stride: int | None = None
) -> np.ndarray:
    """True positions that each measured position depends on, shape ``(n_measured, span)``.

    A measured position ``o`` averages ``block`` true positions starting at ``o * stride``
    (``stride = block`` for downsampling; ``block = 1``, ``stride = s`` for temporal subsampling),
    each blurred by a kernel of ``kernel_size`` taps centred on index ``kernel_size // 2``; positions
    beyond the axis are mapped back by ``boundary`` as the operators do
    (:func:`napari_svi.operators.temporal.boundary_indices`).
    """
    stride = block if stride is None else stride
    before, after = kernel_size - 1 - kernel_size // 2, kernel_size // 2
    index = boundary_indices(n_true, before, after + block - 1 + stride, boundary)
    starts = np.arange(n_measured, dtype=np.int64) * stride
    return index[starts[:, None] + np.arange(kernel_size + block - 1)[None, :]]


def temporal_support(kernel: np.ndarray | None, n_frames: int, boundary: str, subsample: int) -> np.ndarray:
    """True frames each measured frame depends on, ``(T_m, span)``; taps of weight 0 are left out.

    Zero taps are replaced by the row's own centre frame, which every row depends on anyway.
    """
    kernel = np.ones(1) if kernel is None else np.asarray(kernel, dtype=np.float64)
    n_measured = math.ceil(n_frames / subsample)
    cols = support(n_frames, kernel.size, boundary, 1, n_measured, stride=subsample)
    # column j of a row is tap L - 1 - j of the kernel (true convolution)
    zero = kernel[::-1] == 0
    if zero.any():
        centre = cols[:, kernel.size - 1 - kernel.size // 2]
        cols = np.where(zero[None, :], centre[:, None], cols)
    return cols


def default_margin(kernel_size: int, subsample: int = 1) -> int:
    """Frames solved beyond each side of a window's kept range: ``(L - 1) + (s - 1)``.

    ``L - 1`` makes every measurement that touches a kept frame part of the window; ``s - 1``
    reaches the next measured frame across the edge when only every ``s``-th frame is measured.
    """
    return (int(kernel_size) - 1) + (int(subsample) - 1)


def spread_starts(n: int, size: int, overlap: int, align: int = 1) -> list[int]:
    """Evenly spread starts of pieces of ``size`` covering ``[0, n)``, overlapping by ``>= overlap``.

    Starts are multiples of ``align`` (the last piece ends at ``n`` when ``n`` is a multiple of
    ``align``).
    """
    if size >= n:
        return [0]
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, {size}), got {overlap}")
    k = math.ceil((n - overlap) / (size - overlap))
    starts = sorted({int(round(i * (n - size) / (k - 1) / align)) * align for i in range(k)})
    starts[-1] = n - size
    return starts


def blend_weights(starts: list[int], size: int, n: int) -> list[np.ndarray]:
    """Weights of pieces ``[s, min(s + size, n))``: raised-cosine ramps over overlaps, normalised.

    Returns one float64 array per piece; at every position of ``[0, n)`` the weights of the pieces
    covering it sum to one.
    """
    raw = []
    for k, s in enumerate(starts):
        stop = min(s + size, n)
        w = np.ones(stop - s)
        before = min(starts[k - 1] + size, n) - s if k > 0 else 0
        after = stop - starts[k + 1] if k + 1 < len(starts) else 0
        if before > 0:
            w[:before] *= _ramp(before)
        if after > 0:
            w[w.size - after :] *= _ramp(after)[::-1]
        raw.append(w)
    total = np.zeros(n)
    for s, w in zip(starts, raw, strict=True):
        total[s : s + w.size] += w
    return [w / total[s : s + w.size] for s, w in zip(starts, raw, strict=True)]


def _ramp(length: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / length)


def plan_windows(
    n_frames: int,
    kernel: np.ndarray | None = None,
    boundary: str = "symmetric",
    subsample: int = 1,
    *,
    window: int | None = DEFAULT_WINDOW,
    overlap: int = DEFAULT_WINDOW_OVERLAP,
    margin: int | None = None,
) -> list[Span]:
    """Temporal windows of a stack of ``n_frames`` true frames.

    Parameters
    ----------
    n_frames : int
        Frames of the true stack.
    kernel : numpy.ndarray or None
        Temporal PSF (weights per frame, centre at ``L // 2``); ``None``: no temporal blur.
    boundary : {"symmetric", "circular"}
        The stack's temporal boundary rule.
    subsample : int
        Only frames ``0, s, 2s, ...`` are measured.
    window : int or None
        Frames each window keeps (contributes to the result); ``None`` or 0: one window over the
        whole stack. A window solves ``window + 2 * margin`` frames, which sets the memory use.
    overlap : int
        Minimum overlap, in frames, of neighbouring windows' kept ranges (blended).
    margin : int, optional
        Frames solved beyond each side of the kept range; default :func:`default_margin`.

    Returns
    -------
    list of Span
        One window (the whole stack, every measured frame) when the stack is not longer than
        ``window + 2 * margin``.
    """
    size = len(kernel) if kernel is not None else 1
    margin = default_margin(size, subsample) if margin is None else check_positive_int(margin, "window_margin", minimum=0)
    cols = temporal_support(kernel, n_frames, boundary, subsample)
    if not window or n_frames <= window + 2 * margin:
        return [Span(np.arange(n_frames), (0, n_frames), np.ones(n_frames), np.arange(cols.shape[0]))]
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"window must be >= 1 and window_overlap in [0, window), got {window} and {overlap}")
    starts = spread_starts(n_frames, window, overlap)
    weights = blend_weights(starts, window, n_frames)
    pieces = []
    for start, w in zip(starts, weights, strict=True):
        stop = start + window
        if boundary == "circular":
            solve = np.arange(start - margin, stop + margin) % n_frames
        else:
            solve = np.arange(max(start - margin, 0), min(stop + margin, n_frames))
        inside = np.isin(cols, solve).all(axis=1)
        pieces.append(Span(solve, (start, stop), w, np.flatnonzero(inside)))
    return pieces


def spatial_margin(psf_size: int = 1, downsample: int = 1) -> int:
    """True pixels solved beyond each inner side of a tile's kept region.

    The spatial analogue of :func:`default_margin`: ``(L - 1) + (s - 1)`` for a PSF ``L`` pixels
    wide (true pixels) and downsampling by ``s``, rounded up to a multiple of ``s``, so that every
    measured pixel that touches a kept pixel is used. That is twice the PSF radius plus one
    block; for a PSF of radius ``r`` measured pixels it is at least ``r`` times the downsampling
    factor.
    """
    reach = (int(psf_size) - 1) + (int(downsample) - 1)
    return -(-reach // downsample) * downsample


def plan_axis_tiles(
    n_true: int, tile: int | None, *, psf_size: int = 1, downsample: int = 1, boundary: str = "symmetric",
    overlap: int | None = None, margin: int | None = None,
) -> list[Span]:
    """Spatial tiles along one image axis of ``n_true`` true pixels (``n_true / downsample`` measured).

    ``tile`` is the kept size in true pixels (rounded down to a multiple of ``downsample``), or
    ``None`` for one tile. Tiles solve ``margin`` more pixels on each inner side (default
    :func:`spatial_margin`) and overlap by ``overlap`` pixels (default: the margin, at least 16;
    rounded up to whole downsampling blocks) for blending. Measured pixels whose blurred, binned support leaves the
    solved range are not used (``measured`` lists the ones that are).
    """
    s = downsample
    n_meas = n_true // s
    cols = support(n_true, psf_size, boundary, s, n_meas)
    margin = spatial_margin(psf_size, s) if margin is None else int(margin)
    if tile is None or tile >= n_true:
        return [Span(np.arange(n_true), (0, n_true), np.ones(n_true), np.arange(n_meas))]
    tile = max(tile // s * s, s)
    overlap = max(margin, 16) if overlap is None else int(overlap)
    overlap = min(-(-overlap // s) * s, tile - s)
    starts = spread_starts(n_true, tile, overlap, align=s)
    weights = blend_weights(starts, tile, n_true)
    pieces = []
    for start, w in zip(starts, weights, strict=True):
        lo, hi = max(start - margin, 0), min(start + tile + margin, n_true)
        solve = np.arange(lo, hi)
        inside = ((cols >= lo) & (cols < hi)).all(axis=1)
        pieces.append(Span(solve, (start, min(start + tile, n_true)), w, np.flatnonzero(inside)))
    return pieces


def tile_for_budget(
    frames: int, height: int, width: int, memory_budget: int | None, *, copies: int = 20, multiple: int = 1
) -> int | None:
    """Largest square tile (true pixels, a multiple of ``multiple``) whose solver arrays fit the budget.

    The solver holds about ``copies`` float32 stacks of the solved window (state, noise
    prediction, denoised estimate, CG vectors, operator intermediates; 18 measured with the
    analytic prior, ``benchmarks/window_memory.py``). ``None`` (no tiling) when
    the whole frame fits or no budget is given. The network's own activations are bounded
    separately by evaluating it in tiles (``tile_size``, :class:`~napari_svi.priors.TiledPrior`).
    """
    if memory_budget is None:
        return None
    per_pixel = frames * copies * 4
    if per_pixel * height * width <= memory_budget:
        return None
    side = int(math.sqrt(memory_budget / per_pixel)) // multiple * multiple
    if side < max(multiple, 8):
        raise ValueError(
            f"memory_budget={memory_budget} bytes is too small for a {frames}-frame window "
            f"(needs about {per_pixel * 64} bytes for 8 x 8 pixel tiles); raise it or use a shorter window"
        )
    return side


def check_windowing(window, window_overlap, window_margin, memory_budget) -> tuple[int | None, int, int | None]:
    """Checked ``(window, window_overlap, memory_budget in bytes)`` of a restore, before any heavy work.

    ``window`` ``None`` or 0: the whole stack at once; ``window_overlap`` ``None``:
    ``min(DEFAULT_WINDOW_OVERLAP, window // 4)``; ``memory_budget``: ``None``, a number of bytes or
    a string such as ``"8GB"`` (:func:`dask.utils.parse_bytes`).
    """
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0):
        raise ValueError(f"window must be None (whole stack at once) or a number of frames >= 1, got {window!r}")
    window = int(window) if window else None
    if window_overlap is None:
        window_overlap = min(DEFAULT_WINDOW_OVERLAP, (window or 0) // 4)
    check_positive_int(window_overlap, "window_overlap", minimum=0)
    if window is not None and window_overlap >= window:
        raise ValueError(f"window_overlap must be smaller than window ({window} frames), got {window_overlap}")
    if window_margin is not None:
        check_positive_int(window_margin, "window_margin", minimum=0)
    return window, int(window_overlap), memory_bytes(memory_budget)


def memory_bytes(value) -> int | None:
    """``None``, or a positive number of bytes from an integer or a string such as ``"8GB"``, ``"512 MiB"``."""
    from dask.utils import parse_bytes

    if value is None:
        return None
    number = None
    if isinstance(value, str) or (isinstance(value, (int, np.integer, float)) and not isinstance(value, bool)):
        try:
            number = parse_bytes(value)
        except (ValueError, TypeError):
            number = None
    if number is None or not number > 0:
        raise ValueError(f"memory_budget must be a positive number of bytes or a string like '8GB', got {value!r}")
    return int(number)
