"""TIFF in and out: axes and pixel size kept, parameters recorded, files written atomically.

ImageJ hyperstacks (axes a subsequence of TZCYXS) are written as ImageJ TIFFs with the
parameters as JSON in the ``Info`` property (shown by Image > Show Info in Fiji); other axis
orders as tifffile "shaped" TIFFs with the JSON in the description. Every file is written to a
temporary name in the target folder and renamed, so a crash never leaves a half-written output
and an existing file is replaced only by a complete one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

_IMAGEJ_ORDER = "TZCYXS"
_MICRON = ("micron", "um", "µm", "\\u00B5m", "microns", "μm")


@dataclass
class StackInfo:
    """What :func:`read_stack` learned about a file besides the pixels."""

    axes: str
    pixel_size_um: tuple[float, float] | None = None
    frame_interval_s: float | None = None
    metadata: dict = field(default_factory=dict)  # a napari-svi record, if the file has one

    @property
    def time_axis(self) -> int | None:
        for letter in "TQI":
            if letter in self.axes[:-2]:
                return self.axes.index(letter)
        return 0 if len(self.axes) >= 3 else None


def read_stack(path: str | os.PathLike) -> tuple[np.ndarray, StackInfo]:
    """Read the first image series of a TIFF with its axes, pixel size (µm) and napari-svi record."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError("it holds no image")
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes
            info = StackInfo(axes=axes)
            page = tif.pages[0]
            ij = tif.imagej_metadata or {}
            if tif.is_ome and tif.ome_metadata:
                px = _ome_pixel_size(tif.ome_metadata)
                info.pixel_size_um = px
            if info.pixel_size_um is None:
                info.pixel_size_um = _resolution_pixel_size(page, ij)
            if ij.get("finterval"):
                info.frame_interval_s = float(ij["finterval"])
            record = ij.get("Info") or (tif.shaped_metadata[0].get("napari_svi") if tif.shaped_metadata else None)
            if record:
                try:
                    parsed = json.loads(record)
                    if isinstance(parsed, dict) and "napari_svi" in parsed:
                        info.metadata = parsed["napari_svi"]
                        data, info.axes = _recorded_shape(data, info.axes, parsed)
                except (json.JSONDecodeError, TypeError):
                    pass
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError, struct.error) as err:
        raise ValueError(f"cannot read {path} as a TIFF (damaged or not a TIFF file): {err}") from None
    if data.size == 0:
        raise ValueError(f"cannot read {path} as a TIFF: it holds no pixels (an empty or damaged file)")
    return data, info


@contextlib.contextmanager
def quiet_tifffile():
    """tifffile logs every damaged page it skips; the caller reports one clear error instead."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _recorded_shape(data: np.ndarray, axes: str, record: dict) -> tuple[np.ndarray, str]:
    """The shape and axes ``write_stack`` recorded: ImageJ files drop axes of size 1 (a single frame)."""
    shape, rec_axes = record.get("shape"), record.get("axes")
    if (isinstance(shape, list) and isinstance(rec_axes, str) and len(rec_axes) == len(shape)
            and all(isinstance(n, int) for n in shape) and int(np.prod(shape)) == data.size):
        return data.reshape(shape), rec_axes
    return data, axes


def samples_to_channels(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Colour samples (``S``, the RGB of an RGB TIFF) as a channel axis ``C`` before Y and X.

    Every colour channel then is its own stack for the restore (and the result an ordinary
    multi-channel stack, not an RGB image). Raises ``ValueError`` when the file also has ``C``.
    """
    if "S" not in axes or len(axes) != data.ndim:
        return data, axes
    if "C" in axes:
        raise ValueError(f"the file has both channels (C) and colour samples (S), axes {axes!r}; "
                         "save each channel as its own file")
    i = axes.index("S")
    data = np.moveaxis(data, i, -3)
    rest = axes[:i] + axes[i + 1 :]
    return data, rest[:-2] + "C" + rest[-2:]


def _resolution_pixel_size(page, ij: dict) -> tuple[float, float] | None:
    try:
        xr = page.tags["XResolution"].value
        yr = page.tags["YResolution"].value
    except KeyError:
        return None
    unit = str(ij.get("unit", "")).lower()
    if not unit:
        res_unit = page.tags.get("ResolutionUnit")
        unit = {3: "cm"}.get(int(res_unit.value) if res_unit else 0, "")
    if xr[0] == 0 or yr[0] == 0 or (xr[0] == xr[1] == 1 and not unit):
        return None
    px, py = xr[1] / xr[0], yr[1] / yr[0]
    factor = 1.0 if unit in _MICRON else {"nm": 1e-3, "mm": 1e3, "cm": 1e4}.get(unit)
    if factor is None:
        return None
    return (py * factor, px * factor)


def _ome_pixel_size(xml: str) -> tuple[float, float] | None:
    try:
        pixels = tifffile.xml2dict(xml)["OME"]["Image"]
        pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
        return (float(pixels["PhysicalSizeY"]), float(pixels["PhysicalSizeX"]))
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def write_stack(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    axes: str,
    pixel_size_um: tuple[float, float] | None = None,
    frame_interval_s: float | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically, with its axes, pixel size and a napari-svi record."""
    path = Path(path)
    data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if len(axes) != data.ndim:
        raise ValueError(f"axes {axes!r} do not match data with {data.ndim} dimensions")
    if not path.parent.exists():
        raise ValueError(f"output folder does not exist: {path.parent}")
    # the shape and axes too: ImageJ readers drop axes of size 1, read_stack puts them back
    record = json.dumps({"napari_svi": metadata or {}, "shape": list(data.shape), "axes": axes}, default=json_default)
    kwargs: dict = {}
    if pixel_size_um is not None:
        kwargs["resolution"] = (1.0 / pixel_size_um[1], 1.0 / pixel_size_um[0])
    imagej_ok = _is_imagej_order(axes) and data.dtype in (np.uint8, np.uint16, np.float32)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if imagej_ok:
            md = {"axes": axes, "Info": record}
            if pixel_size_um is not None:
                md["unit"] = "um"
            if frame_interval_s:
                md["finterval"] = float(frame_interval_s)
            tifffile.imwrite(tmp, data, imagej=True, metadata=md, **kwargs)
        else:
            tifffile.imwrite(tmp, data, metadata={"axes": axes, "napari_svi": record}, photometric="minisblack", **kwargs)
        os.chmod(tmp, 0o666 & ~process_umask())  # mkstemp makes the file private (0600); a result follows the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def process_umask() -> int:
    """The process umask; read from /proc where possible, since os.umask() sets it (racing other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_imagej_order(axes: str) -> bool:
    pos = [_IMAGEJ_ORDER.find(a) for a in axes]
    return all(p >= 0 for p in pos) and pos == sorted(pos) and len(set(axes)) == len(axes)


def json_default(obj):
    """``json.dumps`` default: NumPy scalars and arrays as numbers and lists, anything else as text."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def read_input(path, time_axis: int | None = None):
    """A command's input stack: a TIFF (:func:`read_stack`) or a zarr store (lazy, read window by window).

    Returns ``(data, info, time_axis, axes)``: the array, its :class:`StackInfo`, the time axis
    (``time_axis`` if given, else from the file's axes) and axis letters for writing the result
    (unknown letters become ``Z``, the time axis ``T``).
    """
    from .lazy import is_zarr_path, open_zarr, zarr_axes

    if is_zarr_path(path):
        data, attrs = open_zarr(path)  # lazy: read window by window
        record = attrs.get("napari_svi") if isinstance(attrs.get("napari_svi"), dict) else {}
        px = record.get("pixel_size_um")
        info = StackInfo(axes=zarr_axes(attrs, data.ndim) or "Q" * (data.ndim - 2) + "YX",
                         pixel_size_um=tuple(px) if px else None, frame_interval_s=record.get("frame_interval_s"))
    else:
        data, info = read_stack(path)
        data, info.axes = samples_to_channels(data, info.axes)  # RGB: each colour its own stack
    given = time_axis
    time_axis = time_axis if time_axis is not None else info.time_axis
    if given is None and time_axis is not None and info.axes[time_axis] in "CS":
        raise ValueError(f"{path} has axes {info.axes} {tuple(data.shape)}: no time axis, only colour channels "
                         "(C); a time-lapse needs frames over time (give --time-axis if one axis is time)")
    if time_axis is None:
        raise ValueError(f"{path} has shape {data.shape}: a time-lapse needs a time axis and two image axes")
    if time_axis < 0:
        time_axis += data.ndim
    axes = info.axes if len(info.axes) == data.ndim else "Q" * (data.ndim - 2) + "YX"
    axes = axes[:time_axis] + "T" + axes[time_axis + 1 :]
    axes = "".join(a if a in "TZCYXS" else "Z" for a in axes)  # unknown letters (Q, I) become Z
    if len(set(axes)) != len(axes):
        axes = "Q" * (data.ndim - 2) + "YX"
        axes = axes[:time_axis] + "T" + axes[time_axis + 1 :]
    return data, info, time_axis, axes
