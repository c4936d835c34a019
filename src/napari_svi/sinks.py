"""Window-by-window output of a restore: in memory, into any array, or a resumable zarr store.

:class:`WindowWriter` blends each temporal window's estimate into the output as soon as it is
finished. Frames no later window touches are final and written at once; the few frames shared
with the next window wait in a small pending buffer. The output (a sink) is an in-memory array
(:class:`MemorySink`), any writable array-like such as a NumPy memmap or a zarr array
(:class:`ArraySink`), or a zarr group (:class:`ZarrSink`), which makes the restore resumable: the
group holds ``restored`` (plus ``std`` and ``samples`` for several posterior samples), the pending
buffer, and a progress record in its attributes. A restarted restore skips the finished windows
and gives a result identical to an uninterrupted run, because every window is deterministic (the
noise is a frame-aligned field of the seed, :class:`~napari_svi.pieces.NoiseField`) and every
write is idempotent (the pending buffer alternates between two slots, so a crash never leaves a
half-updated one).

Layout of a zarr output group (``OUT.zarr``)::

    restored    float32, the input's axis order with the true stack's T, Y, X sizes; NaN until written
    std         float32, same shape (only with samples > 1): per-pixel std over the samples
    samples     float32, (samples, *restored.shape) (only with samples > 1)
    attrs["napari_svi"]           every parameter of the restore (the record of RestoreResult.metadata)
    attrs["napari_svi_progress"]  {"next": [stack, window], "complete": bool, "pending": ...}
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .io import json_default
from .lazy import RECORD_KEY, is_zarr_path

PROGRESS_KEY = "napari_svi_progress"
_PENDING = "_pending"
#: What a restore's zarr group holds at its top level (zarr 2 and 3 metadata included).
STORE_ENTRIES = frozenset({"restored", "std", "samples", _PENDING, "zarr.json", ".zgroup", ".zattrs", ".zmetadata"})


def is_napari_svi_store(path) -> bool:
    """``path`` is a zarr group that napari-svi wrote: a restore or progress record, and nothing else in it.

    Only such a store may be replaced; a folder where anything else was put is kept.
    """
    p = Path(path)
    if not p.is_dir() or p.is_symlink():
        return False
    if not {e.name for e in p.iterdir()} <= STORE_ENTRIES:
        return False
    try:
        import zarr

        attrs = dict(zarr.open_group(str(p), mode="r").attrs)
    except Exception:  # not a zarr group, or unreadable: not ours
        return False
    return RECORD_KEY in attrs or PROGRESS_KEY in attrs


#: Largest spatial chunk edge (pixels) of zarr outputs; one chunk per frame along time.
MAX_CHUNK = 2048


class _Sink:
    """Where final frames and the pending buffer go. Subclasses choose the storage."""

    resumable = False

    def __init__(self, n_samples: int, frame_shape: tuple[int, int]):
        self.n_samples = n_samples
        self.frame_shape = frame_shape
        self._last: tuple[int, int, int, np.ndarray] | None = None  # (stack, window, start, values)

    def write_final(self, stack: int, start: int, values: np.ndarray) -> None:
        raise NotImplementedError

    def save_pending(self, stack: int, window: int, start: int, values: np.ndarray) -> None:
        """Keep the weighted frames of ``window`` that later windows still add to."""
        self._last = (stack, window, start, values.copy())

    def load_pending(self, stack: int, window: int) -> tuple[int, np.ndarray]:
        """``(start, values)`` saved by ``window`` of ``stack``."""
        if self._last is None or self._last[:2] != (stack, window):
            raise RuntimeError(f"the pending frames of window {window} of stack {stack} are missing")
        return self._last[2], self._last[3]

    def next_window(self) -> tuple[int, int]:
        """``(stack, window)`` to compute next: ``(0, 0)`` unless resuming."""
        return (0, 0)

    def commit(self, next_: tuple[int, int], complete: bool) -> None:
        """Record that every window before ``next_`` is blended in."""


class MemorySink(_Sink):
    """All samples in memory, ``(samples, stacks, T, H, W)`` float32 (what :func:`restore` returns)."""

    def __init__(self, n_samples: int, n_stacks: int, n_frames: int, frame_shape: tuple[int, int]):
        super().__init__(n_samples, frame_shape)
        self.values = np.zeros((n_samples, n_stacks, n_frames, *frame_shape), dtype=np.float32)

    def write_final(self, stack, start, values):
        self.values[:, stack, start : start + values.shape[1]] = values


class ArraySink(_Sink):
    """Write into array-likes in the input's axis order: ``restored`` (the mean), optionally ``std``, ``samples``."""

    def __init__(self, restored, *, time_axis: int, lead_shape: tuple[int, ...], n_samples: int,
                 frame_shape: tuple[int, int], std=None, samples=None):
        super().__init__(n_samples, frame_shape)
        self.restored, self.std, self.samples = restored, std, samples
        self.time_axis = time_axis
        self.lead_shape = lead_shape

    def _index(self, stack: int, start: int, stop: int) -> tuple:
        lead = iter(np.unravel_index(stack, self.lead_shape) if self.lead_shape else ())
        ndim = len(self.lead_shape) + 3
        index = []
        for axis in range(ndim):
            if axis == self.time_axis:
                index.append(slice(start, stop))
            elif axis >= ndim - 2:
                index.append(slice(None))
            else:
                index.append(int(next(lead)))
        return tuple(index)

    def write_final(self, stack, start, values):
        index = self._index(stack, start, start + values.shape[1])
        if self.samples is not None:
            for s in range(values.shape[0]):
                self.samples[(s, *index)] = values[s]
        self.restored[index] = values.mean(axis=0) if values.shape[0] > 1 else values[0]
        if self.std is not None:
            self.std[index] = values.std(axis=0)


class ZarrSink(ArraySink):
    """An :class:`ArraySink` on a zarr group, with the pending buffer and the progress kept in the group.

    The pending frames of window ``w`` go to slot ``w % 2`` of the ``_pending`` array, so that
    re-running window ``w`` after a crash still finds window ``w - 1``'s frames intact.
    """

    resumable = True

    def __init__(self, group, *, pending_frames: int, **kwargs):
        super().__init__(group["restored"], std=_get(group, "std"), samples=_get(group, "samples"), **kwargs)
        self.group = group
        h, w = self.frame_shape
        shape = (2, self.n_samples, max(pending_frames, 1), h, w)
        if _PENDING not in group or tuple(group[_PENDING].shape) != shape:
            _create(group, _PENDING, shape, (1, 1, 1, *_chunk2d(h, w)), fill_value=0.0)
        self.pending_array = group[_PENDING]
        self._saved: dict | None = None

    def _progress(self) -> dict:
        return dict(self.group.attrs.get(PROGRESS_KEY) or {})

    def save_pending(self, stack, window, start, values):
        super().save_pending(stack, window, start, values)
        n = values.shape[1]
        if n:
            self.pending_array[window % 2, :, :n] = values
        self._saved = {"stack": stack, "window": window, "start": start, "stop": start + n}

    def load_pending(self, stack, window):
        if self._last is not None and self._last[:2] == (stack, window):
            return self._last[2], self._last[3]
        record = self._progress().get("pending") or {}
        if (record.get("stack"), record.get("window")) != (stack, window):
            raise RuntimeError(
                f"{self.group.store}: the pending frames of window {window} of stack {stack} are missing; "
                "restart with overwrite"
            )
        start, stop = record["start"], record["stop"]
        return start, np.asarray(self.pending_array[window % 2, :, : stop - start])

    def next_window(self):
        nxt = self._progress().get("next", [0, 0])
        return int(nxt[0]), int(nxt[1])

    def commit(self, next_, complete):
        self.group.attrs[PROGRESS_KEY] = {"next": list(next_), "complete": bool(complete), "pending": self._saved}
        if complete and _PENDING in self.group:
            del self.group[_PENDING]


class WindowWriter:
    """Blend temporal windows into a sink as they finish, in order, crash-safe.

    Parameters
    ----------
    sink : _Sink
        :class:`MemorySink`, :class:`ArraySink` or :class:`ZarrSink`.
    windows : list of napari_svi.windows.Span
        The windows of every stack (kept ranges in increasing order).
    n_stacks : int
        Number of 2-D + t stacks (all share the windows).
    """

    def __init__(self, sink: _Sink, windows, n_stacks: int):
        self.sink = sink
        self.windows = windows
        self.n_stacks = n_stacks
        self._next = sink.next_window()

    def is_done(self, stack: int, window: int) -> bool:
        """Finished in an earlier (interrupted) run: skip it."""
        return (stack, window) < self._next

    @property
    def complete(self) -> bool:
        return self._next >= (self.n_stacks, 0)

    def add(self, stack: int, window: int, values: np.ndarray) -> None:
        """Blend the estimate of one window, ``values`` of shape ``(samples, kept frames, H, W)``.

        Windows must come in order, stack by stack; frames that no later window keeps are final
        and written to the sink at once.
        """
        if (stack, window) != self._next:
            raise ValueError(f"windows must be added in order: expected {self._next}, got {(stack, window)}")
        piece = self.windows[window]
        a, b = piece.keep
        if values.shape[1] != b - a:
            raise ValueError(f"window {window} keeps {b - a} frames, got {values.shape[1]}")
        acc = values.astype(np.float32) * piece.weights.astype(np.float32)[None, :, None, None]
        if window > 0:
            start, pending = self.sink.load_pending(stack, window - 1)
            acc[:, start - a : start - a + pending.shape[1]] += pending
        final_stop = self.windows[window + 1].keep[0] if window + 1 < len(self.windows) else b
        if final_stop > a:
            self.sink.write_final(stack, a, acc[:, : final_stop - a])
        self.sink.save_pending(stack, window, final_stop, acc[:, final_stop - a :])
        last = window + 1 == len(self.windows)
        self._next = (stack + 1, 0) if last else (stack, window + 1)
        self.sink.commit(self._next, complete=self.complete)


def create_zarr_output(
    path, shape: tuple[int, ...], *, time_axis: int, samples: int, record: dict, pending_frames: int,
    overwrite: bool = False,
):
    """Open (resume) or create the zarr output group of a restore.

    An existing group is resumed when its parameter record equals ``record`` (apart from timing
    and version fields); a finished one is reported as such. Otherwise ``overwrite`` replaces it,
    and without it a ``ValueError`` says what differs.

    Returns
    -------
    group : zarr.Group
    complete : bool
        The group already holds a finished restore with these parameters.
    """
    import zarr

    p = Path(path)
    if p.exists():
        if overwrite:
            if not is_napari_svi_store(p):  # a user's folder or file is never deleted
                raise ValueError(f"{p} exists and is not a zarr store written by napari-svi; it is never replaced, "
                                 "even with overwrite: choose another output")
            _remove(p)
        else:
            try:
                group = zarr.open_group(str(p), mode="r+")
                old = dict(group.attrs.get(RECORD_KEY) or {})
            except Exception as err:  # not a zarr group at all
                raise ValueError(f"{p} exists and is not a napari-svi output ({err}); pass overwrite to replace it") from err
            differs = parameter_differences(old, record)
            if differs:
                raise ValueError(
                    f"{p} holds a restore with other parameters ({', '.join(differs)}); pass overwrite to replace it"
                )
            progress = dict(group.attrs.get(PROGRESS_KEY) or {})
            return group, bool(progress.get("complete"))
    group = zarr.open_group(str(p), mode="w")
    chunks = tuple(1 for _ in shape[:-2]) + _chunk2d(*shape[-2:])
    _create(group, "restored", shape, chunks, fill_value=np.nan)
    if samples > 1:
        _create(group, "std", shape, chunks, fill_value=np.nan)
        _create(group, "samples", (samples, *shape), (1, *chunks), fill_value=np.nan)
    group.attrs[RECORD_KEY] = json_record(record)
    group.attrs[PROGRESS_KEY] = {"next": [0, 0], "complete": False, "pending": {}}
    return group, False


#: Fields of a restore record that may differ between an interrupted run and its resumption.
VOLATILE_FIELDS = ("seconds", "napari_svi_version", "device", "source", "command", "resumed")


def parameter_differences(old: dict, new: dict) -> list[str]:
    """Fields of the new record (other than :data:`VOLATILE_FIELDS`) that the old one lacks or differs in.

    Fields only the old record has (notes added by the caller, such as axes or pixel size) are
    not parameters of the restore and are ignored.
    """
    a, b = json_record(old), json_record(new)
    keys = sorted(set(b) - set(VOLATILE_FIELDS))
    return [k for k in keys if a.get(k) != b.get(k)]


def json_record(record: dict) -> dict:
    """``record`` as plain JSON types (NumPy scalars and arrays, paths converted)."""
    return json.loads(json.dumps(record, default=json_default))


def _get(group, name):
    return group[name] if name in group else None


def _chunk2d(h: int, w: int) -> tuple[int, int]:
    return (min(h, MAX_CHUNK), min(w, MAX_CHUNK))


def _create(group, name, shape, chunks, fill_value):
    if name in group:
        del group[name]
    make = getattr(group, "create_array", None) or group.create_dataset  # zarr 3 / zarr 2
    return make(name=name, shape=shape, chunks=chunks, dtype="float32", fill_value=fill_value)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        os.unlink(path)


def open_output(out, out_shape, *, time_axis, lead_shape, samples, frame_shape, record, pending_frames, overwrite):
    """The sink for a restore's ``out`` argument and the object to return as its result.

    ``out`` is ``None`` (in memory: a :class:`MemorySink` is made by the caller), a ``.zarr`` path
    or a zarr group from :func:`create_zarr_output` (resumable), or a writable float array-like of
    the result's shape. Raises ``ValueError`` naming ``out`` otherwise.
    """
    if out is None:
        return None, None
    if isinstance(out, (str, os.PathLike)):
        if not is_zarr_path(out):
            raise ValueError(f"out must be a zarr path (ending in .zarr), a zarr group or an array, got {str(out)!r}")
        group, _ = create_zarr_output(
            out, out_shape, time_axis=time_axis, samples=samples, record=record,
            pending_frames=pending_frames, overwrite=overwrite,
        )
        out = group
    if hasattr(out, "array_keys"):  # a zarr group: resumable
        if "restored" not in out:
            raise ValueError("a zarr group given as out must come from create_zarr_output (it has no 'restored' array)")
        if tuple(out["restored"].shape) != tuple(out_shape):
            raise ValueError(f"out['restored'] has shape {tuple(out['restored'].shape)}, the result has {tuple(out_shape)}")
        sink = ZarrSink(out, pending_frames=pending_frames, time_axis=time_axis, lead_shape=lead_shape,
                        n_samples=samples, frame_shape=frame_shape)
        return sink, out
    shape = getattr(out, "shape", None)
    if shape is None or not hasattr(out, "__setitem__"):
        raise ValueError(f"out must be a writable array-like, a zarr group or a .zarr path, got {type(out).__name__}")
    if tuple(shape) != tuple(out_shape):
        raise ValueError(f"out has shape {tuple(shape)}, but the restored stack has shape {tuple(out_shape)}")
    if np.dtype(out.dtype).kind != "f":
        raise ValueError(f"out must have a floating point dtype (the result is float32), got {out.dtype}")
    return ArraySink(out, time_axis=time_axis, lead_shape=lead_shape, n_samples=samples, frame_shape=frame_shape), out


def release_memory() -> None:
    """Hand freed heap memory back to the system after a window (glibc only; as dask.distributed does).

    A window's arrays are tens of MB each, below glibc's largest mmap threshold, so they live on the
    heap; without a trim the process keeps their pages after the window is done.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
