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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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
