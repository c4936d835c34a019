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
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, SpinBox

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
from ._operator_fields import OperatorFields

if TYPE_CHECKING:
    import napari

PRIOR_FOLDER, PRIOR_FILE = "__folder__", "__file__"
PRIOR_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")
STAGE_TEXT = {"loading prior": "Loading the prior…", "estimating noise": "Estimating the noise…",
              "planning windows": "Planning windows…"}


def parse_noise(text: str) -> float | str | None:
    """The noise field: ``"auto"``, ``"none"``/``"0"`` (noiseless) or a number >= 0 in data units."""
    t = str(text).strip().lower()
    if t in ("auto", ""):
        return "auto"
    if t in ("none", "noiseless", "0", "0.0"):
        return None
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"Type 'auto', 'none' or a number in the layer's intensity units, not {text!r}.") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"The noise level must be a number >= 0, not {text!r}.")
    return value


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
        self.operator = OperatorFields(napari_viewer, restoring=True, on_change=self.validate)
        self.noise = LineEdit(label="Noise σ (data units)", value="auto")
        self.noise.tooltip = (
            "auto: estimated from the data; none: noiseless; or a standard deviation in intensity units"
        )
        self.noise_msg = Message()
        self.prior = ComboBox(label="Prior", choices=self._prior_choices)
        self.prior_path = FileEdit(label="Prior path", mode="d")
        self.prior_msg = Message()
        self.steps = SpinBox(label="Steps", value=20, min=1, max=1000)
        self.steps.tooltip = "Denoising steps (network evaluations per frame); 20 in the paper"
        self.eta = FloatSpinBox(label="η (stochasticity)", value=0.15, min=0.0, max=1.0, step=0.05)
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
        self.run_panel = RunPanel("Restore", self._start, self._cancel)
        super().__init__(
            widgets=[
                self.image,
                self.time_axis,
                self.image_msg,
                self.image_info,
                self.operator,
                self.noise,
                self.noise_msg,
                self.prior,
                self.prior_path,
                self.prior_msg,
                self.steps,
                self.eta,
                self.cg_steps,
                self.seed,
                self.samples,
                self.device,
                self.threads,
                self.preview_every,
                self.run_panel,
            ]
        )
        self.image_info.native.setWordWrap(True)
        self._worker = None
        self._outcome = ""
        self.restored_layer = self.uncertainty_layer = None
        self.image.changed.connect(self._on_image)
        self.time_axis.changed.connect(self._on_time_axis)
        for w in (self.noise, self.prior, self.prior_path):
            w.changed.connect(self.validate)
        stop_worker_on_close(self, self._cancel)
        self._viewer.layers.events.inserted.connect(self.reset_choices)
        self._viewer.layers.events.removed.connect(self.reset_choices)
        TRAINED_PRIORS.changed.connect(self.reset_choices)
        active = self._viewer.layers.selection.active
        if active is not None and active in self.image.choices:
            self.image.value = active
        self._on_image()

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
        self.validate()

    def _on_time_axis(self, *_):
        self.operator.set_input(self.image.value, self.time_axis.value)
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
        image_err = None
        if layer is None:
            image_err = "Choose the image layer to restore."
        elif layer.rgb:
            image_err = "RGB layers are not supported: split the channels first."
        elif layer.multiscale:
            image_err = "Multiscale layers are not supported: open the full-resolution level as its own layer."
        elif np.ndim(layer.data) < 3:
            image_err = f"A time-lapse needs a time axis and two image axes; {layer.name!r} is {np.ndim(layer.data)}-D."
        self.image_msg.show_message(image_err)
        shape = None if image_err else self.input_shape()
        ok = image_err is None
        ok &= self.operator.validate(shape)
        if shape is not None and ok:
            spec = self.operator.spec(shape)
            t, h, w = spec.true_shape(shape)
            extra = math.prod(np.shape(layer.data)) // math.prod(shape)
            stacks = f" × {extra} stacks" if extra > 1 else ""
            self.image_info.value = f"{shape[0]} × {shape[1]} × {shape[2]} (T × Y × X){stacks} → result {t} × {h} × {w}"
        else:
            self.image_info.value = ""
        try:
            parse_noise(self.noise.value)
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
        self.run_panel.set_ready(bool(ok))
        return bool(ok)

    # ------------------------------------------------------------------ run
    def restore_kwargs(self) -> dict:
        """Keyword arguments of ``iter_restore`` besides data and operator."""
        return {
            "prior": check_prior(self.prior.value, self.prior_path.value),
            "time_axis": self.time_axis.value,
            "steps": self.steps.value,
            "eta": float(self.eta.value),
            "cg_steps": self.cg_steps.value,
            "noise_sigma": parse_noise(self.noise.value),
            "seed": self.seed.value,
            "samples": self.samples.value,
            "device": self.device.value,
            "threads": self.threads.value,
            "preview_every": self.preview_every.value,
        }

    def _start(self) -> None:
        if self._worker is not None or not self.validate():
            return
        from napari.qt.threading import create_worker

        from ..restore import iter_restore

        layer = self.image.value
        spec = self.operator.spec(self.input_shape())
        kwargs = self.restore_kwargs()
        self._run = {"layer": layer, "spec": spec, "kwargs": kwargs, "acquisition": self._acquisition()}
        self._worker = create_worker(
            guarded, iter_restore, layer.data, spec, **kwargs, _start_thread=False, _ignore_errors=True
        )
        self._worker.yielded.connect(self._on_step)
        self._worker.returned.connect(self._on_result)
        self._worker.errored.connect(self._on_error)
        self._worker.aborted.connect(self._on_aborted)
        self._worker.finished.connect(self._on_finished)
        self.run_panel.started("Checking the data…")
        self._worker.start()

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
        return result_geometry(
            self._run["layer"], self._run["kwargs"]["time_axis"], spec.temporal_subsample, spec.downsample
        )

    def _remove_preview(self) -> None:
        if self._preview_layer is not None and self._preview_layer in self._viewer.layers:
            self._viewer.layers.remove(self._preview_layer)
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
        self.run_panel.stopped(self._outcome)
        self._outcome = ""
        self._worker = None
