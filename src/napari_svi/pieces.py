"""Pieces of a restore: the sub-problems (temporal window x spatial tile) the sampler consumes.

A restore is a loop over pieces. A :class:`Piece` is one sub-problem of one 2-D + t stack: its
forward operator (with the measured frames its temporal PSF reaches across the window edge, and
the measured pixels its spatial PSF reaches across the tile edge), the entries of the measurement
it observes, its slice of one frame-aligned noise field per step, and its blend weights. The
planner (:func:`plan_restore`) cuts a stack in time (:func:`~napari_svi.windows.plan_windows`)
and space (:func:`~napari_svi.windows.plan_axis_tiles`) and returns a :class:`Plan`.

Noise: the sampler's start ``x_T`` and its fresh noise of every step come from a
:class:`NoiseField` that is defined on the whole frame (and, for per-frame noise, on the whole
stack's frame index), so two pieces that overlap draw the same numbers at the same pixels. With a
pixel-wise prior and ``A = I`` a tiled restore is therefore the whole-frame restore.

Padding: a piece's frames are padded to the prior's size multiple by its operator
(``A @ Crop(padded, true)``): the padded pixels are part of the sampled stack, free of any data.
This is the only padding of a restore; the network wrapper (:class:`~napari_svi.priors.tiling.TiledPrior`)
pads nothing, so a frame is padded the same way with or without network tiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .intensity import IntensityScale
from .lazy import read_frames
from .operators import Crop, LinearOperator, OperatorSpec, temporal_matrix
from .operators.chain import forward_model
from .windows import (
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_OVERLAP,
    Span,
    default_margin,
    plan_axis_tiles,
    plan_windows,
    tile_for_budget,
)

#: Edge, in pixels, of the square blocks a :class:`NoiseField` draws independently.
NOISE_BLOCK = 64


@dataclass(frozen=True)
class NoiseField:
    """Gaussian noise fields aligned to the frame: one per sampler draw ``k`` (0: ``x_T``; ``i + 1``: after step ``i``).

    The field is cut into ``NOISE_BLOCK`` x ``NOISE_BLOCK`` blocks, each drawn from its own
    generator seeded by ``(seed, k, frame, block row, block column)``; any region of the frame
    (also beyond its edges, as padding needs) is the same wherever it is read from.

    Parameters
    ----------
    seed : int
        Seed of one posterior sample.
    batch_consistent : bool
        One field shared by every frame (the method); ``False``: one per true frame (the ablation).
    """

    seed: int
    batch_consistent: bool = True
    block: int = NOISE_BLOCK

    def region(self, k: int, frames: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
        """The field of draw ``k`` on rows ``[r0, r1)`` and columns ``[c0, c1)``, float32.

        Shape ``(1, 1, r1 - r0, c1 - c0)`` when batch-consistent, else ``(len(frames), 1, ...)``
        with row ``i`` the field of true frame ``frames[i]``.
        """
        (r0, r1), (c0, c1), b = rows, cols, self.block
        keys = [-1] if self.batch_consistent else [int(f) for f in frames]
        out = torch.empty((len(keys), 1, r1 - r0, c1 - c0), dtype=torch.float32)
        for bi in range(r0 // b, -(-r1 // b)):
            for bj in range(c0 // b, -(-c1 // b)):
                y0, y1 = max(r0, bi * b), min(r1, (bi + 1) * b)
                x0, x1 = max(c0, bj * b), min(c1, (bj + 1) * b)
                for n, frame in enumerate(keys):
                    block = self._block(k, frame, bi, bj)
                    out[n, 0, y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] = block[y0 - bi * b : y1 - bi * b, x0 - bj * b : x1 - bj * b]
        return out

    def _block(self, k: int, frame: int, bi: int, bj: int) -> torch.Tensor:
        key = np.random.SeedSequence([self.seed, k, frame + 1, bi, bj]).generate_state(1, np.uint64)[0]
        g = torch.Generator(device="cpu").manual_seed(int(key) & 0x7FFF_FFFF_FFFF_FFFF)
        return torch.randn((self.block, self.block), generator=g, dtype=torch.float32)


@dataclass(frozen=True)
class Piece:
    """One sub-problem of a restore: temporal window ``window`` x one spatial tile of one stack.

    Attributes
    ----------
    window : int
        Index of the temporal window in :attr:`Plan.windows`.
    frames, rows, cols : Span
        What the piece solves and keeps along time, rows and columns (true frames and pixels).
    operator : LinearOperator
        From the solved stack, padded to the prior's size multiple, ``(len(frames.solve), 1, Hp, Wp)``,
        to the piece's measurement: the one forward model of the spec
        (:func:`~napari_svi.operators.chain.forward_model`) restricted to the piece, with the measured
        entries that reach outside the piece (tile borders) and the user's unobserved pixels masked.
    measured_frames : numpy.ndarray
        The measured frames the piece uses (``frames.measured``).
    row_slice, col_slice : slice
        The piece's measured pixels, at measurement resolution.
    """

    window: int
    frames: Span
    rows: Span
    cols: Span
    operator: LinearOperator
    measured_frames: np.ndarray
    row_slice: slice
    col_slice: slice

    @property
    def weights(self) -> np.ndarray:
        """Spatial blend weights of the kept pixels, ``(kept rows, kept cols)`` float32 (time: the window's)."""
        return (self.rows.weights[:, None] * self.cols.weights[None, :]).astype(np.float32)

    def measurement(self, stack, scale: IntensityScale, device) -> torch.Tensor:
        """The piece's measurement of one ``(T_m, H_m, W_m)`` stack on the [0, 1] scale, unobserved entries 0."""
        y01 = scale.to_unit(read_frames(stack, self.measured_frames, self.row_slice, self.col_slice))
        return self.operator.observed(torch.from_numpy(y01)[:, None].to(device))

    def noise(self, field: NoiseField):
        """The sampler's ``noise`` hook: draw ``k`` of ``field`` on this piece's padded region."""
        r0, c0 = int(self.rows.solve[0]), int(self.cols.solve[0])
        _, _, hp, wp = self.operator.in_shape
        return lambda k: field.region(k, self.frames.solve, (r0, r0 + hp), (c0, c0 + wp))

    def kept(self, x01: torch.Tensor) -> np.ndarray:
        """The kept frames and pixels of a solution ``(T_solve, 1, Hp, Wp)``, as ``(T_keep, kh, kw)`` NumPy."""
        ky = slice(self.rows.keep[0] - int(self.rows.solve[0]), self.rows.keep[1] - int(self.rows.solve[0]))
        kx = slice(self.cols.keep[0] - int(self.cols.solve[0]), self.cols.keep[1] - int(self.cols.solve[0]))
        return x01[self.frames.keep_in_solve, 0][:, ky, kx].float().cpu().numpy()

    def blend_into(self, buffer: np.ndarray, x01: torch.Tensor) -> None:
        """Add the weighted kept part of a solution to a window's ``(T_keep, H, W)`` buffer."""
        region = (slice(None), slice(*self.rows.keep), slice(*self.cols.keep))
        buffer[region] += self.weights * self.kept(x01)


@dataclass
class Plan:
    """How a restore is cut: the temporal windows and the spatial tiles shared by every stack.

    Build it with :func:`plan_restore`; :meth:`pieces` makes the pieces of one window.
    """

    spec: OperatorSpec
    n_frames: int
    frame_shape: tuple[int, int]
    windows: list[Span]
    rows: list[Span]
    cols: list[Span]
    margin: int
    size_multiple: int
    kernel: np.ndarray | None
    psf: np.ndarray | None
    mask: np.ndarray | None

    @property
    def tiles(self) -> list[int]:
        """Tiles per frame along rows and columns."""
        return [len(self.rows), len(self.cols)]

    @property
    def tiled(self) -> bool:
        return len(self.rows) * len(self.cols) > 1

    @property
    def pieces_per_window(self) -> int:
        return len(self.rows) * len(self.cols)

    def pieces(self, window: int, device="cpu") -> Iterator[Piece]:
        """The pieces of temporal window ``window``, tile by tile (operators on ``device``, float32)."""
        for rows in self.rows:
            for cols in self.cols:
                yield self._piece(window, rows, cols, device)

    def _piece(self, wi: int, rows: Span, cols: Span, device) -> Piece:
        spec, span = self.spec, self.windows[wi]
        s, d, m = int(spec.temporal_subsample), int(spec.downsample), self.size_multiple
        kernel = self.kernel
        temporal = None
        if s > 1 or (kernel is not None and kernel.size > 1) or not np.array_equal(span.measured * s, span.solve):
            temporal = temporal_matrix(np.ones(1) if kernel is None else kernel, self.n_frames, spec.temporal_boundary,
                                       s, measured=span.measured, solve=span.solve)
        row_slice = slice(int(rows.solve[0]) // d, (int(rows.solve[-1]) + 1) // d)
        col_slice = slice(int(cols.solve[0]) // d, (int(cols.solve[-1]) + 1) // d)
        observed = np.ones((row_slice.stop - row_slice.start, col_slice.stop - col_slice.start), dtype=bool)
        if self.tiled:  # measured pixels whose PSF reaches outside the tile are not the tile's data
            observed &= np.isin(np.arange(row_slice.start, row_slice.stop), rows.measured)[:, None]
            observed &= np.isin(np.arange(col_slice.start, col_slice.stop), cols.measured)[None, :]
        if self.mask is not None:
            user = self.mask[span.measured] if self.mask.ndim == 3 else self.mask
            observed = observed & (user[..., row_slice, col_slice] != 0)
        th, tw = len(rows.solve), len(cols.solve)
        shape = (len(span.solve), 1, th, tw)
        op = forward_model(shape, temporal=temporal, psf=self.psf, downsample=d, observed=observed,
                           spatial_boundary="symmetric" if self.tiled else spec.spatial_boundary)
        padded = (shape[0], 1, -(-th // m) * m, -(-tw // m) * m)
        if padded != shape:  # the one place frames are padded to the network's size multiple; the padding is free
            op = op @ Crop(padded, shape)
        return Piece(wi, span, rows, cols, op.to(device, torch.float32), span.measured, row_slice, col_slice)


def plan_restore(
    spec: OperatorSpec, measurement_shape: tuple[int, int, int], true_frames: int | None = None, *,
    window: int | None = DEFAULT_WINDOW, overlap: int = DEFAULT_WINDOW_OVERLAP, margin: int | None = None,
    memory_budget: int | None = None, size_multiple: int = 1,
) -> Plan:
    """Cut the restore of ``(T_m, H_m, W_m)`` stacks into temporal windows and, under a memory budget, tiles.

    ``spec`` must be valid for the measurement (:meth:`OperatorSpec.validate`). Windows come from
    :func:`~napari_svi.windows.plan_windows`; frames are tiled when one window's solver arrays do
    not fit ``memory_budget`` bytes (:func:`~napari_svi.windows.tile_for_budget`), which needs
    ``spatial_boundary='symmetric'``. ``size_multiple`` is the prior's: pieces are padded to it.
    """
    t, h, w = spec.true_shape(measurement_shape, true_frames)
    kernel, psf = spec.temporal_kernel(), spec.spatial_kernel()
    s, d = int(spec.temporal_subsample), int(spec.downsample)
    windows = plan_windows(t, kernel, spec.temporal_boundary, s, window=window, overlap=overlap, margin=margin)
    margin = default_margin(1 if kernel is None else kernel.size, s) if margin is None else int(margin)
    solve_frames = max(len(p.solve) for p in windows)
    tile = tile_for_budget(solve_frames, h, w, memory_budget, multiple=max(d, size_multiple))
    if tile is not None and spec.spatial_boundary == "circular":
        raise ValueError("memory_budget would cut frames into tiles, which needs spatial_boundary='symmetric'; "
                         "raise memory_budget or use the symmetric boundary")
    psf_shape = (1, 1) if psf is None else psf.shape
    rows = plan_axis_tiles(h, tile, psf_size=psf_shape[0], downsample=d, boundary=spec.spatial_boundary)
    cols = plan_axis_tiles(w, tile, psf_size=psf_shape[1], downsample=d, boundary=spec.spatial_boundary)
    return Plan(spec, t, (h, w), windows, rows, cols, margin, size_multiple, kernel, psf, spec.mask_array())
