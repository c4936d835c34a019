"""Writer contribution: an image layer as a TIFF that keeps how it was made.

napari's built-in TIFF writer drops ``layer.metadata``; this one writes the napari-svi record
(every restoration parameter, the prior, the version) with :func:`napari_svi.io.write_stack`: as
ImageJ ``Info`` (Image > Show Info in Fiji) or in the tifffile description, plus the pixel size and
frame interval. ``napari_svi.io.read_stack`` and ``napari-svi`` on the command line read it back.
"""

from __future__ import annotations

from ..io import write_stack
from ._common import jsonable, layer_frame_interval_s, layer_pixel_size_nm

_AXIS_LETTERS = {"t": "T", "time": "T", "z": "Z", "c": "C", "channel": "C", "y": "Y", "x": "X"}


def _axes(meta: dict, ndim: int) -> str:
    """Axis letters for the TIFF: Y and X last, T at the recorded time axis (else the first)."""
    if ndim == 2:
        return "YX"
    record = (meta.get("metadata") or {}).get("napari_svi") or {}
    time_axis = record.get("time_axis", 0)
    labels = [str(a).lower() for a in (meta.get("axis_labels") or [])]
    letters = []
    for i in range(ndim - 2):
        guess = _AXIS_LETTERS.get(labels[i], "Q") if len(labels) == ndim else "Q"
        letters.append("T" if i == time_axis else ("Q" if guess in ("T", "Y", "X") else guess))
    axes = "".join(letters) + "YX"
    return axes if len(set(axes)) == len(axes) else "".join("T" if a == "T" else "Q" for a in letters) + "YX"


def write_image(path: str, data, meta: dict) -> list[str]:
    """Write one image layer to ``path`` (.tif/.tiff) with its napari-svi parameters."""
    import numpy as np

    if meta.get("multiscale"):
        data = data[0]
    if meta.get("rgb"):
        raise ValueError("napari-svi's TIFF writer saves single-channel stacks, not RGB layers")
    arr = np.asarray(data)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    axes = _axes(meta, arr.ndim)
    px_nm = layer_pixel_size_nm(meta.get("scale"), meta.get("units"))[0]
    t_ax = axes.find("T")
    interval = layer_frame_interval_s(meta.get("scale"), meta.get("units"), t_ax) if t_ax >= 0 else None
    record = dict((meta.get("metadata") or {}).get("napari_svi") or {})
    record["layer"] = jsonable(
        {
            "name": meta.get("name"),
            "scale": meta.get("scale"),
            "translate": meta.get("translate"),
            "units": [str(u) for u in (meta.get("units") or [])],
            "contrast_limits": meta.get("contrast_limits"),
        }
    )
    out = write_stack(
        path,
        arr,
        axes=axes,
        pixel_size_um=None if px_nm is None else (px_nm / 1000.0, px_nm / 1000.0),
        frame_interval_s=interval,
        metadata=jsonable(record),
    )
    return [str(out)]
