"""Per-frame spatial forward models: 2-D PSF convolution, block-mean downsampling and a pixel mask.

All act on every frame and channel of a ``(T, C, H, W)`` stack independently and have exact
adjoints (see ``tests/test_operators.py``).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

from ..validation import check_positive_int
from .base import LinearOperator
from .temporal import BOUNDARIES, boundary_indices

#: Largest PSF (per axis, pixels) that ``method="auto"`` convolves directly; larger ones use the FFT.
DIRECT_MAX_SIZE = 15
METHODS = ("auto", "fft", "direct")
_HALF = (torch.float16, torch.bfloat16)


def _direct_dtype(x: torch.Tensor) -> torch.dtype:
    # cuDNN runs float32 convolutions in TF32 (10-bit mantissa) by default, which would break the
    # exact adjoint; float64 there is cheap for kernels of at most a few hundred taps.
    return torch.float64 if (x.is_cuda and x.dtype == torch.float32) else x.dtype


def _fft_dtype(x: torch.Tensor) -> torch.dtype:
    # FFTs in half precision are limited to power-of-two sizes (CUDA only): use float32 instead.
    return torch.float32 if x.dtype in _HALF else x.dtype


class SpatialConvolution(LinearOperator):
    """Same-size 2-D convolution of every frame with a PSF: ``y = psf * x`` (true convolution, flipped).

    Parameters
    ----------
    psf : numpy.ndarray, shape (kh, kw)
        Point spread function in pixels, normalised by the caller (sum 1; not renormalised here).
        Any size, odd or even; the pixel ``(kh // 2, kw // 2)`` is the centre (where a point source
        images to): a point at ``p`` produces ``y[p + d] = psf[kh // 2 + d_y, kw // 2 + d_x]``.
    in_shape : tuple of int
        ``(T, C, H, W)``; the output has the same shape.
    boundary : {"symmetric", "circular"}
        ``"symmetric"``: the frame is extended by mirroring with the edge pixel repeated (numpy
        ``pad`` mode ``'symmetric'``, scipy.ndimage mode ``'reflect'``), implemented as an index
        gather whose adjoint adds the mirrored pixels back. ``"circular"``: periodic (scipy mode
        ``'wrap'``).
    method : {"auto", "fft", "direct"}
        ``"direct"``: ``conv2d`` on the padded frame (adjoint ``conv_transpose2d``); ``"fft"``: real
        FFTs (adjoint multiplies by the conjugate transfer function); ``"auto"``: direct for PSFs up
        to ``DIRECT_MAX_SIZE`` x ``DIRECT_MAX_SIZE`` pixels, FFT otherwise. Both are exact.

    Notes
    -----
    ``y[p] = sum_m psf[m] x_ext[p + c - m]`` with ``c = (kh // 2, kw // 2)`` and ``x_ext`` the frame
    extended by the boundary rule, i.e. ``scipy.ndimage.convolve(x, psf, mode="reflect" or "wrap")``.
    On CUDA, float32 direct convolutions are computed in float64 (cuDNN would otherwise use TF32).
    """

    def __init__(self, psf, in_shape, boundary: str = "symmetric", method: str = "auto"):
        psf = np.asarray(psf, dtype=np.float64)
        if psf.ndim != 2 or psf.size == 0:
            raise ValueError(f"psf must be a non-empty 2-D array, got shape {psf.shape}")
        if not np.all(np.isfinite(psf)):
            raise ValueError("psf contains NaN or infinite values")
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        super().__init__(in_shape, in_shape)
        kh, kw = psf.shape
        h, w = self.in_shape[2:]
        if method == "auto":
            method = "direct" if max(kh, kw) <= DIRECT_MAX_SIZE else "fft"
        self.psf = psf
        self.boundary = boundary
        self.method = method
        self._pad_before = (kh - 1 - kh // 2, kw - 1 - kw // 2)
        self._padded = (h + kh - 1, w + kw - 1)
        if method == "direct" or boundary == "symmetric":
            # x_ext = x[rows][:, cols]: frame extended so that a 'valid' correlation gives H x W
            self._register("rows", torch.as_tensor(boundary_indices(h, self._pad_before[0], kh // 2, boundary)))
            self._register("cols", torch.as_tensor(boundary_indices(w, self._pad_before[1], kw // 2, boundary)))
        if method == "direct":
            # conv2d correlates; flipping turns it into a true convolution
            self._register("weight", torch.as_tensor(psf[::-1, ::-1].copy())[None, None])
            # a separable PSF (a Gaussian: rank 1) is two 1-D convolutions, kh + kw instead of kh * kw
            # multiplications per pixel (measured 5-6x faster for a 13 x 13 Gaussian on the CPU)
            u, sv, vt = np.linalg.svd(psf)
            self.separable = bool(min(kh, kw) > 1 and (sv.size < 2 or sv[1] <= 1e-9 * sv[0]))
            if self.separable:
                col, row = u[:, 0] * math.sqrt(sv[0]), vt[0] * math.sqrt(sv[0])
                self._register("wcol", torch.as_tensor(col[::-1].copy()).reshape(1, 1, kh, 1))
                self._register("wrow", torch.as_tensor(row[::-1].copy()).reshape(1, 1, 1, kw))
        elif boundary == "symmetric":
            # linear convolution of the extended frame, on a grid large enough never to wrap
            self._fft_shape = (
                scipy.fft.next_fast_len(self._padded[0], True),
                scipy.fft.next_fast_len(self._padded[1], True),
            )
            self._register("otf", torch.fft.rfft2(torch.as_tensor(psf), s=self._fft_shape))
        else:
            # circular: the PSF centre goes to pixel (0, 0); PSFs larger than the frame alias, exactly
            self._fft_shape = (h, w)
            wrapped = np.zeros((h, w))
            iy = (np.arange(kh) - kh // 2) % h
            ix = (np.arange(kw) - kw // 2) % w
            np.add.at(wrapped, (iy[:, None], ix[None, :]), psf)
            self._register("otf", torch.fft.rfft2(torch.as_tensor(wrapped)))

    # -- boundary extension by index gather and its adjoint -------------------------------------
    def _extend(self, x: torch.Tensor) -> torch.Tensor:
        rows = self._buffer("rows", x.device, x.dtype)
        cols = self._buffer("cols", x.device, x.dtype)
        return x.index_select(-2, rows).index_select(-1, cols)

    def _extend_adjoint(self, g: torch.Tensor) -> torch.Tensor:
        rows = self._buffer("rows", g.device, g.dtype)
        cols = self._buffer("cols", g.device, g.dtype)
        h, w = self.in_shape[2:]
        folded = g.new_zeros(g.shape[:-1] + (w,)).index_add_(-1, cols, g)
        return g.new_zeros(g.shape[:-2] + (h, w)).index_add_(-2, rows, folded)

    def _conv(self, x: torch.Tensor, device, dtype, flip: bool) -> torch.Tensor:
        """'Valid' correlation of ``x`` (N, 1, H', W') with the stored kernel (flipped: with the PSF itself)."""
        if self.separable:
            col, row = self._buffer("wcol", device, dtype), self._buffer("wrow", device, dtype)
            if flip:
                col, row = col.flip(-2), row.flip(-1)
            return F.conv2d(F.conv2d(x, col), row)
        weight = self._buffer("weight", device, dtype)
        return F.conv2d(x, weight.flip(-1, -2) if flip else weight)

    # -- forward / adjoint -----------------------------------------------------------------------
    def _forward(self, x):
        t, c, h, w = x.shape
        if self.method == "direct":
            work = _direct_dtype(x)
            xe = self._extend(x.to(work)).reshape(t * c, 1, *self._padded)
            y = self._conv(xe, x.device, work, flip=False)
            return y.reshape(t, c, h, w).to(x.dtype)
        work = _fft_dtype(x)
        otf = self._buffer("otf", x.device, work)
        if self.boundary == "circular":
            y = torch.fft.irfft2(torch.fft.rfft2(x.to(work)) * otf, s=(h, w))
        else:
            kh, kw = self.psf.shape
            full = torch.fft.irfft2(
                torch.fft.rfft2(self._extend(x.to(work)), s=self._fft_shape) * otf, s=self._fft_shape
            )
            y = full[..., kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w]
        return y.to(x.dtype).contiguous()

    def _adjoint(self, y):
        t, c, h, w = y.shape
        if self.method == "direct":
            work = _direct_dtype(y)
            # conv_transpose2d is the exact adjoint but ~10x slower than conv2d on CPU; the same full
            # convolution is conv2d with the flipped kernel on the zero-padded input
            kh, kw = self.psf.shape
            yp = F.pad(y.to(work).reshape(t * c, 1, h, w), (kw - 1, kw - 1, kh - 1, kh - 1))
            g = self._conv(yp, y.device, work, flip=True)
            return self._extend_adjoint(g.reshape(t, c, *self._padded)).to(y.dtype)
        work = _fft_dtype(y)
        otf_conj = self._buffer("otf", y.device, work).conj()
        if self.boundary == "circular":
            return torch.fft.irfft2(torch.fft.rfft2(y.to(work)) * otf_conj, s=(h, w)).to(y.dtype)
        kh, kw = self.psf.shape
        fh, fw = self._fft_shape
        embedded = F.pad(y.to(work), (kw - 1, fw - w - kw + 1, kh - 1, fh - h - kh + 1))
        full = torch.fft.irfft2(torch.fft.rfft2(embedded) * otf_conj, s=self._fft_shape)
        ph, pw = self._padded
        return self._extend_adjoint(full[..., :ph, :pw]).to(y.dtype)

    def __repr__(self) -> str:
        kh, kw = self.psf.shape
        return f"SpatialConvolution({kh}x{kw} psf, {self.boundary}, {self.method}, {self.in_shape})"


class Downsample(LinearOperator):
    """Mean over ``factor x factor`` pixel blocks (camera binning / super-resolution).

    Parameters
    ----------
    factor : int
        Block size ``s`` in pixels, ``>= 1``.
    in_shape : tuple of int
        ``(T, C, H, W)`` with ``H`` and ``W`` divisible by ``s``; the output is ``(T, C, H / s, W / s)``.

    Notes
    -----
    ``y[i, j] = s^-2 sum_{a, b < s} x[s i + a, s j + b]``; the adjoint copies ``y[i, j] / s^2`` to
    every pixel of block ``(i, j)``.
    """

    def __init__(self, factor: int, in_shape):
        factor = check_positive_int(factor, "downsample factor")
        t, c, h, w = in_shape
        if h % factor or w % factor:
            raise ValueError(f"downsample factor {factor} must divide the frame size {h} x {w} (H x W) exactly")
        super().__init__(in_shape, (t, c, h // factor, w // factor))
        self.factor = factor

    def _forward(self, x):
        return F.avg_pool2d(x, self.factor)

    def _adjoint(self, y):
        s = self.factor
        return y.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1) / (s * s)

    def __repr__(self) -> str:
        return f"Downsample({self.factor}, {self.in_shape} -> {self.out_shape})"


class Mask(LinearOperator):
    """Keep observed pixels, zero the others (inpainting); self-adjoint.

    Parameters
    ----------
    mask : numpy.ndarray or torch.Tensor, shape (H, W) or (T, H, W)
        Nonzero = observed. A 2-D mask is shared by all frames; a 3-D one gives one mask per frame.
        The same mask applies to every channel.
    in_shape : tuple of int
        ``(T, C, H, W)``; the output has the same shape.
    """

    def __init__(self, mask, in_shape):
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        m = np.asarray(mask)
        super().__init__(in_shape, in_shape)
        t, _, h, w = self.in_shape
        if m.shape not in ((h, w), (t, h, w)):
            raise ValueError(
                f"mask must have shape (H, W) = {(h, w)} or (T, H, W) = {(t, h, w)} for a stack of shape "
                f"{self.in_shape}, got {m.shape}"
            )
        if m.dtype.kind == "f" and not np.all(np.isfinite(m)):
            raise ValueError("mask contains NaN or infinite values")
        self.mask = m != 0
        # 0 and 1 are exact in float32: a float32 master is also the float32 copy the solver uses (no second
        # array; a float64 master and its float32 copy held 12 bytes per entry for every fold of a piece)
        observed = torch.as_tensor(self.mask, dtype=torch.float32)
        self._register("mask", observed[:, None] if m.ndim == 3 else observed[None, None])

    def _forward(self, x):
        return x * self._buffer("mask", x.device, x.dtype)

    _adjoint = _forward

    def observed(self, y):
        return self.forward(y)

    def __repr__(self) -> str:
        return f"Mask({self.mask.shape}, {100 * self.mask.mean():.1f}% observed, {self.in_shape})"
