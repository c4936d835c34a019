"""What a user types for a PSF, parsed once: for the PSF builders, the command line and the widgets.

A temporal PSF is ``None``/``"none"``, ``"uniform:K"``, ``"gaussian:SIGMA"`` (frames), a 1-D array or a
kernel file; a spatial PSF ``None``/``"none"``, ``"gaussian:SIGMA"`` (pixels),
``"airy:NA,WAVELENGTH_NM,PIXEL_NM"``, a 2-D array or an image file. :func:`parse_temporal_spec` and
:func:`parse_spatial_spec` turn the named strings into ``(kind, parameters)``; the builders in
:mod:`napari_svi.psf` make kernels from them, the widgets fill their fields from them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

TEMPORAL_ALLOWED = (
    "None or 'none', 'uniform:K' (box of K frames, integer K >= 1), 'gaussian:SIGMA' (SIGMA in frames, > 0), "
    "a 1-D array of weights, or a path to a .txt, .csv, .npy or .tif file"
)
SPATIAL_ALLOWED = (
    "None or 'none', 'gaussian:SIGMA' (SIGMA in pixels, > 0), 'airy:NA,WAVELENGTH_NM,PIXEL_NM' "
    "(e.g. 'airy:1.4,520,65'), a 2-D array, or a path to a .tif or .npy file"
)
_TEXT_SUFFIXES = (".txt", ".csv")
_TIFF_SUFFIXES = (".tif", ".tiff")
TEMPORAL_SUFFIXES = _TEXT_SUFFIXES + (".npy",) + _TIFF_SUFFIXES
SPATIAL_SUFFIXES = (".npy",) + _TIFF_SUFFIXES


def _named_spec(spec, kinds: tuple[str, ...]) -> tuple[str, str] | None:
    """``(kind, args)`` when ``spec`` is ``"none"`` or a string ``"kind:args"`` with a known kind, else None."""
    if not isinstance(spec, str):
        return None
    kind, sep, args = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "none" and not sep:
        return "none", ""
    if sep and kind in kinds:
        return kind, args.strip()
    return None


def parse_temporal_spec(spec) -> tuple[str, tuple] | None:
    """A named temporal PSF string as ``(kind, parameters)``; ``None`` when ``spec`` is not one (a path, an array).

    ``"none"`` -> ``("none", ())``, ``"uniform:K"`` -> ``("uniform", (K,))`` (int >= 1),
    ``"gaussian:SIGMA"`` -> ``("gaussian", (SIGMA,))`` (frames, > 0). Shared by
    :func:`temporal_kernel` and the napari widgets (which show the parameters in their fields).
    """
    name = "temporal_psf"
    named = _named_spec(spec, ("uniform", "gaussian"))
    if named is None or named[0] == "none":
        return None if named is None else ("none", ())
    kind, args = named
    if kind == "uniform":
        try:
            frames = int(args)
        except ValueError:
            frames = None
        if frames is None or frames < 1:
            raise ValueError(f"{name}: 'uniform:K' needs an integer number of frames K >= 1, got {spec!r}")
        return "uniform", (frames,)
    sigma = _parse_float(args, name, "the Gaussian SIGMA (frames)")
    if sigma <= 0:
        raise ValueError(f"{name}: 'gaussian:SIGMA' needs SIGMA > 0 frames, got {spec!r}")
    return "gaussian", (sigma,)


def parse_spatial_spec(spec) -> tuple[str, tuple] | None:
    """A named spatial PSF string as ``(kind, parameters)``; ``None`` when ``spec`` is not one (a path, an array).

    ``"none"`` -> ``("none", ())``, ``"gaussian:SIGMA"`` -> ``("gaussian", (SIGMA,))`` (pixels, > 0),
    ``"airy:NA,WAVELENGTH_NM,PIXEL_NM"`` -> ``("airy", (NA, WAVELENGTH_NM, PIXEL_NM))``. Shared by
    :func:`spatial_psf` and the napari widgets.
    """
    name = "spatial_psf"
    named = _named_spec(spec, ("gaussian", "airy"))
    if named is None or named[0] == "none":
        return None if named is None else ("none", ())
    kind, args = named
    if kind == "gaussian":
        sigma = _parse_float(args, name, "the Gaussian SIGMA (pixels)")
        if sigma <= 0:
            raise ValueError(f"{name}: 'gaussian:SIGMA' needs SIGMA > 0 pixels, got {spec!r}")
        return "gaussian", (sigma,)
    parts = [p for p in args.replace(" ", ",").split(",") if p]
    if len(parts) != 3:
        raise ValueError(
            f"{name}: 'airy:NA,WAVELENGTH_NM,PIXEL_NM' needs three numbers (e.g. 'airy:1.4,520,65'), got {spec!r}"
        )
    return "airy", tuple(
        _parse_float(p, name, label) for p, label in zip(parts, ("NA", "WAVELENGTH_NM", "PIXEL_NM"), strict=True)
    )


def _parse_float(text: str, name: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: {what} must be finite, got {text!r}")
    return value


def looks_like_path(spec, suffixes: tuple[str, ...]) -> bool:
    """A ``Path``, or a string naming an existing file or ending in one of ``suffixes``."""
    if isinstance(spec, Path):
        return True
    return isinstance(spec, str) and (Path(spec).suffix.lower() in suffixes or Path(spec).is_file())


def read_array(path, name: str, allowed: str) -> np.ndarray:
    """Load a kernel file (.txt/.csv text, .npy, .tif) as float64."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ValueError(f"{name}: file not found: {str(path)!r}")
    if suffix in _TEXT_SUFFIXES:
        text = path.read_text().replace(",", " ").replace(";", " ")
        rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        try:
            values = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
        except ValueError:
            raise ValueError(f"{name}: {str(path)!r} must hold numbers only (separated by spaces or commas)") from None
        return values
    if suffix == ".npy":
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    if suffix in _TIFF_SUFFIXES:
        import tifffile

        return np.asarray(tifffile.imread(path), dtype=np.float64)
    raise ValueError(f"{name}: unsupported file type {suffix!r} for {str(path)!r}; allowed: {allowed}")


def known_temporal(spec) -> str | None:
    """A user's temporal PSF as a candidate string, when it is one the search knows."""
    if spec is None or is_auto(spec):
        return None
    named = parse_temporal_spec(spec)
    if named is None:
        return None
    kind, params = named
    return "none" if kind == "none" else f"{kind}:{params[0]}"


def known_spatial(spec) -> float | None:
    """A user's spatial PSF as a Gaussian sigma (0 for none), when it is one."""
    if spec is None or is_auto(spec):
        return None
    named = parse_spatial_spec(spec)
    if named is None or named[0] == "airy":
        return None
    return 0.0 if named[0] == "none" else float(named[1][0])


def is_auto(spec) -> bool:
    """``spec`` asks for the PSF to be estimated (``"auto"`` or ``"auto:STRUCTURE"``, any case)."""
    return isinstance(spec, str) and (spec.strip().lower() == "auto" or spec.strip().lower().startswith("auto:"))


def auto_structure(spec) -> str | None:
    """The structure of ``"auto:STRUCTURE"`` (a name or a TIFF path), else None."""
    if not is_auto(spec) or ":" not in spec:
        return None
    return spec.strip()[len("auto:"):].strip() or None
