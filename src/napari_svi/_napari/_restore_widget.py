"""Dock widget "Restore time-lapse": an image layer and the forward model in, a restored layer out.

The widget only translates: layer + fields -> :func:`napari_svi.restore.iter_restore` in a napari
``thread_worker`` -> "<name> restored" (and "<name> uncertainty" with several posterior samples)
with the input's scale, translate and contrast limits and every parameter in
``layer.metadata["napari_svi"]``. This module holds the form: its fields, their checks and what
they mean for the core. The parts live beside it: the forward-model fields (``_operator_fields``),
the region and frame range (``_restore_region``), the cost estimate (``_restore_cost``), the
Qt-free checks (``_restore_checks``) and the run with its worker, preview and result layers
(``_restore_run``). A new field goes into ``__init__``'s list, ``validate`` and
``restore_kwargs``; a new action beside Restore gets a panel and a worker of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, SpinBox

from ..noise import parse_noise_sigma
from ..threads import default_threads
from ..warm_start import DEFAULT_BLEND, DEFAULT_START, DEFAULT_START_T, PieceSolver
from ._common import (
    TRAINED_PRIORS,
    Message,
    RunPanel,
    device_choices,
    make_scrollable,
    open_ranges,
    stack_shape,
    stop_worker_on_close,
)
from ._estimate import EstimatePanel
from ._operator_fields import OperatorFields
from ._restore_checks import PRIOR_FILE, PRIOR_FOLDER, check_limits, check_prior, image_problem, plane_names, shape_line
from ._restore_cost import describe, question, restore_cost
from ._restore_region import Crop, RegionFields
from ._restore_run import RestoreJob, RestoreRunner

if TYPE_CHECKING:
    import napari

class RestoreWidget(Container):
    """Restore a time-lapse layer with the diffusion prior (SVI, Kwon & Ye, ICLR 2025)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self._viewer = napari_viewer
        self.run_panel = RunPanel("Restore", self._start, self._cancel)
        self._runner = RestoreRunner(napari_viewer, self.run_panel, lock=self._lock, on_done=self._on_done,
                                     closed=lambda: getattr(self, "_closed", False))
        self.image = ComboBox(label="Time-lapse", choices=self._image_layers)
        self.image.tooltip = "The measured (degraded) stack; napari's first axis is usually time"
        self.time_axis = SpinBox(label="Time axis", value=0, min=0, max=0)
        self.image_msg = Message()
        self.image_info = Label(value="")
        self._region = RegionFields(napari_viewer, on_moved=self._on_region_moved)
        self.region, self.first_frame, self.last_frame = self._region.region, self._region.first_frame, self._region.last_frame
        self.region_msg = self._region.msg
        self.operator = OperatorFields(napari_viewer, restoring=True, on_change=self.validate)
        self.noise = LineEdit(label="Noise σ (data units)", value="auto")
        self.noise.tooltip = (
            "auto: estimated from the data; none: noiseless; or a standard deviation in intensity units"
        )
        self.noise_msg = Message()
        self.estimate_panel = EstimatePanel(self)  # "Estimate from data": fills the PSF and noise fields
        self.prior = ComboBox(label="Prior", choices=self._prior_choices)
        self.prior_path = FileEdit(label="Prior path", mode="d")
        self.prior_msg = Message()
        self.steps = SpinBox(label="Steps", value=5, min=1, max=1000)
        self.steps.tooltip = ("Denoising steps (network evaluations per frame) from the warm start: the TV estimate "
                              "diffused to t=200 (the paper: 20 from pure noise)")
        self.eta_auto = CheckBox(text="η automatic: 1 with noise, 0.15 without", value=True)
        self.eta_auto.tooltip = "DDIM stochasticity chosen from the noise level (restore's eta='auto')"
        self.eta = FloatSpinBox(label="η (stochasticity)", value=1.0, min=0.0, max=1.0, step=0.05, enabled=False)
        self.cg_steps = SpinBox(label="CG steps", value=5, min=0, max=200)
        self.cg_steps.tooltip = "Conjugate-gradient iterations of data consistency after every step; 5 in the paper"
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self.samples = SpinBox(label="Posterior samples", value=1, min=1, max=64)
        self.samples.tooltip = "More than 1: the result is their mean, plus an uncertainty layer (std per pixel)"
        self.device = ComboBox(label="Device", choices=device_choices())
        self.threads = SpinBox(label="CPU threads", value=default_threads(), min=1, max=1024)
        self.threads.tooltip = (
            "PyTorch's CPU threads; default: the cores napari may use. On a machine busy with other work fewer are faster"
        )
        self.preview_every = SpinBox(label="Live preview every", value=0, min=0, max=1000)
        self.preview_every.tooltip = "Show the current estimate every n steps as a temporary layer (0: off)"
        self.sampler_msg = Message()
        self.advanced = CheckBox(text="Advanced settings", value=False)
        self.advanced.tooltip = "Show η, CG steps, seed, device and the live preview"  # a long text widens the dock
        self.cost_info = Label(value="")
        open_ranges(self.steps, self.cg_steps, self.samples, self.preview_every, self.eta, self.seed)  # checked, not clamped
        super().__init__(
            widgets=[
                self.image,
                self.time_axis,
                self.image_msg,
                self.image_info,
                *self._region.widgets,
                self.operator,
                self.noise,
                self.noise_msg,
                self.estimate_panel,
                self.prior,
                self.prior_path,
                self.prior_msg,
                self.steps,
                self.samples,
                self.advanced,
                self.eta_auto,
                self.eta,
                self.cg_steps,
                self.seed,
                self.device,
                self.threads,
                self.preview_every,
                self.sampler_msg,
                self.cost_info,
                self.run_panel,
            ]
        )
        make_scrollable(self)  # three docks of this height do not fit a laptop screen
        self.image_info.native.setWordWrap(True)
        self.cost_info.native.setWordWrap(True)
        self._advanced_fields = (self.eta_auto, self.eta, self.cg_steps, self.seed, self.device, self.preview_every)
        self.advanced.changed.connect(self._show_advanced)
        self.eta_auto.changed.connect(lambda v: setattr(self.eta, "enabled", not v))
        self._show_advanced()
        self._cost_estimate = None
        self._stale = False  # the region moved during a run: check the form again after it
        self.image.changed.connect(self._on_image)
        self.time_axis.changed.connect(self._on_time_axis)
        for w in (self.noise, self.prior, self.prior_path, self.steps, self.cg_steps, self.samples, self.eta,
                  self.seed, self.preview_every, self.device, self.region, self.first_frame, self.last_frame):
            w.changed.connect(self.validate)
        stop_worker_on_close(self, self._cancel)
        self._viewer.layers.events.inserted.connect(self.reset_choices)
        self._viewer.layers.events.removed.connect(self.reset_choices)
        self._viewer.layers.events.removed.connect(self._on_image)  # a removed input leaves no stale line
        self.native.destroyed.connect(self._disconnect_viewer)
        TRAINED_PRIORS.changed.connect(self.reset_choices)
        active = self._viewer.layers.selection.active
        if active is not None and active in self.image.choices:
            self.image.value = active
        self._on_image()

    # ------------------------------------------------------------------ the run, in _restore_run
    @property
    def _worker(self):
        """The running worker, or ``None`` once a run has ended and shown everything."""
        return self._runner.worker

    @property
    def restored_layer(self):
        return self._runner.restored_layer

    @property
    def uncertainty_layer(self):
        return self._runner.uncertainty_layer

    def _show_advanced(self, *_):
        for w in self._advanced_fields:
            w.visible = bool(self.advanced.value)

    def _disconnect_viewer(self, *_):
        self._viewer.layers.events.removed.disconnect(self._on_image)
        self._region.disconnect()

    def _on_region_moved(self) -> None:
        """The view or the chosen rectangle moved: check again, unless a run uses the region now."""
        if self._worker is None:
            self.validate()
        else:
            self._stale = True

    def _on_done(self) -> None:
        if self._stale:
            self._stale = False
            self.validate()

    def crop(self) -> Crop:
        """Frames and pixels to restore, from the frame range and the region (ValueError says why not)."""
        return self._region.crop(self.image.value, self.input_shape())

    # ------------------------------------------------------------------ choices
    def _image_layers(self, _widget=None) -> list:
        import napari

        preview = self._runner.preview_layer
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, napari.layers.Image) and layer is not preview
        ]

    def _prior_choices(self, _widget=None) -> list:
        trained = [(f"trained: {Path(f).name}", f) for f in TRAINED_PRIORS.folders]
        return [("default (bundled)", "default"), *trained, ("folder…", PRIOR_FOLDER), ("file…", PRIOR_FILE)]

    # ------------------------------------------------------------------ input
    def _on_image(self, *_):
        layer = self.image.value
        if layer is not None:
            ndim = np.ndim(layer.data) if not layer.multiscale else len(layer.data[0].shape)
            self.time_axis.max = max(ndim - 3, 0)
            record = layer.metadata.get("napari_svi") if isinstance(layer.metadata, dict) else None
            if isinstance(record, dict):
                self._prefill(record)
        self.operator.set_input(layer, self.time_axis.value)
        self._region.reset_frames(layer, self.input_shape())
        self.validate()

    def _on_time_axis(self, *_):
        self.operator.set_input(self.image.value, self.time_axis.value)
        self._region.reset_frames(self.image.value, self.input_shape(), force=True)
        self.validate()

    def _prefill(self, record: dict) -> None:
        """Take the forward model (and noise level) a measurement layer records, e.g. the sample's."""
        if not self.operator.set_from_record(record):
            return
        if isinstance(record.get("time_axis"), int) and record["time_axis"] <= self.time_axis.max:
            self.time_axis.value = record["time_axis"]
        sigma = record.get("noise_sigma")
        if isinstance(sigma, (int, float)) and sigma > 0:
            self.noise.value = f"{sigma:.6g}"
        mask_name = record.get("mask_layer")
        if mask_name and mask_name in self._viewer.layers:
            self.operator.mask_layer.value = self._viewer.layers[mask_name]

    def input_shape(self) -> tuple[int, int, int] | None:
        layer = self.image.value
        if layer is None or layer.rgb or layer.multiscale or np.ndim(layer.data) < 3:
            return None
        return stack_shape(np.shape(layer.data), self.time_axis.value)

    # ------------------------------------------------------------------ checks
    def validate(self, *_) -> bool:
        """Check every field; show each reason under its field; enable Restore only when all are fine."""
        layer = self.image.value
        image_err = image_problem(layer)
        self.image_msg.show_message(image_err)
        shape = None if image_err else self.input_shape()
        ok = image_err is None
        ok &= self.operator.validate(shape)
        cost = None
        region_err = None
        if shape is not None and ok:
            try:
                crop = self.crop()
                spec = self.cropped_spec(crop)
                spec.validate(crop.shape)
            except ValueError as err:
                region_err, ok = str(err), False
        self.region_msg.show_message(region_err)
        if shape is not None and ok:
            self.image_info.value = shape_line(np.shape(layer.data), self.time_axis.value, crop, crop.is_whole(shape),
                                               spec.true_shape(crop.shape))
            cost = restore_cost(np.shape(layer.data), shape, crop.shape, spec, steps=self.steps.value,
                                samples=self.sampler_runs(), device=self.device.value)
        else:
            self.image_info.value = ""
        ok &= self.noise_msg.check(lambda: parse_noise_sigma(self.noise.value))
        choice = self.prior.value
        self.prior_path.visible = choice in (PRIOR_FOLDER, PRIOR_FILE)
        if choice in (PRIOR_FOLDER, PRIOR_FILE):
            self.prior_path.mode = "d" if choice == PRIOR_FOLDER else "r"
        ok &= self.prior_msg.check(lambda: check_prior(choice, self.prior_path.value))
        limits = check_limits({"steps": self.steps.value, "samples": self.samples.value,
                               "cg_steps": self.cg_steps.value, "preview_every": self.preview_every.value,
                               "eta": self.eta.value, "seed": self.seed.value})
        self.sampler_msg.show_message(limits)
        ok &= limits is None
        self._cost_estimate = cost if ok else None
        self.cost_info.value = describe(cost) if ok and cost else ""
        self.run_panel.set_ready(bool(ok))
        return bool(ok)

    def cropped_spec(self, crop: Crop):
        """The operator of the fields for the region and frames only (the mask cut to them)."""
        spec = self.operator.spec(self.input_shape())
        if not crop.is_whole(self.input_shape()):
            spec.mask = crop.crop_mask(spec.mask_array())
        return spec

    def _confirm(self, text: str) -> bool:
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(self.native, "Restore time-lapse", text,
                                      QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    # ------------------------------------------------------------------ run
    def restore_kwargs(self) -> dict:
        """Keyword arguments of ``iter_restore`` besides data and operator."""
        return {
            "prior": check_prior(self.prior.value, self.prior_path.value),
            "time_axis": self.time_axis.value,
            "steps": self.steps.value,
            "eta": "auto" if self.eta_auto.value else float(self.eta.value),
            "cg_steps": self.cg_steps.value,
            "noise_sigma": parse_noise_sigma(self.noise.value),
            "seed": self.seed.value,
            "samples": self.samples.value,
            "device": self.device.value,
            "threads": self.threads.value,
            "preview_every": self.preview_every.value,
        }

    def sampler_runs(self) -> int:
        """Sampler runs per piece the restore will make: the samples, plus the held-out run that chooses the
        blend when the data are noisy and there are several samples (with one, that run is the result)."""
        try:
            noise = parse_noise_sigma(self.noise.value)
        except ValueError:
            noise = "auto"
        return PieceSolver(DEFAULT_START, DEFAULT_START_T, DEFAULT_BLEND).runs(None if noise is None else 1.0,
                                                                               self.samples.value)

    def _start(self) -> None:
        if self._worker is not None or not self.validate():
            return
        ask = question(self._cost_estimate)
        if ask and not self._confirm(ask):
            self.run_panel.set_status("Not started.")
            return
        layer = self.image.value
        crop = self.crop()
        kwargs = self.restore_kwargs()
        ax = kwargs["time_axis"]
        data = layer.data if crop.is_whole(self.input_shape()) else layer.data[crop.slices(np.ndim(layer.data), ax)]
        job = RestoreJob(layer, data, self.cropped_spec(crop), kwargs, crop, self._acquisition(),
                         plane_names(np.shape(data), ax, getattr(layer, "axis_labels", None)))
        self._stale = False
        self._runner.start(job, self._on_step)

    def _on_step(self, info: dict) -> None:
        self._runner.on_step(info)

    def _cancel(self) -> None:
        self._runner.cancel()

    def _lock(self, running: bool) -> None:
        """Fields are read-only while a run uses them, so that the form always matches its result."""
        for w in self:
            if w is not self.run_panel:
                w.enabled = not running
        if not running:
            self.eta.enabled = not self.eta_auto.value

    def _acquisition(self) -> dict | None:
        f = self.operator
        if f.temporal_kind.value != "exposure":
            return None
        return {"exposure_ms": f.exposure_ms.value, "frame_interval_ms": f.interval_ms.value}
