"""The held-out blend of a piece's estimates: ``x_tv + w_rl (x_rl - x_tv) + sum_b w_b B_b (x_svi - x_tv)``.

The weights are least-squares fits of held-out measured entries (:mod:`napari_svi.warm_start` draws
them and runs the held-out solve): :func:`blend_weights` for the shares of the sampler and of
Richardson-Lucy, :func:`band_weights` for the sampler's share per band of temporal frequency
(:func:`temporal_bands`). :class:`RegionalBlend` fits them per square region of the frame
(:data:`BLEND_REGION` pixels, overlapping by half, raised-cosine blended as spatial tiles are:
:func:`napari_svi.windows.spread_starts`, :func:`napari_svi.windows.blend_weights`), so a restore
of the whole frame weighs the prior where it helps, as a restore cut into tiles of that size does.
"""

from __future__ import annotations

import numpy as np
import torch

#: Upper temporal frequencies (cycles per frame) of the blend's bands: the temporal mean, the slow changes up to
#: 0.1, and the rest (:func:`temporal_bands`). ``()`` fits one weight for the whole sampler correction.
BAND_EDGES = (0.0, 0.1)
#: Edge (true pixels) of the square regions that each fit their own blend weights; ``None``: one set per
#: piece. Measured with the 64-px tiles' benchmark (benchmarks/results/tiles_vs_whole/README.md).
BLEND_REGION = 64


def _simplex_fit(r: torch.Tensor, d: list[torch.Tensor]) -> list[float]:
    """Weights ``w_i >= 0``, ``sum w_i <= 1`` minimising ``||r - sum_i w_i d_i||`` (one or two ``d``):
    every face of the simplex is fitted and the feasible fit with the smallest residual is kept."""
    n = len(d)

    def fit(directions: list[int], offset=None):
        """Least squares over ``directions`` (indices into d), from the origin or from vertex ``offset``."""
        rr = r if offset is None else r - d[offset]
        cols = [d[i] if offset is None else d[i] - d[offset] for i in directions]
        m = torch.stack(cols, dim=1)
        if float(m.square().sum()) == 0:
            return torch.zeros(len(cols), dtype=rr.dtype)
        return torch.linalg.lstsq(m, rr[:, None]).solution[:, 0]

    candidates = [[0.0] * n]
    for subset in ([[i] for i in range(n)] + ([list(range(n))] if n > 1 else [])):
        w = [0.0] * n
        for i, c in zip(subset, fit(subset).tolist(), strict=True):
            w[i] = c
        candidates.append(w)
    if n == 2:  # the edge w_0 + w_1 = 1
        t = float(fit([1], offset=0)[0])
        candidates.append([1 - t, t])
    for i in range(n):  # every vertex
        candidates.append([1.0 if j == i else 0.0 for j in range(n)])
    feasible = [w for w in candidates if min(w) >= -1e-12 and sum(w) <= 1 + 1e-12]

    def residual(w):
        return float((r - sum(wi * di for wi, di in zip(w, d, strict=True))).square().sum())

    best = min(feasible, key=residual)
    return [float(min(max(wi, 0.0), 1.0)) for wi in best]


def blend_weights(y: torch.Tensor, operator, held: torch.Tensor, base: torch.Tensor,
                  others: list[torch.Tensor]) -> list[float]:
    """Weights ``w_i >= 0``, ``sum w_i <= 1``, of ``base + sum_i w_i (others_i - base)`` that best predict
    the entries ``held`` of ``y`` (least squares; one or two others): every face of the simplex is
    fitted and the feasible fit with the smallest held-out residual is kept."""
    r = (y - operator.forward(base))[held].double()
    d = [(operator.forward(o) - operator.forward(base))[held].double() for o in others]
    return _simplex_fit(r, d)


def temporal_bands(frames: int, edges=BAND_EDGES, device=None, dtype=torch.float32) -> list[torch.Tensor]:
    """Projections ``(frames, frames)`` onto bands of temporal frequency: DCT-II coefficient ``k`` of
    ``frames`` frames is at ``k / (2 frames)`` cycles per frame, and band ``b`` holds the coefficients
    above ``edges[b - 1]`` up to ``edges[b]`` (the first, at 0, is the temporal mean; the last runs to
    the Nyquist frequency). Empty bands are dropped; the projections sum to the identity."""
    from scipy.fft import dct

    basis = dct(np.eye(frames), type=2, norm="ortho", axis=0).T  # orthonormal DCT-II: columns are the basis vectors
    freq = np.arange(frames) / (2.0 * frames)
    bounds = [-1.0, *edges, np.inf]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        idx = np.flatnonzero((freq > lo) & (freq <= hi))
        if idx.size:
            b = basis[:, idx]
            out.append(torch.as_tensor(b @ b.T, dtype=dtype, device=device))
    return out


def apply_band(projection: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``projection`` (frames x frames) applied along the first (time) axis of ``x``."""
    return torch.einsum("st,t...->s...", projection.to(x.dtype), x)


def _band_fit(r: np.ndarray, m: np.ndarray, upper: float) -> list[float]:
    """Bounded least squares ``min ||r - m w||``, ``0 <= w <= upper``; columns of ``m`` that are zero get 0."""
    from scipy.optimize import lsq_linear

    keep = np.flatnonzero(np.square(m).sum(axis=0) > 0)
    w = np.zeros(m.shape[1])
    if keep.size and upper > 0:
        w[keep] = lsq_linear(m[:, keep], r, bounds=(0.0, upper)).x
    return [float(min(max(v, 0.0), upper)) for v in w]


def band_weights(y: torch.Tensor, operator, held: torch.Tensor, base: torch.Tensor, correction: torch.Tensor,
                 bands: list[torch.Tensor], upper: float) -> list[float]:
    """One weight in ``[0, upper]`` per temporal band of the sampler's ``correction`` (of ``base``): the
    bounded least-squares fit of the held-out entries ``held`` of ``y`` by ``base + sum_b w_b band_b(correction)``.

    One weight for the whole correction is fitted where the forward model keeps (the temporal mean) and
    says nothing of where the prior helps (a temporal PSF damps the fast changes, which the measurement
    barely sees): on a nuclei clip with a box of 7 frames, 0.28 where the weight best for the image is
    0.96. A temporal PSF scales each band of temporal frequency by about one factor, and a factor does
    not change a least-squares weight, so per band the held-out fit estimates the weight best for the
    image (there: 0.43 and 1.09 above the mean, against 0.47 and 1.19 from the ground truth)."""
    r = (y - operator.forward(base))[held].double().cpu().numpy()
    m = np.stack([operator.forward(apply_band(b, correction))[held].double().cpu().numpy() for b in bands], axis=1)
    return _band_fit(r, m, upper)


class RegionalBlend:
    """Blend weights per square region of the measurement grid, blended into smooth weight maps.

    ``y``: the observed measurement; ``operator``: the piece's forward model, whose output grid is the
    frame's (no downsampling), the first ``H x W`` pixels of its padded input; ``held``: the held-out
    entries; ``base``: the held-out TV estimate; ``svi``, ``rl``: the held-out sampler and
    Richardson-Lucy estimates (``rl`` may be ``None``); ``bands``: :func:`temporal_bands` or ``None``;
    ``rl_weight``: Richardson-Lucy's share, the piece's (fitted per region, it cost 0.3-0.5 dB on the
    suite's actin clip under a spatial PSF at 128 px: a region's held-out entries tell TV from RL
    less well than the piece's). Each region fits the sampler's share (per band) on the held-out
    entries inside it; every forward model is evaluated once.
    """

    def __init__(self, y, operator, held, base, svi, rl, bands, rl_weight: float = 0.0, region: int = BLEND_REGION):
        from .windows import blend_weights as ramps
        from .windows import spread_starts

        h, w = tuple(operator.out_shape)[-2:]
        self.padded = tuple(operator.in_shape)[-2:]
        f_base = operator.forward(base)
        r_all = (y - f_base).double()
        d_svi = (operator.forward(svi) - f_base).double()
        d_rl = None if rl is None else (operator.forward(rl) - f_base).double()
        d_bands = None if bands is None else [operator.forward(apply_band(b, svi - base)).double() for b in bands]
        axes = []
        for n in (h, w):
            starts = spread_starts(n, region, region // 2)
            axes.append(list(zip(starts, ramps(starts, region, n), strict=True)))
        self.regions = []  # (rows, cols, weight map of the region, w_svi, w_rl, band weights)
        for r0, wr in axes[0]:
            for c0, wc in axes[1]:
                sl = (..., slice(r0, r0 + wr.size), slice(c0, c0 + wc.size))
                sel = held[sl]
                r = r_all[sl][sel]
                d = [d_svi[sl][sel]] + ([] if d_rl is None else [d_rl[sl][sel]])
                w_rl = rl_weight if d_rl is not None else 0.0
                rs = (r - w_rl * d[1]) if w_rl > 0 else r
                w_svi = _band_fit(rs.cpu().numpy(), d[0].cpu().numpy()[:, None], 1.0 - w_rl)[0] if r.numel() else 0.0
                band_w = None
                if d_bands is not None:
                    m = np.stack([db[sl][sel].cpu().numpy() for db in d_bands], axis=1)
                    band_w = _band_fit(rs.cpu().numpy(), m, 1.0 - w_rl) if r.numel() else [0.0] * len(d_bands)
                self.regions.append((r0, c0, np.outer(wr, wc), w_svi, w_rl, band_w))

    def weight_map(self, which, device=None, dtype=torch.float32) -> torch.Tensor:
        """The map ``(Hp, Wp)`` of one weight (``"svi"`` or a band index) over the padded frame."""
        h = max(r0 + m.shape[0] for r0, _, m, *_ in self.regions)
        w = max(c0 + m.shape[1] for _, c0, m, *_ in self.regions)
        out = np.zeros((h, w))
        for r0, c0, m, w_svi, _, band_w in self.regions:
            value = w_svi if which == "svi" else band_w[which]
            out[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]] += value * m
        hp, wp = self.padded
        out = np.pad(out, ((0, hp - h), (0, wp - w)), mode="edge")  # padded pixels: the nearest region's weight
        return torch.as_tensor(out, dtype=dtype, device=device)

    def record(self) -> list[dict]:
        """Per region: its first row and column and its weights."""
        return [{"row": int(r0), "col": int(c0), "w": round(w_svi, 4), "w_rl": round(w_rl, 4),
                 **({"bands": [round(v, 4) for v in band_w]} if band_w is not None else {})}
                for r0, c0, _, w_svi, w_rl, band_w in self.regions]
