"""Small RGBA pictures of the temporal kernel and the spatial PSF for the live previews.

Plain NumPy (no plotting library): a bar chart of the weights per frame, and the PSF enlarged
with nearest-neighbour pixels on a square-root intensity scale so that Airy rings stay visible.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = (38, 41, 48, 255)  # napari's dark theme
BAR = (0, 190, 255, 255)
CENTRE = (255, 200, 60, 255)
AXIS = (120, 124, 132, 255)


def _canvas(height: int, width: int) -> np.ndarray:
    out = np.empty((height, width, 4), dtype=np.uint8)
    out[:] = BACKGROUND
    return out


def temporal_picture(kernel: np.ndarray | None, height: int = 72, width: int = 180) -> np.ndarray:
    """Bar chart of a temporal kernel (weights per frame); the frame itself is drawn in amber.

    ``None`` (no temporal blur) is drawn as the single weight 1 on the frame itself.
    """
    k = np.array([1.0]) if kernel is None else np.asarray(kernel, dtype=float).ravel()
    out = _canvas(height, width)
    n = len(k)
    margin, base = 6, height - 6
    slot = (width - 2 * margin) / max(n, 1)
    gap = 1 if slot >= 4 else 0
    top = float(k.max()) if k.size and k.max() > 0 else 1.0
    for i, w in enumerate(k):
        x0 = int(round(margin + i * slot)) + gap
        x1 = max(int(round(margin + (i + 1) * slot)) - gap, x0 + 1)
        h = int(round((base - margin) * w / top))
        out[base - h : base, x0:x1] = CENTRE if i == n // 2 else BAR
    out[base, margin : width - margin] = AXIS
    return out


def spatial_picture(psf: np.ndarray | None, size: int = 96) -> np.ndarray:
    """The PSF enlarged to about ``size`` x ``size`` pixels, square-root scaled, in a warm colour map.

    ``None`` (no spatial blur) is drawn as a single bright pixel in a 9 x 9 frame.
    """
    p = np.pad(np.ones((1, 1)), 4) if psf is None else np.asarray(psf, dtype=float)
    zoom = max(1, size // max(p.shape))
    img = np.sqrt(np.clip(p, 0, None) / (p.max() if p.max() > 0 else 1.0))
    img = np.kron(img, np.ones((zoom, zoom)))
    out = _canvas(size, size)
    h, w = min(img.shape[0], size), min(img.shape[1], size)
    y0, x0 = (size - h) // 2, (size - w) // 2
    v = img[:h, :w]
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)  # "hot"
    out[y0 : y0 + h, x0 : x0 + w, :3] = (255 * rgb).astype(np.uint8)
    return out


def fwhm_px(psf: np.ndarray) -> float:
    """Full width at half maximum of the PSF's central row, pixels (linear interpolation)."""
    row = np.asarray(psf, dtype=float)[psf.shape[0] // 2]
    peak = row.max()
    if peak <= 0:
        return 0.0
    above = np.nonzero(row >= peak / 2)[0]
    left, right = above[0], above[-1]

    def cross(i0: int, i1: int) -> float:
        a, b = row[i0], row[i1]
        return i0 + (peak / 2 - a) / (b - a) * (i1 - i0) if b != a else float(i0)

    x_left = cross(left - 1, left) if left > 0 else float(left)
    x_right = cross(right, right + 1) if right + 1 < len(row) else float(right)
    return float(x_right - x_left)
