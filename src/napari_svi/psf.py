"""PSF builders (NumPy, float64): temporal kernels along the frame axis and 2-D spatial PSFs.

Every builder returns a kernel normalised to sum 1, or ``None`` for "no blur". The user-facing
specifications (``temporal_psf`` and ``spatial_psf`` of :class:`napari_svi.operators.OperatorSpec`)
are strings, arrays or file paths, parsed by :mod:`napari_svi.psf_spec`:

- temporal: ``None``/``"none"``, ``"uniform:K"`` (box of K frames), ``"gaussian:SIGMA"`` (frames), a
  1-D array, or a ``.txt``/``.csv``/``.npy``/``.tif`` file;
- spatial: ``None``/``"none"``, ``"gaussian:SIGMA"`` (pixels), ``"airy:NA,WAVELENGTH_NM,PIXEL_NM"``, a
  2-D array, or a ``.tif``/``.npy`` file (a measured PSF).

Centre convention (shared with the operators): index ``n // 2`` along each axis of length ``n`` is
the centre, i.e. the middle sample for odd sizes and the later of the two middle samples for even
sizes (the convention of ``scipy.ndimage.convolve``): a point source at ``q`` is spread over
``q - n // 2, ..., q - n // 2 + n - 1``.
"""

from __future__ import annotations

import math

import numpy as np

from .psf_spec import (
    SPATIAL_ALLOWED,
    SPATIAL_SUFFIXES,
    TEMPORAL_ALLOWED,
    TEMPORAL_SUFFIXES,
    looks_like_path,
    parse_spatial_spec,
    parse_temporal_spec,
    read_array,
)
from .validation import check_positive_int

#: Truncation of Gaussian kernels, in standard deviations.
GAUSSIAN_TRUNCATE = 4.0
#: Largest generated kernel (samples per axis): guards against typos such as "gaussian:1e6".
MAX_GENERATED_SIZE = 10_001
# first zeros of J1 (dark rings of the Airy pattern, in v = 2 pi NA r / lambda)
_AIRY_ZEROS = (3.8317, 7.0156, 10.1735, 13.3237, 16.4706)


def _normalised(kernel: np.ndarray, name: str, what: str) -> np.ndarray:
    """Check values (finite, >= 0, not all zero) and scale to sum 1."""
    if kernel.size == 0:
        raise ValueError(f"{name}: {what} is empty")
    if not np.all(np.isfinite(kernel)):
        raise ValueError(f"{name}: {what} contains NaN or infinite values")
    if np.any(kernel < 0):
        raise ValueError(
            f"{name}: {what} has negative values (min {kernel.min():.3g}); a PSF is a non-negative intensity"
        )
    total = kernel.sum()
    if not total > 0:
        raise ValueError(f"{name}: {what} is all zero")
    return kernel / total


# ---------------------------------------------------------------------------------------------------
# temporal kernels
# ---------------------------------------------------------------------------------------------------
def _check_generated_size(size: int, name: str, what: str) -> None:
    if size > MAX_GENERATED_SIZE:
        raise ValueError(
            f"{name}: {what} would be {size} samples long, more than {MAX_GENERATED_SIZE}; check the units"
        )


def _gaussian_1d(sigma: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def temporal_kernel(spec) -> np.ndarray | None:
    """Temporal PSF (weights per frame) from a user specification.

    Parameters
    ----------
    spec : None, str, path or array-like
        ``None`` or ``"none"``: no temporal blur. ``"uniform:K"``: box of ``K`` frames (integer
        ``K >= 1``; an even ``K`` is centred on index ``K // 2``, see the module notes). ``"gaussian:SIGMA"``: Gaussian of standard deviation ``SIGMA`` frames (``> 0``),
        sampled at frame centres and truncated at ``+-4 SIGMA`` (odd length ``2 ceil(4 SIGMA) + 1``).
        A 1-D array of non-negative weights. A path to a ``.txt``/``.csv`` (numbers separated by
        whitespace or commas, ``#`` comments), ``.npy`` or ``.tif`` file holding such weights
        (singleton axes are squeezed).

    Returns
    -------
    numpy.ndarray, float64, shape (L,), or None
        Weights summing to 1, index ``L // 2`` on the frame itself.

    Raises
    ------
    ValueError
        Unknown specification, non-1-D array, negative, all-zero, NaN or infinite weights; the
        message names ``temporal_psf``.

    Examples
    --------
    >>> temporal_kernel("uniform:4")
    array([0.25, 0.25, 0.25, 0.25])
    """
    name = "temporal_psf"
    if spec is None:
        return None
    named = parse_temporal_spec(spec)
    if named is not None:
        kind, params = named
        if kind == "none":
            return None
        if kind == "uniform":
            (frames,) = params
            _check_generated_size(frames, name, "the box")
            return np.full(frames, 1.0 / frames)
        (sigma,) = params
        _check_generated_size(2 * math.ceil(GAUSSIAN_TRUNCATE * sigma) + 1, name, "the Gaussian")
        return _gaussian_1d(sigma, math.ceil(GAUSSIAN_TRUNCATE * sigma))
    if looks_like_path(spec, TEMPORAL_SUFFIXES):
        kernel = np.atleast_1d(np.squeeze(read_array(spec, name, TEMPORAL_ALLOWED)))
        what = f"the kernel in {str(spec)!r}"
    elif isinstance(spec, str):
        raise ValueError(f"{name}: unknown specification {spec!r}; allowed: {TEMPORAL_ALLOWED}")
    else:
        try:
            kernel = np.array(spec, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name}: cannot read {type(spec).__name__} {spec!r}; allowed: {TEMPORAL_ALLOWED}"
            ) from None
        what = "the kernel"
    if kernel.ndim != 1:
        raise ValueError(f"{name}: {what} must be 1-D (weights per frame), got shape {kernel.shape}")
    return _normalised(kernel, name, what)


def temporal_kernel_from_exposure(exposure_ms: float, frame_interval_ms: float) -> np.ndarray:
    """Box kernel of an exposure spanning ``exposure_ms / frame_interval_ms`` frames of the true stack.

    Parameters
    ----------
    exposure_ms : float
        Camera exposure (integration) time, ms, ``> 0``.
    frame_interval_ms : float
        Time between consecutive frames of the *restored* stack, ms, ``> 0``. With temporal
        subsampling ``s`` the measured frames are ``s`` frame intervals apart, so an exposure longer
        than one frame interval is possible.

    Returns
    -------
    numpy.ndarray, float64, shape (L,)
        Odd-length, symmetric weights summing to 1: frame ``j`` (covering ``[j - 1/2, j + 1/2]``
        frame intervals around the exposure centre) is weighted by its overlap with
        ``[-w/2, w/2]``, ``w = exposure_ms / frame_interval_ms``. ``w <= 1`` gives ``[1.0]`` (no
        temporal blur at this frame rate); ``w = 3`` gives three equal weights; ``w = 2`` gives
        ``[0.25, 0.5, 0.25]``.

    Examples
    --------
    >>> temporal_kernel_from_exposure(150, 100)
    array([0.16666667, 0.66666667, 0.16666667])
    """
    for value, label in ((exposure_ms, "exposure_ms"), (frame_interval_ms, "frame_interval_ms")):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{label} must be a positive number (milliseconds), got {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{label} must be a positive number (milliseconds), got {value!r}")
    width = float(exposure_ms) / float(frame_interval_ms)
    half = width / 2
    # frames j = -n..n with n the last frame whose cell [j - 1/2, j + 1/2] reaches into (-half, half)
    n = max(0, math.ceil(half - 0.5 - 1e-9))
    j = np.arange(-n, n + 1, dtype=np.float64)
    weights = np.clip(np.minimum(j + 0.5, half) - np.maximum(j - 0.5, -half), 0.0, None)
    return weights / weights.sum()


# ---------------------------------------------------------------------------------------------------
# spatial PSFs
# ---------------------------------------------------------------------------------------------------
def _odd_size(size, name: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer (pixels), got {size!r}")
    return int(size)


def gaussian_psf(sigma_px: float, size: int | None = None) -> np.ndarray:
    """Isotropic 2-D Gaussian PSF sampled at pixel centres.

    Parameters
    ----------
    sigma_px : float
        Standard deviation, pixels, ``> 0``.
    size : int, optional
        Odd side length, pixels. Default ``2 ceil(4 sigma_px) + 1`` (truncated at ``+-4 sigma``).

    Returns
    -------
    numpy.ndarray, float64, shape (size, size)
        ``exp(-r^2 / (2 sigma^2))`` normalised to sum 1, centred on the middle pixel (the same
        kernel as ``scipy.ndimage.gaussian_filter`` up to truncation).
    """
    if isinstance(sigma_px, bool) or not isinstance(sigma_px, (int, float, np.integer, np.floating)):
        raise ValueError(f"sigma_px must be a positive number (pixels), got {sigma_px!r}")
    if not (math.isfinite(sigma_px) and sigma_px > 0):
        raise ValueError(f"sigma_px must be a positive number (pixels), got {sigma_px!r}")
    size = 2 * math.ceil(GAUSSIAN_TRUNCATE * sigma_px) + 1 if size is None else _odd_size(size)
    _check_generated_size(size, "sigma_px", "the Gaussian PSF")
    g = _gaussian_1d(float(sigma_px), size // 2)
    return np.outer(g, g)


def airy_psf(
    na: float, wavelength_nm: float, pixel_size_nm: float, size: int | None = None, oversample: int = 5
) -> np.ndarray:
    """In-focus widefield PSF (Airy pattern, Born & Wolf) integrated over camera pixels.

    Parameters
    ----------
    na : float
        Numerical aperture of the objective, ``0 < na <= 1.7``.
    wavelength_nm : float
        Emission wavelength, nm, in ``[200, 2000]``.
    pixel_size_nm : float
        Pixel size in the sample plane (camera pixel / magnification), nm, ``> 0``.
    size : int, optional
        Odd side length, pixels. Default: covers the first three dark rings (radius
        ``10.17 lambda / (2 pi NA) = 1.62 lambda / NA``, about 94 % of the light), at least 3.
    oversample : int
        Sub-samples per pixel and axis used to integrate the intensity over each pixel, ``>= 1``.

    Returns
    -------
    numpy.ndarray, float64, shape (size, size)
        Normalised to sum 1, centred on the middle pixel.

    Notes
    -----
    Paraxial scalar model: ``I(r) = [2 J1(v) / v]^2`` with ``v = 2 pi NA r / lambda``; the first dark
    ring is at ``r = 0.61 lambda / NA`` and the FWHM is ``0.51 lambda / NA``.

    Examples
    --------
    >>> psf = airy_psf(1.4, 520, 65)
    >>> psf.shape, round(float(psf.sum()), 12)
    ((21, 21), 1.0)
    """
    from scipy.special import j1

    checks = (
        (na, "na", "numerical aperture", lambda v: 0 < v <= 1.7, "0 < na <= 1.7"),
        (
            wavelength_nm,
            "wavelength_nm",
            "emission wavelength (nm)",
            lambda v: 200 <= v <= 2000,
            "200 <= wavelength_nm <= 2000",
        ),
        (pixel_size_nm, "pixel_size_nm", "pixel size in the sample plane (nm)", lambda v: v > 0, "pixel_size_nm > 0"),
    )
    for value, label, what, ok, rule in checks:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{label} ({what}) must be a number, got {value!r}")
        if not (math.isfinite(value) and ok(value)):
            raise ValueError(f"{label} ({what}) must satisfy {rule}, got {value!r}")
    oversample = check_positive_int(oversample, "oversample")
    scale = 2 * math.pi * na / wavelength_nm * pixel_size_nm  # v per pixel
    if size is None:
        radius = max(1, math.ceil(_AIRY_ZEROS[2] / scale))
        size = 2 * radius + 1
    size = _odd_size(size)
    _check_generated_size(size * oversample, "pixel_size_nm", "the Airy PSF (size x oversample)")
    radius = size // 2
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5  # sub-pixel centres, pixels
    coords = (np.arange(-radius, radius + 1)[:, None] + sub[None, :]).ravel()
    v = scale * np.hypot(coords[:, None], coords[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        amplitude = np.where(v > 0, 2 * j1(v) / v, 1.0)
    intensity = (amplitude**2).reshape(size, oversample, size, oversample).sum(axis=(1, 3))
    return intensity / intensity.sum()


def load_psf(path) -> np.ndarray:
    """A measured PSF from a TIFF (or ``.npy``) file, normalised to sum 1.

    Parameters
    ----------
    path : str or pathlib.Path
        2-D image ``(Y, X)`` of any odd or even size, or 3-D with a single plane ``(1, Y, X)``. A
        z-stack with more than one plane is refused (the model is 2-D per frame: pass the in-focus
        plane). The background is not subtracted and the PSF is not re-centred: pixel
        ``(Y // 2, X // 2)`` is taken as the centre.

    Returns
    -------
    numpy.ndarray, float64, shape (Y, X)

    Raises
    ------
    ValueError
        Missing file, wrong dimensionality, negative, all-zero, NaN or infinite values; the message
        names ``spatial_psf``.
    """
    name = "spatial_psf"
    psf = read_array(path, name, SPATIAL_ALLOWED)
    while psf.ndim > 2 and psf.shape[0] == 1:
        psf = psf[0]
    if psf.ndim != 2:
        planes = f" with {psf.shape[0]} planes" if psf.ndim == 3 else ""
        raise ValueError(
            f"{name}: the PSF in {str(path)!r} must be a 2-D image (Y, X), got shape {psf.shape}{planes}; "
            "for a z-stack save the in-focus plane on its own"
        )
    return _normalised(psf, name, f"the PSF in {str(path)!r}")


def spatial_psf(spec) -> np.ndarray | None:
    """Spatial PSF from a user specification.

    Parameters
    ----------
    spec : None, str, path or array-like
        ``None`` or ``"none"``: no spatial blur. ``"gaussian:SIGMA"``: :func:`gaussian_psf` with
        ``SIGMA`` pixels. ``"airy:NA,WAVELENGTH_NM,PIXEL_NM"``: :func:`airy_psf`. A 2-D array of
        non-negative values. A path to a ``.tif``/``.npy`` file (:func:`load_psf`).

    Returns
    -------
    numpy.ndarray, float64, shape (kh, kw), or None
        Normalised to sum 1; pixel ``(kh // 2, kw // 2)`` is the centre.

    Raises
    ------
    ValueError
        Unknown specification, bad parameters, non-2-D array, negative, all-zero, NaN or infinite
        values; the message names ``spatial_psf``.
    """
    name = "spatial_psf"
    if spec is None:
        return None
    named = parse_spatial_spec(spec)
    if named is not None:
        kind, params = named
        if kind == "none":
            return None
        if kind == "gaussian":
            return gaussian_psf(*params)
        try:
            return airy_psf(*params)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    if looks_like_path(spec, SPATIAL_SUFFIXES):
        return load_psf(spec)
    if isinstance(spec, str):
        raise ValueError(f"{name}: unknown specification {spec!r}; allowed: {SPATIAL_ALLOWED}")
    try:
        psf = np.array(spec, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: cannot read {type(spec).__name__}; allowed: {SPATIAL_ALLOWED}") from None
    if psf.ndim != 2:
        raise ValueError(f"{name}: the PSF must be a 2-D array (Y, X), got shape {psf.shape}")
    return _normalised(psf, name, "the PSF")
