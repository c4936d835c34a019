"""Running "Restore time-lapse": the worker, its progress, the live preview and the result layers.

The worker thread runs :func:`napari_svi.restore.iter_restore`; the GUI thread only shows what it
yields (one report per stage before sampling and per sampler step: progress, time left, an
optional live preview, cancel within one step). Each piece of GUI work stays one event-loop turn
of its own (docs/napari-plugin.md, "Responsiveness"):

- The sampler waits while the GUI thread shows an estimate. Adding a layer is napari's own work
  (its visual and its layer controls, the whole of the cost); a sampler thread computing meanwhile
  competes with it for the interpreter lock and the CPU and made it take about twice as long.
- What needs the whole result, the uncertainty's contrast limits, is computed in the worker.
- After the result, the result layer, the uncertainty layer, the notifications and the unlocked
  form each take a turn of their own: the canvas repaints and input is handled between them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ._common import guarded, jsonable, result_geometry
from ._restore_region import Crop

STAGE_TEXT = {"loading prior": "Loading the prior…", "estimating noise": "Estimating the noise…",
              "planning windows": "Planning windows…"}
#: the longest the sampler waits for the GUI thread to show an estimate (a closed window never answers)
SHOW_TIMEOUT_S = 30.0
TURN_MS = 1  # the pause between two turns of GUI work: repaints, timers and input run in it


@dataclass
class RestoreJob:
    """One run: the input layer, the data restored (its region), the operator and ``iter_restore``'s arguments."""

    layer: object
    data: object
    spec: object
    kwargs: dict
    crop: Crop
    acquisition: dict | None = None
    planes: list[str] = field(default_factory=list)  # names of the 2-D + t stacks, for a layer with more axes


def restore_steps(data, spec, shown: threading.Event, **kwargs):
    """Worker body: the reports of ``iter_restore(data, spec, **kwargs)``, then ``(result, uncertainty_top)``.

    After a report that carries an estimate the sampler waits until ``shown`` is set (the GUI thread
    has drawn it). ``uncertainty_top`` is the 99.9th percentile of the posterior standard deviation
    (the uncertainty layer's upper contrast limit), or ``None`` with one sample.
    """
    from ..restore import iter_restore  # looked up per run: tests time the real core through it

    steps = iter_restore(data, spec, **kwargs)
    try:
        while True:
            try:
                info = next(steps)
            except StopIteration as stop:
                result = stop.value
                break
            estimate = info.get("estimate") is not None
            if estimate:
                shown.clear()
            yield info
            if estimate:
                shown.wait(SHOW_TIMEOUT_S)
    finally:
        steps.close()
    top = None if result.std is None else float(np.percentile(result.std, 99.9)) or 1.0
    return result, top


class RestoreRunner:
    """One run at a time of "Restore time-lapse", and what it shows.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where the preview and result layers go.
    panel : RunPanel
        The Restore/Cancel button, progress bar and status line.
    lock : callable
        ``lock(True)`` makes the form read-only while a run uses it, ``lock(False)`` undoes it.
    on_done : callable
        Called when a run has ended and everything it shows is in place.
    closed : callable
        True once the dock went away: nothing is added then.
    """

    def __init__(self, viewer, panel, *, lock: Callable[[bool], None], on_done: Callable[[], None],
                 closed: Callable[[], bool]):
        self._viewer = viewer
        self._panel = panel
        self._lock = lock
        self._on_done = on_done
        self._closed = closed
        self.worker = None  # None when idle: set back only once the run's last turn is done
        self.job: RestoreJob | None = None
        self.preview_layer = None
        self._preview_added = False
        self.restored_layer = self.uncertainty_layer = None
        self._outcome = ""
        self._shown = threading.Event()
        self._turns: deque[Callable[[], None]] = deque()
        self._turn_pending = False

    # ------------------------------------------------------------------ the worker
    def start(self, job: RestoreJob, on_step: Callable[[dict], None]) -> None:
        """Start ``job`` in a worker thread; ``on_step`` receives every report (it calls :meth:`on_step`)."""
        from napari.qt.threading import create_worker

        self.job = job
        self._shown = threading.Event()
        self.worker = create_worker(guarded, restore_steps, job.data, job.spec, self._shown, **job.kwargs,
                                    _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(on_step)
        self.worker.returned.connect(self._on_result)
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self._lock(True)
        close_old_notifications(self._panel.native)
        self._panel.started("Checking the data…")
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self._shown.set()  # a sampler waiting for a preview goes on to its abort

    def later(self, task: Callable[[], None], *, next_turn: bool = False) -> None:
        """Run ``task`` in an event-loop turn of its own, after the tasks queued before it (or, with
        ``next_turn``, before them: the second half of the task running now)."""
        if next_turn:
            self._turns.appendleft(task)
        else:
            self._turns.append(task)
        self._schedule()

    def _schedule(self) -> None:
        if self._turn_pending or not self._turns:
            return
        from qtpy.QtCore import QTimer

        self._turn_pending = True
        # a timer, not a 0 ms single shot: Qt 6 posts those as events, which run before any timer
        # and repaint, so a chain of them would hold the event loop as long as one task
        QTimer.singleShot(TURN_MS, self._next_turn)

    def _next_turn(self) -> None:
        self._turn_pending = False
        task = self._turns.popleft() if self._turns else None
        try:
            if task is not None and not self._closed():
                task()
        finally:
            self._schedule()

    # ------------------------------------------------------------------ reports
    def on_step(self, info: dict) -> None:
        """Show one report: a stage, or a step with the time left, the plane and window, and the estimate."""
        stage = info.get("stage", "sampling")
        if stage == "window" and info["step"] == 0:
            stage = f"Step 0 / {info['total']} · sampling…"  # the first step: no time left to tell yet
        if stage not in ("window", "sampling"):
            self._panel.stage(STAGE_TEXT.get(stage, stage))
            return
        windows = info.get("windows") or 1
        extra = f"temporal window {info.get('window', 0) + 1} of {windows}" if windows > 1 else ""
        planes = self.job.planes
        if planes:
            k = int(info.get("stack", 0))
            plane = f"plane {k + 1} of {len(planes)} ({planes[k]})"
            extra = f"{plane} · {extra}" if extra else plane
        self._panel.report(info["step"], info["total"], extra=extra)
        estimate = info.get("estimate")
        if estimate is not None:
            try:
                self._show_preview(estimate)
            finally:
                self.later(self._shown.set)  # the sampler goes on once the preview is drawn

    def _show_preview(self, estimate: np.ndarray) -> None:
        preview = self.preview_layer
        if preview is not None and (preview in self._viewer.layers or not self._preview_added):
            preview.data = estimate
            return
        # the first estimate, or the preview layer was deleted: a new one
        self.preview_layer, self._preview_added = self._like_input(estimate, name=f"{self.job.layer.name} preview"), False
        self.later(self._add_preview)

    def _add_preview(self) -> None:
        if self.preview_layer is not None:
            self._add(self.preview_layer)
            self._preview_added = True

    def _like_input(self, data, **kwargs):
        """An image layer placed and displayed like the input layer (result geometry), not added yet.

        Made in one event-loop turn and added in the next (:meth:`_add`): napari's work on adding
        it, its visual and layer controls, is then all the second turn holds.
        """
        from napari.layers import Image

        layer = self.job.layer
        scale, translate = self.geometry()
        return Image(
            data,
            scale=scale,
            translate=translate,
            contrast_limits=layer.contrast_limits,
            colormap=layer.colormap,
            blending=layer.blending,
            units=getattr(layer, "units", None),
            axis_labels=getattr(layer, "axis_labels", None),
            **kwargs,
        )

    def _add(self, layer) -> None:
        """Add ``layer`` hidden, and show it in the next turn: napari's work to add a layer (its visual
        and layer controls) and the canvas's first draw of it (its shaders) are two stalls, not one."""
        if layer is None or layer in self._viewer.layers:
            return
        visible, layer.visible = layer.visible, False
        self._viewer.add_layer(layer)
        if visible:
            self.later(lambda: setattr(layer, "visible", True), next_turn=True)

    def geometry(self):
        """Scale and translate of the result: the input's, refined by the operator, moved to the region."""
        job = self.job
        layer, ax, crop = job.layer, job.kwargs["time_axis"], job.crop
        scale, translate = result_geometry(layer, ax, job.spec.temporal_subsample, job.spec.downsample)
        translate = list(translate)  # the region's first frame and pixel, in the layer's world units
        translate[ax] += crop.t0 * float(layer.scale[ax])
        translate[-2] += crop.y0 * float(layer.scale[-2])
        translate[-1] += crop.x0 * float(layer.scale[-1])
        return scale, tuple(translate)

    def _remove_preview(self) -> None:
        preview, self.preview_layer = self.preview_layer, None  # a preview not added yet is never added
        if preview is not None and preview in self._viewer.layers:
            remove_layer(self._viewer, preview)  # no half-second stall on cancel

    # ------------------------------------------------------------------ the end of a run
    def _on_result(self, value) -> None:
        result, top = value
        job = self.job
        layer = job.layer
        record = jsonable(
            {
                **result.metadata,
                "kind": "restored",
                "source_layer": layer.name,
                "source_scale": list(layer.scale),
                "source_translate": list(layer.translate),
                "source_region": job.crop.record(),
                **({"acquisition": job.acquisition} if job.acquisition else {}),
            }
        )
        name = f"{layer.name} restored"
        preview, self.preview_layer = self.preview_layer, None
        if preview is not None:
            # the live preview becomes the result: removing a layer costs napari a full garbage
            # collection (about 0.3 s here), far more than updating one
            preview.data = result.restored
            preview.name = name
            preview.metadata = {"napari_svi": record}
            restored = preview
        else:
            restored = self._like_input(result.restored, name=name, metadata={"napari_svi": record})
        uncertainty = None if result.std is None else self._uncertainty(result.std, top, record)
        self.restored_layer, self.uncertainty_layer = restored, uncertainty
        self.later(lambda: self._add(restored))
        if uncertainty is not None:
            self.later(lambda: self._add(uncertainty))
        self.later(lambda: self._announce(result.metadata, restored.name))

    def _uncertainty(self, std: np.ndarray, top: float, record: dict):
        """The posterior standard deviation's layer (not added yet), over the result."""
        from napari.layers import Image

        layer = self.job.layer
        scale, translate = self.geometry()
        return Image(
            std,
            name=f"{layer.name} uncertainty",
            scale=scale,
            translate=translate,
            colormap="magma",
            contrast_limits=(0.0, top),
            blending="additive",
            visible=True,
            units=getattr(layer, "units", None),
            axis_labels=getattr(layer, "axis_labels", None),
            metadata={"napari_svi": {**record, "kind": "posterior standard deviation"}},
        )

    def _announce(self, metadata: dict, name: str) -> None:
        from napari.utils.notifications import show_info, show_warning

        for check in metadata.get("consistency") or []:
            if check.get("message"):
                show_warning(f"Restore time-lapse: {check['message']}")
                break
        if metadata.get("sampler_weight_zero"):
            show_info(f"Restore time-lapse: {metadata['sampler_weight_zero']}.")
        seconds = metadata.get("seconds", self._panel.elapsed)
        self._outcome = f"Done in {seconds:.0f} s: added {name!r}."
        show_info(f"Restore time-lapse done in {seconds:.0f} s: added {name!r}.")

    def _on_error(self, err: Exception) -> None:
        from napari.utils.notifications import show_error

        self._remove_preview()
        self._outcome = f"Failed: {err}"
        self.later(lambda: show_error(f"Restore time-lapse failed: {err}"))

    def _on_aborted(self) -> None:
        from napari.utils.notifications import show_info

        self._remove_preview()
        self._outcome = "Cancelled; nothing was added."
        self.later(lambda: show_info("Restore time-lapse cancelled."))

    def _on_finished(self) -> None:
        self.later(self._finish)  # after the result's turns

    def _finish(self) -> None:
        self._lock(False)
        self._panel.stopped(self._outcome)
        self._outcome = ""
        self.worker = None
        self._on_done()


def close_old_notifications(native) -> None:
    """Close this widget's earlier toasts ("cancelled", "failed"): they are about a previous run."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        window = native.window()
    except (ImportError, AttributeError):
        return
    for toast in window.findChildren(NapariQtNotification):
        text = toast.message.text() if hasattr(toast.message, "text") else str(toast.message)
        if "Restore time-lapse" in text:
            toast.close()


def remove_layer(viewer, layer) -> None:
    """Remove ``layer`` without stalling the event loop on napari's full garbage collection.

    napari's canvas runs ``gc.collect()`` after every layer removal (a fix for OpenGL drivers on
    Windows); with torch loaded that walks some 370,000 objects, about half a second on a busy
    CPU. Elsewhere, the objects that exist already are frozen for that collection, which then only
    looks at new ones (a few ms); they are collected again after ``gc.unfreeze()`` as usual.
    """
    import gc
    import sys

    if sys.platform == "win32":  # keep napari's driver fix whole there
        viewer.layers.remove(layer)
        return
    gc.freeze()
    try:
        viewer.layers.remove(layer)
    finally:
        gc.unfreeze()
