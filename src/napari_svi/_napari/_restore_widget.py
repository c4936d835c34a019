"""Dock widget "Restore time-lapse": an image layer and the forward model in, a restored layer out.

The widget only translates: layer + fields -> :func:`napari_svi.restore.iter_restore` in a napari
``thread_worker`` (one yield per stage before sampling and per sampler step: progress, time left,
an optional live preview, cancel within one step) -> "<name> restored" (and "<name> uncertainty" with several posterior
samples) with the input's scale, translate and contrast limits and every parameter in
``layer.metadata["napari_svi"]``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, SpinBox

from ..noise import parse_noise_sigma
from ..priors.loading import DEFAULT_PRIOR_DIR
from ..threads import default_threads
from ._common import (
    TRAINED_PRIORS,
    Message,
    RunPanel,
    device_choices,
    guarded,
    jsonable,
    result_geometry,
    stack_shape,
    stop_worker_on_close,
)
from ._estimate import EstimatePanel
from ._operator_fields import OperatorFields
from ._restore_checks import (
    Crop,
    check_crop,
    check_limits,
    estimate_cost,
    make_scrollable,
    nonfinite_problem,
    open_ranges,
    pixel_box,
    plane_names,
    remove_layer,
)

if TYPE_CHECKING:
    import napari

PRIOR_FOLDER, PRIOR_FILE = "__folder__", "__file__"
PRIOR_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")
STAGE_TEXT = {"loading prior": "Loading the prior…", "estimating noise": "Estimating the noise…",
              "planning windows": "Planning windows…"}


def check_prior(choice: str, path) -> str:
    """The ``prior`` argument for the chosen entry, or ValueError with what is wrong."""
    if choice == "default":
        if not (DEFAULT_PRIOR_DIR / "config.json").is_file():
            raise ValueError("The bundled default prior is not installed; choose a prior folder or file.")
        return "default"
    if choice not in (PRIOR_FOLDER, PRIOR_FILE):
        folder = Path(choice)  # a folder trained in this session
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} no longer holds a prior (config.json is missing).")
        return str(folder)
    p = Path(str(path)).expanduser()
    if str(path) in ("", "."):
        raise ValueError("Choose the prior's folder or checkpoint file.")
    if not p.exists():
        raise ValueError(f"{p} does not exist.")
    if choice == PRIOR_FOLDER:
        if not p.is_dir():
            raise ValueError(f"{p} is a file; choose 'file…' for checkpoint files.")
        if not ((p / "config.json").is_file() or (p / "model_index.json").is_file()):
            raise ValueError(f"{p} has no config.json: not a napari-svi prior or diffusers folder.")
    elif p.suffix.lower() not in PRIOR_SUFFIXES:
        raise ValueError(f"Checkpoint files end in {', '.join(PRIOR_SUFFIXES)}; got {p.name}.")
    return str(p)


class RestoreWidget(Container):
    """Restore a time-lapse layer with the diffusion prior (SVI, Kwon & Ye, ICLR 2025)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self._viewer = napari_viewer
        self._preview_layer = None
        self.image = ComboBox(label="Time-lapse", choices=self._image_layers)
        self.image.tooltip = "The measured (degraded) stack; napari's first axis is usually time"
        self.time_axis = SpinBox(label="Time axis", value=0, min=0, max=0)
        self.image_msg = Message()
        self.image_info = Label(value="")
        self.region = ComboBox(label="Region", choices=self._region_choices)
        self.region.tooltip = "Restore a part first: the current view, or the first rectangle of a Shapes layer"
        self.first_frame = SpinBox(label="First frame", value=0)
        self.last_frame = SpinBox(label="Last frame", value=0)
        self.region_msg = Message()
        open_ranges(self.first_frame, self.last_frame)
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
        self.steps = SpinBox(label="Steps", value=20, min=1, max=1000)
        self.steps.tooltip = "Denoising steps (network evaluations per frame); 20 in the paper"
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
        self.advanced = CheckBox(text="Show advanced settings (η, CG steps, seed, device, preview)", value=False)
        self.cost_info = Label(value="")
        self.run_panel = RunPanel("Restore", self._start, self._cancel)
        open_ranges(self.steps, self.cg_steps, self.samples, self.preview_every, self.eta, self.seed)  # checked, not clamped
        super().__init__(
            widgets=[
                self.image,
                self.time_axis,
                self.image_msg,
                self.image_info,
                self.region,
                self.first_frame,
                self.last_frame,
                self.region_msg,
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
        self._worker = None
        self._outcome = ""
        self.restored_layer = self.uncertainty_layer = None
        self.image.changed.connect(self._on_image)
        self.time_axis.changed.connect(self._on_time_axis)
        self._frames_of = None  # the layer whose frame count the frame range was set for
        _camera(self._viewer).events.center.connect(self._on_view)
        _camera(self._viewer).events.zoom.connect(self._on_view)
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

    def _show_advanced(self, *_):
        for w in self._advanced_fields:
            w.visible = bool(self.advanced.value)

    def _disconnect_viewer(self, *_):
        self._viewer.layers.events.removed.disconnect(self._on_image)
        _camera(self._viewer).events.center.disconnect(self._on_view)
        _camera(self._viewer).events.zoom.disconnect(self._on_view)

    def _on_view(self, *_):
        if self.region.value == "view" and self._worker is None:
            self.validate()

    def _region_choices(self, _widget=None) -> list:
        import napari

        shapes = [(f"rectangle in {layer.name!r}", layer) for layer in self._viewer.layers
                  if isinstance(layer, napari.layers.Shapes)]
        return [("whole frames", "whole"), ("current view", "view"), *shapes]

    def crop(self) -> Crop:
        """Frames and pixels to restore, from the frame range and the region (ValueError says why not)."""
        shape = self.input_shape()
        t, h, w = shape
        t0, t1 = int(self.first_frame.value), int(self.last_frame.value) + 1
        choice = self.region.value
        layer = self.image.value
        if choice == "view":
            corners = self._view_corners()
            y0, y1, x0, x1 = pixel_box(corners, layer, shape)
        elif choice in (None, "whole"):
            y0, y1, x0, x1 = 0, h, 0, w
        else:
            if choice.ndim < 2 or len(choice.data) == 0:
                raise ValueError(f"Draw a rectangle in {choice.name!r} (the first shape sets the region).")
            vertices = np.asarray(choice.data[0], dtype=float)
            world = vertices * np.asarray(choice.scale) + np.asarray(choice.translate)
            y0, y1, x0, x1 = pixel_box(world[:, -2:], layer, shape)
        crop = Crop(t0, t1, y0, y1, x0, x1)
        problem = check_crop(crop, shape)
        if problem:
            raise ValueError(problem)
        return crop

    def _view_corners(self) -> np.ndarray:
        """Corners (Y, X) of the canvas in world coordinates."""
        try:
            from napari._qt.qt_viewer import QtViewer

            # through Qt's own tree from this dock: napari's private window attributes warn in plugins
            height, width = self.native.window().findChild(QtViewer).canvas.size
        except (ImportError, AttributeError, TypeError, ValueError):
            raise ValueError("The current view is not available; draw a rectangle in a Shapes layer instead.") from None
        zoom = float(_camera(self._viewer).zoom)
        cy, cx = (float(v) for v in _camera(self._viewer).center[-2:])
        hy, hx = height / 2 / zoom, width / 2 / zoom
        return np.array([[cy - hy, cx - hx], [cy + hy, cx + hx]])

    # ------------------------------------------------------------------ choices
    def _image_layers(self, _widget=None) -> list:
        import napari

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, napari.layers.Image) and layer is not getattr(self, "_preview_layer", None)
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
        self._reset_frames()
        self.validate()

    def _on_time_axis(self, *_):
        self.operator.set_input(self.image.value, self.time_axis.value)
        self._reset_frames(force=True)
        self.validate()

    def _reset_frames(self, force: bool = False) -> None:
        """A new input layer: the frame range is all of its frames."""
        layer = self.image.value
        if (layer is self._frames_of and not force) or self.input_shape() is None:
            return
        self._frames_of = layer
        with self.changed.blocked():
            self.first_frame.value = 0
            self.last_frame.value = self.input_shape()[0] - 1

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
        image_err = None
        if layer is None:
            image_err = "Choose the image layer to restore."
        elif layer.rgb:
            image_err = "RGB layers are not supported: split the channels first."
        elif layer.multiscale:
            image_err = "Multiscale layers are not supported: open the full-resolution level as its own layer."
        elif np.ndim(layer.data) < 3:
            image_err = f"A time-lapse needs a time axis and two image axes; {layer.name!r} is {np.ndim(layer.data)}-D."
        else:
            image_err = nonfinite_problem(layer.data)
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
            self.image_info.value = self._shape_line(layer, crop, spec)
            cost = self._cost(crop, spec)
        else:
            self.image_info.value = ""
        try:
            parse_noise_sigma(self.noise.value)
            self.noise_msg.show_message(None)
        except ValueError as err:
            self.noise_msg.show_message(str(err))
            ok = False
        choice = self.prior.value
        self.prior_path.visible = choice in (PRIOR_FOLDER, PRIOR_FILE)
        if choice in (PRIOR_FOLDER, PRIOR_FILE):
            self.prior_path.mode = "d" if choice == PRIOR_FOLDER else "r"
        try:
            check_prior(choice, self.prior_path.value)
            self.prior_msg.show_message(None)
        except ValueError as err:
            self.prior_msg.show_message(str(err))
            ok = False
        limits = check_limits({"steps": self.steps.value, "samples": self.samples.value,
                               "cg_steps": self.cg_steps.value, "preview_every": self.preview_every.value,
                               "eta": self.eta.value, "seed": self.seed.value})
        self.sampler_msg.show_message(limits)
        ok &= limits is None
        self._cost_estimate = cost if ok else None
        self.cost_info.value = cost[0].describe() + "".join(" " + w for w in cost[1]) if ok and cost else ""
        self.run_panel.set_ready(bool(ok))
        return bool(ok)

    def cropped_spec(self, crop: Crop):
        """The operator of the fields for the region and frames only (the mask cut to them)."""
        spec = self.operator.spec(self.input_shape())
        if not crop.is_whole(self.input_shape()):
            spec.mask = crop.crop_mask(spec.mask_array())
        return spec

    def _shape_line(self, layer, crop: Crop, spec) -> str:
        """Input and result sizes with every axis; a layer with more axes is restored plane by plane."""
        shape = crop.shape
        ax = self.time_axis.value
        full = [int(n) for n in np.shape(layer.data)]
        full[ax], full[-2], full[-1] = shape
        t, h, w = spec.true_shape(shape)
        result = list(full)
        result[ax], result[-2], result[-1] = t, h, w
        letters = ["T" if i == ax else "Y" if i == len(full) - 2 else "X" if i == len(full) - 1 else "Z" for i in range(len(full))]
        planes = len(plane_names(full, ax))
        by = f"; {planes} planes, restored one after the other" if planes > 1 else ""
        part = "" if crop.is_whole(self.input_shape()) else (
            f"frames {crop.t0}–{crop.t1 - 1}, rows {crop.y0}–{crop.y1 - 1}, columns {crop.x0}–{crop.x1 - 1}: ")
        return (f"{part}{' × '.join(map(str, full))} ({' × '.join(letters)}) → result "
                f"{' × '.join(map(str, result))}{by}")

    def _cost(self, crop: Crop, spec):
        """The cost estimate and the warnings that make Restore ask first."""
        from ..windows import DEFAULT_WINDOW

        shape = crop.shape
        stacks = max(1, math.prod(np.shape(self.image.value.data)) // math.prod(self.input_shape()))
        kernel = spec.temporal_kernel()
        cost = estimate_cost(spec.true_shape(shape), stacks, steps=max(1, self.steps.value),
                             samples=max(1, self.samples.value), window=DEFAULT_WINDOW,
                             margin=0 if kernel is None else len(kernel) - 1, device=self.device.value)
        warnings = []
        if kernel is not None and len(kernel) // 2 > shape[0] - 1:  # reaches beyond the mirrored stack
            warnings.append(f"The temporal PSF spans {len(kernel)} frames, far more than the stack's {shape[0]}: "
                            "most of it falls beyond the first and last frame.")
        return cost, warnings

    def _ask_first(self) -> str | None:
        """What Restore must confirm before it starts (beyond the machine), or ``None``."""
        estimate = getattr(self, "_cost_estimate", None)
        if not estimate:
            return None
        cost, warnings = estimate
        if not (cost.exceeds or warnings):
            return None
        return " ".join([cost.describe(), *warnings, "Start anyway?"])

    def _confirm(self, question: str) -> bool:
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(self.native, "Restore time-lapse", question,
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

    def _start(self) -> None:
        if self._worker is not None or not self.validate():
            return
        question = self._ask_first()
        if question and not self._confirm(question):
            self.run_panel.set_status("Not started.")
            return
        from napari.qt.threading import create_worker

        from ..restore import iter_restore

        layer = self.image.value
        crop = self.crop()
        spec = self.cropped_spec(crop)
        kwargs = self.restore_kwargs()
        data = layer.data if crop.is_whole(self.input_shape()) else layer.data[crop.slices(np.ndim(layer.data), kwargs["time_axis"])]
        self._run = {"layer": layer, "spec": spec, "kwargs": kwargs, "acquisition": self._acquisition(), "crop": crop,
                     "data_shape": np.shape(data)}
        self._worker = create_worker(
            guarded, iter_restore, data, spec, **kwargs, _start_thread=False, _ignore_errors=True
        )
        self._worker.yielded.connect(self._on_step)
        self._worker.returned.connect(self._on_result)
        self._worker.errored.connect(self._on_error)
        self._worker.aborted.connect(self._on_aborted)
        self._worker.finished.connect(self._on_finished)
        self._lock(True)
        self._close_old_notifications()
        self.run_panel.started("Checking the data…")
        self._worker.start()

    def _lock(self, running: bool) -> None:
        """Fields are read-only while a run uses them, so that the form always matches its result."""
        for w in self:
            if w is not self.run_panel:
                w.enabled = not running
        if not running:
            self.eta.enabled = not self.eta_auto.value

    def _close_old_notifications(self) -> None:
        """Close this widget's earlier toasts ("cancelled", "failed"): they are about a previous run."""
        try:
            from napari._qt.dialogs.qt_notification import NapariQtNotification

            window = self.native.window()
        except (ImportError, AttributeError):
            return
        for toast in window.findChildren(NapariQtNotification):
            text = toast.message.text() if hasattr(toast.message, "text") else str(toast.message)
            if "Restore time-lapse" in text:
                toast.close()

    def _acquisition(self) -> dict | None:
        f = self.operator
        if f.temporal_kind.value != "exposure":
            return None
        return {"exposure_ms": f.exposure_ms.value, "frame_interval_ms": f.interval_ms.value}

    def _cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()

    def _on_step(self, info: dict) -> None:
        stage = info.get("stage", "sampling")
        if stage == "window" and info["step"] == 0:
            stage = f"Step 0 / {info['total']} · sampling…"  # the first step: no time left to tell yet
        if stage not in ("window", "sampling"):
            self.run_panel.stage(STAGE_TEXT.get(stage, stage))
            return
        windows = info.get("windows") or 1
        extra = f"temporal window {info.get('window', 0) + 1} of {windows}" if windows > 1 else ""
        planes = self._run.setdefault("planes", plane_names(self._run["data_shape"], self._run["kwargs"]["time_axis"],
                                                            getattr(self._run["layer"], "axis_labels", None)))
        if planes:
            k = int(info.get("stack", 0))
            plane = f"plane {k + 1} of {len(planes)} ({planes[k]})"
            extra = f"{plane} · {extra}" if extra else plane
        self.run_panel.report(info["step"], info["total"], extra=extra)
        estimate = info.get("estimate")
        if estimate is not None:
            self._show_preview(estimate)

    def _show_preview(self, estimate: np.ndarray) -> None:
        layer = self._run["layer"]
        if self._preview_layer is not None and self._preview_layer in self._viewer.layers:
            self._preview_layer.data = estimate
            return
        self._preview_layer = self._add_like_input(estimate, name=f"{layer.name} preview")

    def _add_like_input(self, data, **kwargs):
        """Add an image layer placed and displayed like the input layer (result geometry)."""
        layer = self._run["layer"]
        scale, translate = self._geometry()
        return self._viewer.add_image(
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

    def _geometry(self):
        spec = self._run["spec"]
        layer, ax, crop = self._run["layer"], self._run["kwargs"]["time_axis"], self._run["crop"]
        scale, translate = result_geometry(layer, ax, spec.temporal_subsample, spec.downsample)
        translate = list(translate)  # the region's first frame and pixel, in the layer's world units
        translate[ax] += crop.t0 * float(layer.scale[ax])
        translate[-2] += crop.y0 * float(layer.scale[-2])
        translate[-1] += crop.x0 * float(layer.scale[-1])
        return scale, tuple(translate)

    def _remove_preview(self) -> None:
        if self._preview_layer is not None and self._preview_layer in self._viewer.layers:
            remove_layer(self._viewer, self._preview_layer)  # no half-second stall on cancel
        self._preview_layer = None

    def _on_result(self, result) -> None:
        layer = self._run["layer"]
        scale, translate = self._geometry()
        record = jsonable(
            {
                **result.metadata,
                "kind": "restored",
                "source_layer": layer.name,
                "source_scale": list(layer.scale),
                "source_translate": list(layer.translate),
                "source_region": self._run["crop"].record(),
                **({"acquisition": self._run["acquisition"]} if self._run["acquisition"] else {}),
            }
        )
        name = f"{layer.name} restored"
        preview, self._preview_layer = self._preview_layer, None
        if preview is not None and preview in self._viewer.layers:
            # the live preview becomes the result: removing a layer costs napari a full garbage
            # collection (about 0.3 s here), far more than updating one
            preview.data = result.restored
            preview.name = name
            preview.metadata = {"napari_svi": record}
            restored = preview
        else:
            restored = self._add_like_input(result.restored, name=name, metadata={"napari_svi": record})
        self.restored_layer, self.uncertainty_layer = restored, None
        for check in result.metadata.get("consistency") or []:
            if check.get("message"):
                from napari.utils.notifications import show_warning

                show_warning(f"Restore time-lapse: {check['message']}")
                break
        if result.std is not None:
            top = float(np.percentile(result.std, 99.9)) or 1.0
            self.uncertainty_layer = self._viewer.add_image(
                result.std,
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
        seconds = result.metadata.get("seconds", self.run_panel.elapsed)
        self._outcome = f"Done in {seconds:.0f} s: added {restored.name!r}."
        from napari.utils.notifications import show_info

        show_info(f"Restore time-lapse done in {seconds:.0f} s: added {restored.name!r}.")

    def _on_error(self, err: Exception) -> None:
        from napari.utils.notifications import show_error

        self._remove_preview()
        self._outcome = f"Failed: {err}"
        show_error(f"Restore time-lapse failed: {err}")

    def _on_aborted(self) -> None:
        from napari.utils.notifications import show_info

        self._remove_preview()
        self._outcome = "Cancelled; nothing was added."
        show_info("Restore time-lapse cancelled.")

    def _on_finished(self) -> None:
        self._lock(False)
        self.run_panel.stopped(self._outcome)
        self._outcome = ""
        self._worker = None


def _camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
