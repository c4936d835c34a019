"""Lazy input: dask arrays and zarr stores, read one window of frames at a time.

NumPy arrays are used as they are; dask arrays stay lazy; zarr arrays and other array-likes
(h5py datasets, tifffile memmaps, anything with ``shape``, ``dtype`` and slicing) are wrapped as
dask arrays, so a restore reads one window of frames at a time and never the whole stack. The
output side (window-by-window writing, resumable zarr stores) is :mod:`napari_svi.sinks`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RECORD_KEY = "napari_svi"


def is_zarr_path(path) -> bool:
    """A path that names a zarr store: ends in ``.zarr`` or is a folder holding zarr metadata."""
    p = Path(path)
    return p.suffix.lower() == ".zarr" or (p.is_dir() and any((p / n).is_file() for n in (".zarray", ".zgroup", "zarr.json")))


def as_lazy(data):
    """``data`` ready for window-by-window reading: NumPy and dask unchanged, other array-likes as dask.

    Zarr arrays, h5py datasets and similar objects become dask arrays chunked like the source, so
    that only the frames of the current window are ever read.
    """
    if isinstance(data, np.ndarray) or hasattr(data, "compute") or data is None:
        return data
    if hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "__getitem__") and not isinstance(
        data, (list, tuple)
    ):
        import dask.array as da

        chunks = getattr(data, "chunks", None)
        if not (isinstance(chunks, tuple) and len(chunks) == len(data.shape)):
            chunks = (1,) * (len(data.shape) - 2) + tuple(data.shape[-2:])
        return da.from_array(data, chunks=chunks, asarray=True, fancy=False)
    return data


def open_zarr(path, array: str | None = None):
    """Open a zarr array (or one array of a zarr group) read-only as a dask array, with its attributes.

    Parameters
    ----------
    path : str or path
        A zarr array, or a group holding it.
    array : str, optional
        Path of the array inside a group. Default: ``restored`` (a napari-svi output), ``0`` (the
        full-resolution level of an OME-Zarr image) or the group's only array.

    Returns
    -------
    data : dask.array.Array
    attrs : dict
        The array's attributes, merged over its group's (OME-Zarr ``multiscales`` included).
    """
    import dask.array as da
    import zarr

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input not found: {p}")
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as err:  # zarr raises several types for "not a store"
        raise ValueError(f"cannot open {p} as a zarr array or group: {err}") from err
    attrs: dict = {}
    if hasattr(node, "array_keys"):  # a group
        attrs.update(dict(node.attrs))
        names = sorted(node.array_keys())
        if array is None:
            if "restored" in names:
                array = "restored"
            elif "0" in names:
                array = "0"
            elif len(names) == 1:
                array = names[0]
            else:
                raise ValueError(f"{p} is a zarr group with arrays {names}; say which one to use")
        if array not in names:
            raise ValueError(f"{p} has no array {array!r}; it has {names}")
        node = node[array]
    attrs.update(dict(node.attrs))
    return da.from_zarr(node), attrs


def zarr_axes(attrs: dict, ndim: int) -> str | None:
    """Axis letters (``"TYX"``, ``"TCYX"``, ...) from OME-Zarr ``multiscales`` or a napari-svi record."""
    record = attrs.get(RECORD_KEY)
    if isinstance(record, dict) and isinstance(record.get("axes"), str) and len(record["axes"]) == ndim:
        return record["axes"]
    try:
        axes = attrs["multiscales"][0]["axes"]
        letters = "".join((a["name"] if isinstance(a, dict) else str(a))[0].upper() for a in axes)
    except (KeyError, IndexError, TypeError):
        return None
    return letters if len(letters) == ndim else None


def read_frames(stack, frames: np.ndarray, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
    """Frames ``frames`` (read as one slice when contiguous) and one region of a ``(T, H, W)`` stack, as NumPy."""
    if len(frames) and np.array_equal(frames, np.arange(frames[0], frames[0] + len(frames))):
        block = stack[int(frames[0]) : int(frames[0]) + len(frames), rows, cols]
    else:
        block = stack[frames][:, rows, cols]
    block = np.asarray(block)
    if block.dtype.kind == "f" and not np.all(np.isfinite(block)):  # lazy input is checked as it is read
        raise ValueError(f"data contains NaN or infinite values in frames {int(frames[0])}..{int(frames[-1])}; "
                         "replace or mask them first")
    return block
