"""Pieces the dock widgets share: a Run/Cancel panel with progress, field messages, layer geometry.

No Qt import at module level: everything is a magicgui widget (Qt only inside the functions that need
it); workers come from ``napari.qt.threading``.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Generator
from pathlib import Path

import numpy as np
from magicgui.widgets import Container, Label, ProgressBar, PushButton
from psygnal import Signal

ERROR_COLOR = "#ff8c69"


class WorkerError(Exception):
    """An error raised in a worker thread, re-raised under a type the worker reports.

    superqt's generator worker swallows ``RuntimeError`` (it takes it for a deleted Qt object), so
    torch's RuntimeErrors (out of memory, device errors) would vanish without this wrapper.
    """


def guarded(gen_func: Callable[..., Generator], *args, **kwargs) -> Generator:
    """Run ``gen_func(*args, **kwargs)`` and re-raise its RuntimeErrors as :class:`WorkerError`."""
    try:
        return (yield from gen_func(*args, **kwargs))
    except RuntimeError as err:
        raise WorkerError(f"{type(err).__name__}: {err}") from err


def stop_worker_on_close(widget, stop) -> None:
    """When ``widget``'s window goes away, unhook it from the viewer, silence its worker, call ``stop()``.

    A worker outliving its dock widget (the viewer closed during a run) must neither touch deleted
    widgets nor add layers; ``widget._worker``'s signals are disconnected and the thread told to stop.
    """

    def on_destroyed(*_):
        widget._closed = True
        viewer = getattr(widget, "_viewer", None)
        if viewer is not None:
            for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
                event.disconnect(widget.reset_choices)
        TRAINED_PRIORS.changed.disconnect(widget.reset_choices, missing_ok=True)
        worker = getattr(widget, "_worker", None)
        if worker is None:
            return
        for name in ("yielded", "returned", "errored", "aborted", "finished"):
            signal = getattr(worker, name, None)
            if signal is not None:
                try:
                    signal.disconnect()
                except (TypeError, RuntimeError):
                    pass  # nothing connected
        stop()

    widget.native.destroyed.connect(on_destroyed)


class Message(Label):
    """A wrapped line of text under a field: the reason the field's value cannot be used."""

    def __init__(self, **kwargs):
        kwargs.setdefault("label", "")
        super().__init__(value="", **kwargs)
        self.native.setWordWrap(True)
        self.text = ""
        self.visible = False

    def show_message(self, text: str | None) -> None:
        self.text = text or ""
        self.value = f'<span style="color:{ERROR_COLOR}">{html.escape(self.text)}</span>' if text else ""
        self.visible = bool(text)

    def check(self, check: Callable[[], object]) -> bool:
        """Run ``check()``; show the ValueError it raises (or nothing); True when it raised none."""
        try:
            check()
        except ValueError as err:
            self.show_message(str(err))
            return False
        self.show_message(None)
        return True


def range_problem(label: str, value, low, high=math.inf) -> str | None:
    """``"<label> must be low … high, not value."`` (or ``must be ≥ low``) when ``value`` is outside; else ``None``."""
    if low <= value <= high:
        return None
    allowed = f"≥ {low}" if high == math.inf else f"{low} … {high}"
    return f"{label} must be {allowed}, not {value}."


def format_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3:05 min"`` or ``"1:02:03 h"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d} min"
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d} h"


class RunPanel(Container):
    """A Run button that turns into Cancel while a worker runs, a progress bar and a status line.

    ``on_run`` is called when the button is pressed while idle, ``on_cancel`` while running. The
    owner calls :meth:`started`, :meth:`stage` (at the start of a stage before the steps),
    :meth:`report` (after every step) and :meth:`stopped`. The bar
    itself reads "Step k / n · time left"; the status line under it stays one line (its tooltip
    holds the whole text) because a wrapped label that changes while docked is clipped by Qt.
    """

    def __init__(
        self, run_text: str, on_run: Callable[[], None], on_cancel: Callable[[], None], cancel_text: str = "Cancel"
    ):
        self._run_text, self._cancel_text = run_text, cancel_text
        self._on_run, self._on_cancel = on_run, on_cancel
        self.button = PushButton(text=run_text)
        self.progress = ProgressBar(value=0, min=0, max=1, visible=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.button, self.progress, self.status], labels=False)
        self.margins = (0, 0, 0, 0)
        self.running = False
        self.ready = True
        self._t0 = self._t_first = self._t_stage = 0.0
        self._step_first = 0
        self.button.changed.connect(self._clicked)

    def _clicked(self, *_):
        if self.running:
            self.button.enabled = False  # one cancel is enough; re-enabled by stopped()
            self.set_status("Cancelling after the current step…")
            self._on_cancel()
        elif self.ready:
            self._on_run()

    def set_status(self, text: str, max_chars: int = 60) -> None:
        """One line under the bar; longer text is cut with an ellipsis and kept whole in the tooltip."""
        self.status.value = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
        self.status.tooltip = text

    def set_ready(self, ready: bool) -> None:
        """Enable Run only when the form is valid (Cancel stays enabled while running)."""
        self.ready = ready
        if not self.running:
            self.button.enabled = ready

    def started(self, message: str = "Starting…") -> None:
        self.running = True
        self.button.text = self._cancel_text
        self.button.enabled = True
        self.progress.max = 1
        self.progress.value = 0
        self.progress.native.setFormat(message)
        self.progress.visible = True
        self.set_status("")
        self._t0 = self._t_stage = time.perf_counter()
        self._t_first, self._step_first = 0.0, 0

    def stage(self, message: str) -> None:
        """Show what runs before the first step (loading the prior, ...) and the time elapsed."""
        self.text = message
        self.progress.native.setFormat(message)
        self.set_status(f"{format_seconds(time.perf_counter() - self._t0)} elapsed")
        self._t_first, self._step_first = 0.0, 0
        self._t_stage = time.perf_counter()

    def report(self, step: int, total: int, extra: str = "") -> None:
        """Show ``step`` of ``total`` and the time left, estimated from the steps so far."""
        now = time.perf_counter()
        if not self._step_first:
            self._t_first, self._step_first = now, step
        self.progress.max = max(int(total), 1)
        self.progress.value = min(int(step), int(total))
        done_since = step - self._step_first
        if done_since > 0:
            per_step = (now - self._t_first) / done_since
        else:  # first step: the time since the last stage began
            per_step = (now - self._t_stage) / max(step, 1)
        self.text = f"Step {step} / {total} · {format_seconds(per_step * (total - step))} left"
        self.progress.native.setFormat(self.text)
        elapsed = f"{format_seconds(now - self._t0)} elapsed"
        self.set_status(f"{elapsed} · {extra}" if extra else elapsed)

    def stopped(self, message: str = "") -> None:
        self.running = False
        self.button.text = self._run_text
        self.button.enabled = self.ready
        self.progress.visible = False
        self.set_status(message)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0


def jsonable(obj, max_array: int = 4096):
    """``obj`` with NumPy values, paths and tuples turned into JSON types (large arrays summarised)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, max_array) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, max_array) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.size <= max_array:
            return jsonable(obj.tolist(), max_array)
        return {"array_shape": list(obj.shape), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def pixel_size_nm_from_scale(scale: float) -> float | None:
    """A spatial scale without unit read as a pixel size in nm, or None when it is not set.

    A value of 1 is napari's default (not set). Values from 0.001 to 50 are taken as µm (what
    readers of microscopy files put there), values above 50 as nm.
    """
    s = float(scale)
    if not math.isfinite(s) or s <= 0 or s == 1.0:
        return None
    return s * 1000.0 if s <= 50 else s


def _unit_of(units, axis: int):
    try:
        return units[axis] if units is not None else None
    except (IndexError, TypeError):
        return None


def layer_pixel_size_nm(scale, units=None) -> tuple[float | None, str]:
    """Pixel size (nm) of the X axis from a layer's ``scale`` and ``units``, and where it came from."""
    if scale is None:
        return None, "the layer has no scale"
    s = float(scale[-1])
    unit = _unit_of(units, -1)
    try:
        if unit is not None and str(unit.dimensionality) == "[length]":
            nm = float((s * unit).to("nm").magnitude)
            return nm, f"from the layer scale ({s:g} {unit:~})"
    except (AttributeError, ValueError):
        pass
    nm = pixel_size_nm_from_scale(s)
    if nm is None:
        return None, "not in the layer's scale: enter it"
    return nm, f"from the layer scale ({s:g}, read as {'µm' if s <= 50 else 'nm'})"


def layer_frame_interval_s(scale, units, time_axis: int) -> float | None:
    """Frame interval (s) when the layer's time axis has a time unit, else None."""
    unit = _unit_of(units, time_axis)
    try:
        if unit is not None and str(unit.dimensionality) == "[time]":
            return float((float(scale[time_axis]) * unit).to("s").magnitude)
    except (AttributeError, ValueError, IndexError, TypeError):
        pass
    return None


def stack_shape(shape: tuple[int, ...], time_axis: int) -> tuple[int, int, int]:
    """(T, H, W) of data with the time axis at ``time_axis`` and Y, X last."""
    return int(shape[time_axis]), int(shape[-2]), int(shape[-1])


def result_geometry(layer, time_axis: int, temporal_subsample: int, downsample: int):
    """Scale and translate for a true-stack result of a measurement layer.

    Block-mean downsampling by ``s`` makes measured pixel ``i`` the mean of true pixels
    ``s i .. s i + s - 1``, so the result's pixels are ``s`` times smaller and its first pixel
    centre lies ``(s - 1) / 2`` small pixels before the first measured centre. With temporal
    subsampling by ``n`` the measured frames are true frames ``0, n, 2n, ...``.
    """
    scale = np.array(layer.scale, dtype=float)
    translate = np.array(layer.translate, dtype=float)
    nd = len(scale)
    for ax in (nd - 2, nd - 1):
        scale[ax] /= downsample
        translate[ax] -= (downsample - 1) / 2 * scale[ax]
    scale[time_axis] /= temporal_subsample
    return tuple(scale), tuple(translate)


def device_choices() -> list[str]:
    """``auto``, ``cpu``, every CUDA device torch sees (``cuda:0``, ...) and ``mps`` where Apple's GPU is present."""
    import torch

    from ..priors.loading import mps_available

    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] + (["mps"] if mps_available() else [])


INT_LIMIT = 2**31 - 1
FLOAT_LIMIT = 1e9


def open_ranges(*widgets) -> None:
    """Let spin boxes hold any number, so that a typed value is checked and reported, never clamped.

    A Qt spin box replaces a value outside its range (or refuses the minus sign) without a word;
    the form's checks say what is allowed instead.
    """
    from magicgui.widgets import FloatSpinBox

    for w in widgets:
        limit = FLOAT_LIMIT if isinstance(w, FloatSpinBox) else INT_LIMIT
        w.min, w.max = -limit, limit


def make_scrollable(container) -> None:
    """Put ``container``'s fields into a vertical scroll area inside its own widget.

    napari docks a magicgui widget's ``native`` widget, the inner one even for a
    ``Container(scrollable=True)``, so a tall form would grow the window past the screen. Here the
    form's layout moves into a scroll area, and the dock can be as short as the window allows. Its
    width follows the form's: fields that appear or fill in later (a region line, a PSF preview)
    widen the dock instead of being cut at its edge.
    """
    from qtpy.QtCore import QEvent, QObject, Qt
    from qtpy.QtWidgets import QFrame, QScrollArea, QStyle, QVBoxLayout, QWidget

    class FormScroll(QScrollArea):
        def minimumSizeHint(self):  # noqa: N802  (Qt's name)
            hint = super().minimumSizeHint()
            spacing = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollView_ScrollBarSpacing)
            hint.setWidth(inner.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
                          + max(spacing, 0) + 2 * self.frameWidth())
            return hint

    class Refit(QObject):
        def eventFilter(self, obj, event):  # noqa: N802  (Qt's name)
            if event.type() == QEvent.Type.LayoutRequest:
                scroll.updateGeometry()  # the dock asks for the new minimum width
            return False

    outer = container.native
    inner = QWidget()
    inner.setLayout(outer.layout())  # moves the layout and every field into ``inner``
    scroll = FormScroll(outer)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(inner)
    scroll.refit = Refit(scroll)  # a child of the scroll area: lives as long as it
    inner.installEventFilter(scroll.refit)
    layout = QVBoxLayout(outer)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(scroll)


class _TrainedPriors:
    """Prior folders trained in this session, offered by every "Restore time-lapse" widget."""

    changed = Signal()

    def __init__(self) -> None:
        self.folders: list[str] = []

    def add(self, folder: str) -> None:
        if folder in self.folders:
            self.folders.remove(folder)
        self.folders.insert(0, folder)
        self.changed.emit()


TRAINED_PRIORS = _TrainedPriors()
