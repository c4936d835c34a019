"""``OperatorSpec``: the user-facing description of the forward model ``A``, its checks and its shapes.

The spec holds what a user types or picks (strings such as ``"uniform:7"``, arrays, file paths);
:meth:`OperatorSpec.validate` checks it against a measurement before any heavy work and
:meth:`OperatorSpec.build` turns it into a :class:`~napari_svi.operators.base.LinearOperator`::

    true stack (T, C, H, W)
      -> temporal PSF (+ subsampling)   (T_m, C, H, W),     T_m = ceil(T / temporal_subsample)
      -> spatial PSF                    (T_m, C, H, W)
      -> downsampling                   (T_m, C, H_m, W_m), H_m = H / downsample
      -> mask                           (T_m, C, H_m, W_m)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..psf import spatial_psf, temporal_kernel
from ..validation import check_positive_int
from .base import LinearOperator, as_shape
from .chain import forward_model
from .temporal import BOUNDARIES, temporal_matrix

_FIELDS = (
    "temporal_psf",
    "temporal_boundary",
    "temporal_subsample",
    "spatial_psf",
    "spatial_boundary",
    "downsample",
    "mask",
)


def _significant(values: np.ndarray, digits: int = 6) -> list:
    """Nested lists of floats rounded to ``digits`` significant digits (JSON-able)."""
    if values.ndim == 0:
        return float(f"{float(values):.{digits}g}")  # type: ignore[return-value]
    return [_significant(v, digits) for v in values]


def _frames_or_shape(shape, name: str) -> tuple[int, ...]:
    """A ``(T, H, W)`` or ``(T, C, H, W)`` shape of positive integers."""
    try:
        dims = tuple(int(s) for s in shape)
        ok = len(dims) in (3, 4) and all(d >= 1 for d in dims) and all(int(s) == s for s in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be (T, H, W) or (T, C, H, W) with positive integers, got {shape!r}")
    return dims


@dataclass(eq=False)
class OperatorSpec:
    """Description of the forward model ``y = A x`` (temporal PSF -> spatial PSF -> downsampling -> mask).

    Parameters
    ----------
    temporal_psf : None, str, array-like or path
        ``None``/``"none"``, ``"uniform:K"`` (box of K frames), ``"gaussian:SIGMA"`` (frames), a 1-D
        array of weights, or a ``.txt``/``.csv``/``.npy``/``.tif`` file; see
        :func:`napari_svi.psf.temporal_kernel`.
    temporal_boundary : {"symmetric", "circular"}
        Frames beyond the ends: mirrored with the edge frame repeated (realistic default) or
        wrapped (the paper's setting).
    temporal_subsample : int
        Only frames ``0, s, 2s, ...`` of the true stack are measured (frame interpolation).
    spatial_psf : None, str, array-like or path
        ``None``/``"none"``, ``"gaussian:SIGMA"`` (pixels), ``"airy:NA,WAVELENGTH_NM,PIXEL_NM"``, a 2-D
        array, or a ``.tif``/``.npy`` file; see :func:`napari_svi.psf.spatial_psf`.
    spatial_boundary : {"symmetric", "circular"}
        Frame edges for the spatial convolution: mirrored (default) or periodic.
    downsample : int
        Integer factor ``s``: each measured pixel is the mean of an ``s x s`` block of the true frame.
    mask : None, array-like or path
        At measurement resolution, nonzero = observed: ``(H_m, W_m)`` shared by all frames or
        ``(T_m, H_m, W_m)``; an array or a TIFF (or ``.npy``) file.

    Notes
    -----
    Equality is identity (``eq=False``): fields may hold arrays. Compare ``to_dict()`` records instead.

    Examples
    --------
    >>> spec = OperatorSpec(temporal_psf="uniform:7", spatial_psf="gaussian:1.5", downsample=2)
    >>> spec.measurement_shape((16, 64, 64))
    (16, 32, 32)
    >>> A = spec.build((16, 1, 64, 64))
    """

    temporal_psf: object = None
    temporal_boundary: str = "symmetric"
    temporal_subsample: int = 1
    spatial_psf: object = None
    spatial_boundary: str = "symmetric"
    downsample: int = 1
    mask: object = None

    # -- resolved parts ---------------------------------------------------------------------------
    def temporal_kernel(self) -> np.ndarray | None:
        """The temporal PSF as float64 weights summing to 1, shape ``(L,)``, or ``None``."""
        return temporal_kernel(self.temporal_psf)

    def spatial_kernel(self) -> np.ndarray | None:
        """The spatial PSF as a float64 image summing to 1, shape ``(kh, kw)``, or ``None``."""
        return spatial_psf(self.spatial_psf)

    def mask_array(self) -> np.ndarray | None:
        """The mask as given (array or loaded file), not yet checked for shape; ``None`` without mask."""
        mask = self.mask
        if mask is None:
            return None
        if isinstance(mask, (str, os.PathLike)):
            path = Path(mask)
            if not path.is_file():
                raise ValueError(f"mask: file not found: {str(path)!r}")
            try:
                if path.suffix.lower() == ".npy":
                    arr = np.load(path, allow_pickle=False)
                else:
                    from ..io import read_stack

                    arr = read_stack(path)[0]
            except (ValueError, OSError) as err:
                raise ValueError(f"mask: {err}") from None
            if arr.dtype.kind not in "biuf":
                raise ValueError(f"mask: {str(path)!r} must hold numbers (nonzero = observed), got dtype {arr.dtype}")
            return arr
        if isinstance(mask, torch.Tensor):
            return mask.detach().cpu().numpy()
        arr = np.asarray(mask)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"mask must be a numeric or boolean array or a TIFF path, got dtype {arr.dtype}")
        return arr

    def _subsample(self) -> int:
        return check_positive_int(self.temporal_subsample, "temporal_subsample")

    def _downsample(self) -> int:
        return check_positive_int(self.downsample, "downsample")

    # -- shapes -----------------------------------------------------------------------------------
    def measurement_shape(self, true_shape) -> tuple[int, ...]:
        """Shape of the measurement of a true stack.

        Parameters
        ----------
        true_shape : tuple of int
            ``(T, H, W)`` (or ``(T, C, H, W)``, then ``C`` is passed through).

        Returns
        -------
        tuple of int
            ``(T_m, H_m, W_m)`` (or ``(T_m, C, H_m, W_m)``) with ``T_m = ceil(T / temporal_subsample)``
            and ``H_m = H / downsample``, ``W_m = W / downsample``.
        """
        dims = _frames_or_shape(true_shape, "true_shape")
        s, d = self._subsample(), self._downsample()
        t, h, w = dims[0], dims[-2], dims[-1]
        if h % d or w % d:
            raise ValueError(f"downsample={d} must divide the true frame size {h} x {w} (H x W) exactly")
        out = (math.ceil(t / s), h // d, w // d)
        return out if len(dims) == 3 else (out[0], dims[1], out[1], out[2])

    def true_shape(self, measurement_shape, true_frames: int | None = None) -> tuple[int, ...]:
        """Shape of the true (restored) stack for a measurement.

        Parameters
        ----------
        measurement_shape : tuple of int
            ``(T_m, H_m, W_m)`` (or ``(T_m, C, H_m, W_m)``).
        true_frames : int, optional
            Frames ``T`` of the true stack; default ``(T_m - 1) * temporal_subsample + 1`` (the last
            measured frame is the last true frame). Must satisfy ``ceil(T / temporal_subsample) == T_m``.

        Returns
        -------
        tuple of int
            ``(T, H_m * downsample, W_m * downsample)`` (or with ``C``).
        """
        dims = _frames_or_shape(measurement_shape, "measurement_shape")
        s, d = self._subsample(), self._downsample()
        t_m = dims[0]
        if true_frames is None:
            t = (t_m - 1) * s + 1
        else:
            t = check_positive_int(true_frames, "true_frames")
            if math.ceil(t / s) != t_m:
                raise ValueError(
                    f"true_frames={true_frames} does not match {t_m} measured frames with temporal_subsample={s}: "
                    f"allowed {(t_m - 1) * s + 1}..{t_m * s}"
                )
        out = (t, dims[-2] * d, dims[-1] * d)
        return out if len(dims) == 3 else (out[0], dims[1], out[1], out[2])

    # -- checks -----------------------------------------------------------------------------------
    def validate(self, measurement_shape, true_frames: int | None = None) -> None:
        """Check every field against a measurement before any heavy work.

        Parameters
        ----------
        measurement_shape : tuple of int
            ``(T_m, H_m, W_m)`` (or ``(T_m, C, H_m, W_m)``) of the data to restore.
        true_frames : int, optional
            As in :meth:`true_shape`.

        Raises
        ------
        ValueError
            Naming the parameter at fault (``temporal_psf``, ``temporal_boundary``,
            ``temporal_subsample``, ``spatial_psf``, ``spatial_boundary``, ``downsample``, ``mask``,
            ``true_frames``) and what is allowed.
        """
        for name in ("temporal_boundary", "spatial_boundary"):
            value = getattr(self, name)
            if value not in BOUNDARIES:
                raise ValueError(f"{name} must be one of {BOUNDARIES}, got {value!r}")
        self._subsample()
        self._downsample()
        dims = _frames_or_shape(measurement_shape, "measurement_shape")
        t_m, h_m, w_m = dims[0], dims[-2], dims[-1]
        t, h, w = self.true_shape((t_m, h_m, w_m), true_frames)
        kernel = self.temporal_kernel()
        if kernel is not None and self.temporal_boundary == "circular" and kernel.size > t:
            raise ValueError(
                f"temporal_psf spans {kernel.size} frames, more than the {t} frames of the true stack; with "
                "temporal_boundary='circular' it would wrap onto itself: use temporal_boundary='symmetric' or a "
                "shorter kernel"
            )
        psf = self.spatial_kernel()
        if psf is not None and (psf.shape[0] > h or psf.shape[1] > w):
            raise ValueError(
                f"spatial_psf is {psf.shape[0]} x {psf.shape[1]} pixels, larger than the {h} x {w} true frame; "
                "crop the PSF (or use a smaller default size)"
            )
        mask = self.mask_array()
        if mask is not None:
            if mask.shape not in ((h_m, w_m), (t_m, h_m, w_m)):
                raise ValueError(
                    f"mask must have shape {h_m} x {w_m} (Y x X, one mask for every frame) or {t_m} x {h_m} x {w_m} "
                    f"(T x Y x X) at the measurement's resolution, got {' x '.join(map(str, mask.shape))}"
                )
            if mask.dtype.kind == "f" and not np.all(np.isfinite(mask)):
                raise ValueError("mask contains NaN or infinite values; use 0 for missing and 1 for observed pixels")
            if not np.any(mask):
                raise ValueError("mask has no observed pixel (all zero); nonzero marks observed pixels")

    # -- the operator -----------------------------------------------------------------------------
    def build(self, true_shape, device="cpu", dtype: torch.dtype = torch.float32) -> LinearOperator:
        """The forward operator ``A`` for a true stack of shape ``(T, C, H, W)``.

        Validates first (:meth:`validate`). Parts that are absent (or trivial: a 1-frame temporal
        kernel, a 1 x 1 PSF, a mask observing everything) are skipped; with nothing left the result
        is :class:`~napari_svi.operators.base.Identity` (:func:`~napari_svi.operators.chain.forward_model`).

        Returns
        -------
        LinearOperator
            ``in_shape = (T, C, H, W)``, ``out_shape = (T_m, C, H_m, W_m)``, data on ``device`` in
            ``dtype`` (any other float dtype/device also works, converted lazily).
        """
        shape = as_shape(true_shape, "true_shape")
        t, _, h, w = shape
        self.validate(self.measurement_shape((t, h, w)), true_frames=t)
        kernel, s = self.temporal_kernel(), self._subsample()
        temporal = None
        if s > 1 or (kernel is not None and kernel.size > 1):
            temporal = temporal_matrix(np.ones(1) if kernel is None else kernel, t, self.temporal_boundary, s)
        op = forward_model(shape, temporal=temporal, psf=self.spatial_kernel(), spatial_boundary=self.spatial_boundary,
                           downsample=self._downsample(), observed=self.mask_array())
        return op.to(device, dtype)

    @property
    def is_identity(self) -> bool:
        """True when the spec describes no degradation at all (``A = I``)."""
        kernel = self.temporal_kernel()
        psf = self.spatial_kernel()
        mask = self.mask_array()
        return (
            self._subsample() == 1
            and (kernel is None or kernel.size == 1)
            and (psf is None or psf.size == 1)
            and self._downsample() == 1
            and (mask is None or bool(np.all(mask != 0)))
        )

    # -- records ----------------------------------------------------------------------------------
    @staticmethod
    def _psf_record(value, resolve):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return str(value)
        kernel = resolve(value)
        return None if kernel is None else _significant(kernel)

    def to_dict(self) -> dict:
        """A JSON-able record (for file metadata).

        Strings (specs and paths) are kept as strings, arrays become lists of floats rounded to 6
        significant digits (after normalisation to sum 1), a mask becomes ``{"shape", "observed_fraction"}``
        (plus ``"path"`` when it was given as a file). ``"description"`` is :meth:`describe`.
        """
        mask = self.mask_array()
        mask_record = None
        if mask is not None:
            mask_record = {"shape": list(mask.shape), "observed_fraction": round(float(np.mean(mask != 0)), 6)}
            if isinstance(self.mask, (str, os.PathLike)):
                mask_record["path"] = str(self.mask)
        return {
            "temporal_psf": self._psf_record(self.temporal_psf, temporal_kernel),
            "temporal_boundary": self.temporal_boundary,
            "temporal_subsample": self._subsample(),
            "spatial_psf": self._psf_record(self.spatial_psf, spatial_psf),
            "spatial_boundary": self.spatial_boundary,
            "downsample": self._downsample(),
            "mask": mask_record,
            "description": self.describe(),
        }

    @classmethod
    def from_dict(cls, record: dict, mask=None) -> OperatorSpec:
        """Rebuild a spec from :meth:`to_dict`'s record.

        Parameters
        ----------
        record : dict
            As written by :meth:`to_dict` (``"description"`` is ignored; missing fields take defaults).
        mask : array-like or path, optional
            The mask itself. Needed when the record holds only a mask summary (a mask given as an
            array); a mask given as a file is reloaded from its ``"path"``.
        """
        if not isinstance(record, dict):
            raise ValueError(f"record must be a dict from OperatorSpec.to_dict(), got {type(record).__name__}")
        unknown = set(record) - set(_FIELDS) - {"description"}
        if unknown:
            raise ValueError(f"unknown operator fields {sorted(unknown)}; allowed: {list(_FIELDS)}")
        kwargs = {k: record[k] for k in _FIELDS if k in record and k != "mask"}
        for key in ("temporal_psf", "spatial_psf"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = np.asarray(kwargs[key], dtype=np.float64)
        summary = record.get("mask")
        if mask is None and summary is not None:
            if isinstance(summary, dict) and "path" in summary:
                mask = summary["path"]
            elif isinstance(summary, (str, list)):
                mask = summary if isinstance(summary, str) else np.asarray(summary)
            else:
                raise ValueError(
                    f"mask: the record keeps only a summary of the mask ({summary}); pass the mask itself, "
                    "OperatorSpec.from_dict(record, mask=...)"
                )
        return cls(**kwargs, mask=mask)

    def describe(self) -> str:
        """One line of plain text, e.g. ``"temporal uniform:7 (7 frames, symmetric) -> downsample x2"``."""

        def label(value, default: str) -> str:
            if isinstance(value, str):
                return value
            if isinstance(value, os.PathLike):
                return Path(value).name
            return default

        parts = []
        kernel = self.temporal_kernel()
        s = self._subsample()
        if kernel is not None and kernel.size > 1:
            parts.append(
                f"temporal {label(self.temporal_psf, 'custom kernel')} ({kernel.size} frames, {self.temporal_boundary})"
            )
        if s > 1:
            parts.append(f"temporal subsample x{s}")
        psf = self.spatial_kernel()
        if psf is not None and psf.size > 1:
            parts.append(
                f"spatial {label(self.spatial_psf, 'custom PSF')} ({psf.shape[0]}x{psf.shape[1]} px, {self.spatial_boundary})"
            )
        d = self._downsample()
        if d > 1:
            parts.append(f"downsample x{d}")
        mask = self.mask_array()
        if mask is not None:
            parts.append(f"mask ({np.mean(mask != 0):.1%} observed)")
        return " -> ".join(parts) if parts else "identity (no blur, subsampling, downsampling or mask)"
