"""Dock widget "Simulate degradation": apply the forward model and noise to a clean stack.

For trying the method on data whose truth is known, for teaching, and for choosing parameters:
the result "<name> degraded" records its operator and noise level in ``layer.metadata``, so
"Restore time-lapse" fills in the same model when it is chosen there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, SpinBox

from ._common import (
    Message,
    RunPanel,
    jsonable,
    make_scrollable,
    open_ranges,
    range_problem,
    stack_shape,
    stop_worker_on_close,
)
from ._operator_fields import OperatorFields
from ._restore_checks import LIMITS

if TYPE_CHECKING:
    import napari


def measurement_geometry(layer, time_axis: int, temporal_subsample: int, downsample: int):
    """Scale and translate of the measurement of a true-stack layer (inverse of ``result_geometry``)."""
    scale = np.array(layer.scale, dtype=float)
    translate = np.array(layer.translate, dtype=float)
    nd = len(scale)
    for ax in (nd - 2, nd - 1):
        translate[ax] += (downsample - 1) / 2 * scale[ax]
        scale[ax] *= downsample
    scale[time_axis] *= temporal_subsample
    return tuple(scale), tuple(translate)


def degrade_layer_data(data, spec, time_axis, noise_sigma, poisson_peak, seed):
    """Worker body: the core's ``degrade`` (a function, so this runs in a FunctionWorker)."""
    from ..degrade import degrade

    return degrade(data, spec, time_axis=time_axis, noise_sigma=noise_sigma, poisson_peak=poisson_peak, seed=seed)


class DegradeWidget(Container):
    """Make a measurement ``y = A x + noise`` from a clean time-lapse layer ``x``."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self._viewer = napari_viewer
        self.image = ComboBox(label="Clean time-lapse", choices=self._image_layers)
        self.time_axis = SpinBox(label="Time axis", value=0, min=0, max=0)
        self.image_msg = Message()
        self.image_info = Label(value="")
        self.operator = OperatorFields(napari_viewer, restoring=False, on_change=self.validate)
        self.noise_sigma = FloatSpinBox(label="Gaussian noise σ (data units)", value=0.0, min=0.0, max=1e9, step=0.5)
        self.noise_sigma.tooltip = "Standard deviation of additive read noise, in the layer's intensity units"
        self.poisson_peak = FloatSpinBox(label="Poisson peak (photons)", value=0.0, min=0.0, max=1e9, step=10)
        self.poisson_peak.tooltip = "Photons at the 99.9th percentile for shot noise; 0: no shot noise"
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self.noise_msg = Message()
        open_ranges(self.noise_sigma, self.poisson_peak, self.seed, self.operator.missing_fraction)  # checked, not clamped
        self.run_panel = RunPanel("Simulate", self._start, self._cancel)
        super().__init__(
            widgets=[
                self.image,
                self.time_axis,
                self.image_msg,
                self.image_info,
                self.operator,
                self.noise_sigma,
                self.poisson_peak,
                self.seed,
                self.noise_msg,
                self.run_panel,
            ]
        )
        make_scrollable(self)  # the dock scrolls instead of growing the window
        self.image_info.native.setWordWrap(True)
        self._worker = None
        self._outcome = ""
        self.degraded_layer = self.mask_layer = None
        self.image.changed.connect(self._on_image)
        self.time_axis.changed.connect(self._on_image)
        for w in (self.noise_sigma, self.poisson_peak, self.seed):
            w.changed.connect(self.validate)
        stop_worker_on_close(self, self._cancel)
        self._viewer.layers.events.inserted.connect(self.reset_choices)
        self._viewer.layers.events.removed.connect(self.reset_choices)
        active = self._viewer.layers.selection.active
        if active is not None and active in self.image.choices:
            self.image.value = active
        self._on_image()

    def _image_layers(self, _widget=None) -> list:
        import napari

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, napari.layers.Image)]

    def _on_image(self, *_):
        layer = self.image.value
        if layer is not None and not layer.multiscale:
            self.time_axis.max = max(np.ndim(layer.data) - 3, 0)
        self.operator.set_input(layer, self.time_axis.value)
        self.validate()

    def input_shape(self) -> tuple[int, int, int] | None:
        layer = self.image.value
        if layer is None or layer.rgb or layer.multiscale or np.ndim(layer.data) < 3:
            return None
        return stack_shape(np.shape(layer.data), self.time_axis.value)

    def validate(self, *_) -> bool:
        layer = self.image.value
        err = None
        if layer is None:
            err = "Choose the clean time-lapse layer."
        elif layer.rgb or layer.multiscale:
            err = "RGB and multiscale layers are not supported."
        elif np.ndim(layer.data) < 3:
            err = f"A time-lapse needs a time axis and two image axes; {layer.name!r} is {np.ndim(layer.data)}-D."
        self.image_msg.show_message(err)
        shape = None if err else self.input_shape()
        ok = err is None and self.operator.validate(shape)
        if ok and shape is not None:
            m = self.operator.measurement_shape(shape)
            self.image_info.value = (
                f"{shape[0]} × {shape[1]} × {shape[2]} (T × Y × X) → measurement {m[0]} × {m[1]} × {m[2]}"
            )
        else:
            self.image_info.value = ""
        noise = self.noise_problem()
        self.noise_msg.show_message(noise)
        ok = ok and noise is None
        self.run_panel.set_ready(bool(ok))
        return bool(ok)

    def noise_problem(self) -> str | None:
        """Why the noise fields cannot be used (a typed value out of range), or ``None``."""
        return (range_problem("Gaussian noise σ", self.noise_sigma.value, 0.0)
                or range_problem("Poisson peak (photons)", self.poisson_peak.value, 0.0)
                or range_problem("Seed", self.seed.value, *LIMITS["seed"]))

    def _start(self) -> None:
        if self._worker is not None or not self.validate():
            return
        from napari.qt.threading import create_worker

        layer = self.image.value
        shape = self.input_shape()
        spec = self.operator.spec(self.operator.measurement_shape(shape), seed=self.seed.value)
        peak = self.poisson_peak.value or None
        self._run = {
            "layer": layer,
            "spec": spec,
            "time_axis": self.time_axis.value,
            "noise_sigma": float(self.noise_sigma.value),
            "poisson_peak": peak,
            "seed": self.seed.value,
        }
        self._worker = create_worker(
            degrade_layer_data,
            layer.data,
            spec,
            self.time_axis.value,
            float(self.noise_sigma.value),
            peak,
            self.seed.value,
            _start_thread=False,
            _ignore_errors=True,
        )
        self._worker.returned.connect(self._on_result)
        self._worker.errored.connect(self._on_error)
        self._worker.finished.connect(self._on_finished)
        self.run_panel.started("Applying the forward model…")
        self.run_panel.progress.max = 0  # busy: degrade is one call without steps
        self._worker.start()

    def _cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()  # the result is dropped: a quit worker emits no "returned"

    def _on_result(self, measurement: np.ndarray) -> None:
        run = self._run
        layer, spec = run["layer"], run["spec"]
        scale, translate = measurement_geometry(layer, run["time_axis"], spec.temporal_subsample, spec.downsample)
        f = self.operator
        acquisition = (
            {"exposure_ms": f.exposure_ms.value, "frame_interval_ms": f.interval_ms.value}
            if f.temporal_kind.value == "exposure"
            else None
        )
        record = {
            "kind": "measurement",
            "source_layer": layer.name,
            "operator": spec.to_dict(),
            "time_axis": run["time_axis"],
            "noise_sigma": run["noise_sigma"],
            "poisson_peak": run["poisson_peak"],
            "seed": run["seed"],
        }
        if acquisition:
            record["acquisition"] = acquisition
        self.mask_layer = None
        if spec.mask is not None:
            mask = np.asarray(spec.mask, dtype=np.uint8)
            self.mask_layer = self._viewer.add_labels(
                mask,
                name=f"{layer.name} mask",
                scale=scale[-mask.ndim :],
                translate=translate[-mask.ndim :],
                opacity=0.3,
                metadata={"napari_svi": {"kind": "mask", "meaning": "1 = observed, 0 = missing"}},
            )
            record["mask_layer"] = self.mask_layer.name
        self.degraded_layer = self._viewer.add_image(
            measurement,
            name=f"{layer.name} degraded",
            scale=scale,
            translate=translate,
            contrast_limits=layer.contrast_limits,
            colormap=layer.colormap,
            units=getattr(layer, "units", None),
            axis_labels=getattr(layer, "axis_labels", None),
            metadata={"napari_svi": jsonable(record)},
        )
        self._outcome = f"Added {self.degraded_layer.name!r}: {spec.describe()}."

    def _on_error(self, err: Exception) -> None:
        from napari.utils.notifications import show_error

        self._outcome = f"Failed: {err}"
        show_error(f"Simulate degradation failed: {err}")

    def _on_finished(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and worker.abort_requested:
            self._outcome = "Cancelled; nothing was added."
        self.run_panel.stopped(self._outcome)
        self._outcome = ""
