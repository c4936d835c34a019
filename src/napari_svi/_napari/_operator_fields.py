"""The forward-model fields shared by "Restore time-lapse" and "Simulate degradation".

They describe an :class:`napari_svi.operators.OperatorSpec` in a microscopist's units: frames,
exposure and frame interval in ms, NA, emission wavelength and pixel size in nm, pixels of the
input layer. Every field is checked as it changes and the reason shown under it; the live previews
draw the temporal kernel and the spatial PSF the core will use.

Sizes are in pixels of the *input layer*. When restoring with downsampling ``s`` the result's
pixels are ``s`` times smaller, so a sigma or a pixel size is converted for the PSF on the result's
grid (where :class:`OperatorSpec` applies it) by ``grid_factor``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Image, Label, SpinBox

from ..operators import OperatorSpec
from ..psf import spatial_psf, temporal_kernel, temporal_kernel_from_exposure
from ..psf_spec import parse_spatial_spec, parse_temporal_spec
from ._common import Message, layer_frame_interval_s, layer_pixel_size_nm, open_ranges
from ._psf_preview import fwhm_px, spatial_picture, temporal_picture

TEMPORAL_KINDS = [
    ("none", "none"),
    ("box of k frames", "box"),
    ("Gaussian", "gaussian"),
    ("from exposure and frame interval", "exposure"),
    ("from file", "file"),
]
SPATIAL_KINDS = [
    ("none", "none"),
    ("Gaussian", "gaussian"),
    ("Airy (widefield) from NA, λ, pixel size", "airy"),
    ("measured PSF image layer", "layer"),
]


def _num(x: float) -> str:
    """A number for a spec string: no trailing zeros."""
    return f"{float(x):.6g}"


class OperatorFields(Container):
    """Fields for the temporal PSF, temporal subsampling, spatial PSF, downsampling and mask.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Source of the PSF and mask layers.
    restoring : bool
        True in "Restore time-lapse" (the input is the measurement; the mask is at its resolution),
        False in "Simulate degradation" (the input is the true stack).
    on_change : callable
        Called after any field changed.
    """

    def __init__(self, viewer, *, restoring: bool, on_change=None):
        self._viewer = viewer
        self._restoring = restoring
        self._on_change = on_change
        self._input_layer = None
        self._time_axis = 0
        self._temporal_array: np.ndarray | None = None
        self._spatial_array: np.ndarray | None = None

        self.temporal_kind = ComboBox(label="Temporal PSF", choices=TEMPORAL_KINDS, value="box")
        self.temporal_kind.tooltip = "How each frame mixes neighbouring moments: exposure during motion"
        self.box_frames = SpinBox(label="Box length (frames)", value=7, min=1, max=9999)
        self.temporal_sigma = FloatSpinBox(label="σ (frames)", value=1.5, min=0.05, max=1000, step=0.1)
        self.exposure_ms = FloatSpinBox(label="Exposure (ms)", value=300.0, min=0.001, max=1e8, step=10)
        self.interval_ms = FloatSpinBox(label="Frame interval (ms)", value=100.0, min=0.001, max=1e8, step=10)
        self.interval_ms.tooltip = "Time between frames of the restored stack"
        self.temporal_file = FileEdit(label="Kernel file", mode="r", filter="*.txt *.csv *.npy *.tif *.tiff")
        self.temporal_boundary = ComboBox(label="Time boundary", choices=["symmetric", "circular"])
        self.temporal_boundary.tooltip = (
            "symmetric: the first and last frames are mirrored (a real acquisition); "
            "circular: the stack wraps around (as in the paper)"
        )
        self.temporal_subsample = SpinBox(label="Every n-th frame measured", value=1, min=1, max=64)
        self.temporal_subsample.tooltip = "n > 1: frame interpolation, the result has n times as many frames"
        self.temporal_msg = Message()
        self.temporal_preview = Image(label="Kernel preview")
        self.temporal_info = Label(value="")

        self.spatial_kind = ComboBox(label="Spatial PSF", choices=SPATIAL_KINDS, value="none")
        self.spatial_sigma = FloatSpinBox(label="σ (input pixels)", value=1.5, min=0.05, max=500, step=0.1)
        self.na = FloatSpinBox(label="NA", value=1.4, min=0.05, max=1.7, step=0.05)
        self.wavelength_nm = FloatSpinBox(label="Emission λ (nm)", value=520.0, min=200, max=2000, step=5)
        self.pixel_nm = FloatSpinBox(label="Pixel size (nm)", value=100.0, min=0.1, max=1e6, step=1)
        self.pixel_nm.tooltip = "Input layer's pixel size in the sample plane (camera pixel / magnification)"
        self.pixel_note = Label(value="")
        self.psf_layer = ComboBox(label="PSF image", choices=self._image_layers, nullable=True)
        self.spatial_msg = Message()
        self.spatial_preview = Image(label="PSF preview")
        self.spatial_info = Label(value="")

        self.downsample = SpinBox(label="Downsampling (×)", value=1, min=1, max=16)
        self.downsample.tooltip = (
            "The input's pixels are the mean of s × s true pixels: the result has s times more pixels per axis"
            if restoring
            else "Average s × s pixel blocks: the measurement has s times fewer pixels per axis"
        )
        self.downsample_msg = Message()
        mask_choices = self._mask_layers if restoring else self._mask_layers_or_random
        self.mask_layer = ComboBox(label="Mask", choices=mask_choices, nullable=True)
        self.mask_layer.tooltip = "Labels or image layer at the measurement's size; nonzero = observed pixel"
        self.mask_missing = CheckBox(text="nonzero marks missing pixels", value=False)
        self.missing_fraction = FloatSpinBox(label="Missing fraction", value=0.5, min=0.0, max=0.99, step=0.05)
        self.mask_msg = Message()

        widgets = [
            self.temporal_kind, self.box_frames, self.temporal_sigma, self.exposure_ms, self.interval_ms,
            self.temporal_file, self.temporal_boundary, self.temporal_subsample, self.temporal_msg,
            self.temporal_preview, self.temporal_info,
            self.spatial_kind, self.spatial_sigma, self.na, self.wavelength_nm, self.pixel_nm, self.pixel_note,
            self.psf_layer, self.spatial_msg, self.spatial_preview, self.spatial_info,
            self.downsample, self.downsample_msg, self.mask_layer, self.mask_missing, self.missing_fraction,
            self.mask_msg,
        ]  # fmt: skip
        super().__init__(widgets=widgets)
        self.margins = (0, 0, 0, 0)
        for label in (self.temporal_info, self.spatial_info, self.pixel_note):
            label.native.setWordWrap(True)
        for w in (self.temporal_preview, self.spatial_preview):
            w.min_height = 72
        for w in widgets:
            if hasattr(w, "changed") and not isinstance(w, (Label, Image)):
                w.changed.connect(self._changed)
        open_ranges(self.box_frames, self.temporal_sigma, self.exposure_ms, self.interval_ms, self.temporal_subsample,
                    self.spatial_sigma, self.na, self.wavelength_nm, self.pixel_nm, self.downsample)  # checked, not clamped
        self._update_visibility()

    # ------------------------------------------------------------------ choices
    def _image_layers(self, _widget=None) -> list:
        import napari

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, napari.layers.Image) and layer is not self._input_layer
        ]

    def _mask_layers(self, _widget=None) -> list:
        import napari

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, (napari.layers.Labels, napari.layers.Image)) and layer is not self._input_layer
        ]

    def _mask_layers_or_random(self, _widget=None) -> list:
        return [("random pixels missing", "random"), *self._mask_layers()]

    # ------------------------------------------------------------------ state
    def set_input(self, layer, time_axis: int) -> None:
        """The input layer changed: refresh choices and prefill the pixel size from its scale."""
        self._input_layer = layer
        self._time_axis = time_axis
        self.reset_choices()
        if layer is None:
            self.pixel_note.value = ""
            return
        nm, how = layer_pixel_size_nm(layer.scale, getattr(layer, "units", None))
        if nm is not None:
            self.pixel_nm.value = round(nm, 3)
        self.pixel_note.value = f"Pixel size {how}."
        interval_s = layer_frame_interval_s(layer.scale, getattr(layer, "units", None), time_axis)
        if interval_s:
            # the layer's frames are measured ones; the kernel works on the result's frames
            self.interval_ms.value = interval_s * 1000.0 / max(1, self.temporal_subsample.value)

    @property
    def grid_factor(self) -> int:
        """Result pixels per input pixel along an axis (the downsampling factor when restoring)."""
        return self.downsample.value if self._restoring else 1

    def _changed(self, *_):
        self._update_visibility()
        if self._on_change is not None:
            self._on_change()

    def _update_visibility(self) -> None:
        t = self.temporal_kind.value
        self.box_frames.visible = t == "box"
        self.temporal_sigma.visible = t == "gaussian"
        self.exposure_ms.visible = self.interval_ms.visible = t == "exposure"
        self.temporal_file.visible = t == "file"
        self.temporal_boundary.visible = t != "none"
        s = self.spatial_kind.value
        self.spatial_sigma.visible = s == "gaussian"
        self.na.visible = self.wavelength_nm.visible = self.pixel_nm.visible = self.pixel_note.visible = s == "airy"
        self.psf_layer.visible = s == "layer"
        mask = self.mask_layer.value
        self.mask_missing.visible = mask is not None and not isinstance(mask, str)
        self.missing_fraction.visible = isinstance(mask, str)

    # ------------------------------------------------------------------ to the core
    def temporal_psf(self):
        """The ``temporal_psf`` argument of :class:`OperatorSpec`."""
        kind = self.temporal_kind.value
        if kind == "none":
            return None
        if kind == "box":
            return f"uniform:{self.box_frames.value}"
        if kind == "gaussian":
            return f"gaussian:{_num(self.temporal_sigma.value)}"
        if kind == "exposure":
            return temporal_kernel_from_exposure(self.exposure_ms.value, self.interval_ms.value)
        path = str(self.temporal_file.value)
        if path in ("", "."):
            raise ValueError("Choose a file with the temporal kernel's weights.")
        return path

    def spatial_psf(self):
        """The ``spatial_psf`` argument of :class:`OperatorSpec`, on the result's pixel grid."""
        kind = self.spatial_kind.value
        g = self.grid_factor
        if kind == "none":
            return None
        if kind == "gaussian":
            return f"gaussian:{_num(self.spatial_sigma.value * g)}"
        if kind == "airy":
            return f"airy:{_num(self.na.value)},{_num(self.wavelength_nm.value)},{_num(self.pixel_nm.value / g)}"
        layer = self.psf_layer.value
        if layer is None:
            raise ValueError("Choose the image layer that holds the measured PSF.")
        psf = np.asarray(layer.data)
        psf = psf.reshape(psf.shape[-2:]) if psf.ndim > 2 and math.prod(psf.shape[:-2]) == 1 else psf
        if psf.ndim != 2:
            raise ValueError(f"The PSF layer must be a 2-D image; {layer.name!r} has shape {psf.shape}.")
        return psf

    def mask(self, measurement_shape: tuple[int, int, int], seed: int = 0):
        """The ``mask`` argument: None, the chosen layer's data (nonzero = observed), or a random mask."""
        choice = self.mask_layer.value
        if choice is None:
            return None
        if isinstance(choice, str):
            from ..degrade import random_mask

            return random_mask(measurement_shape, self.missing_fraction.value, seed=seed)
        data = np.asarray(choice.data)
        return data == 0 if self.mask_missing.value else data != 0

    def spec(self, measurement_shape: tuple[int, int, int] | None = None, seed: int = 0) -> OperatorSpec:
        """The :class:`OperatorSpec` the fields describe (raises ValueError)."""
        mask = None if measurement_shape is None else self.mask(measurement_shape, seed)
        return OperatorSpec(
            temporal_psf=self.temporal_psf(),
            temporal_boundary=self.temporal_boundary.value,
            temporal_subsample=self.temporal_subsample.value,
            spatial_psf=self.spatial_psf(),
            downsample=self.downsample.value,
            mask=mask,
        )

    def measurement_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(T, H, W) of the measurement: the input itself when restoring, A's output when simulating."""
        if self._restoring:
            return input_shape
        return tuple(
            OperatorSpec(
                temporal_subsample=self.temporal_subsample.value, downsample=self.downsample.value
            ).measurement_shape(input_shape)
        )

    # ------------------------------------------------------------------ checks
    def validate(self, input_shape: tuple[int, int, int] | None) -> bool:
        """Check each part against the input's (T, H, W); show messages and previews. True when valid."""
        ok = True
        shape = None
        if input_shape is not None:
            try:
                shape = self.measurement_shape(input_shape)
            except ValueError as err:
                self.downsample_msg.show_message(str(err))
                shape, ok = None, False

        def check(msg: Message, make_spec) -> bool:
            try:
                spec = make_spec()
                if shape is not None:
                    spec.validate(shape)
            except (ValueError, OSError) as err:
                msg.show_message(str(err))
                return False
            msg.show_message(None)
            return True

        if shape is not None or input_shape is None:
            ok &= check(self.downsample_msg, lambda: OperatorSpec(downsample=self.downsample.value))
        ok &= check(
            self.temporal_msg,
            lambda: OperatorSpec(
                temporal_psf=self.temporal_psf(),
                temporal_boundary=self.temporal_boundary.value,
                temporal_subsample=self.temporal_subsample.value,
            ),
        )
        ok &= check(
            self.spatial_msg, lambda: OperatorSpec(spatial_psf=self.spatial_psf(), downsample=self.downsample.value)
        )
        if shape is not None:
            ok &= check(self.mask_msg, lambda: OperatorSpec(mask=self.mask(shape)))
        else:
            self.mask_msg.show_message(None)
        self._update_previews()
        return bool(ok)

    def _update_previews(self) -> None:
        try:
            k = temporal_kernel(self.temporal_psf())
        except (ValueError, OSError):
            k = None
            self.temporal_info.value = ""
        else:
            if k is None:
                self.temporal_info.value = "No temporal blur."
            else:
                self.temporal_info.value = f"{len(k)} frames · centre weight {k[len(k) // 2]:.3g}"
        self.temporal_preview.set_data(temporal_picture(k))
        try:
            p = spatial_psf(self.spatial_psf())
        except (ValueError, OSError):
            p = None
            self.spatial_info.value = ""
        else:
            g = self.grid_factor
            if p is None:
                self.spatial_info.value = "No spatial blur."
            else:
                grid = " (result pixels)" if g > 1 else ""
                self.spatial_info.value = f"{p.shape[0]} × {p.shape[1]} px{grid} · FWHM {fwhm_px(p):.2f} px{grid}"
        self.spatial_preview.set_data(spatial_picture(p))

    # ------------------------------------------------------------------ from layer metadata
    def set_from_record(self, record: dict) -> bool:
        """Prefill from a napari-svi record (``layer.metadata["napari_svi"]``) that names an operator.

        Returns True when something was set. Arrays (measured PSFs, masks) cannot be prefilled.
        """
        op = record.get("operator") if isinstance(record, dict) else None
        if not isinstance(op, dict):
            return False
        s = int(op.get("downsample") or 1)
        with self.changed.blocked():
            self.downsample.value = s
            self.temporal_subsample.value = int(op.get("temporal_subsample") or 1)
            if op.get("temporal_boundary") in ("symmetric", "circular"):
                self.temporal_boundary.value = op["temporal_boundary"]
            self._set_temporal(op.get("temporal_psf"), record.get("acquisition"))
            self._set_spatial(op.get("spatial_psf"), s if self._restoring else 1)
        self._changed()
        return True

    def _set_temporal(self, value, acquisition: dict | None = None) -> None:
        if isinstance(acquisition, dict) and {"exposure_ms", "frame_interval_ms"} <= set(acquisition):
            self.temporal_kind.value = "exposure"
            self.exposure_ms.value = float(acquisition["exposure_ms"])
            self.interval_ms.value = float(acquisition["frame_interval_ms"])
            return
        named = _parsed(parse_temporal_spec, value)
        if value is None or named == ("none", ()):
            self.temporal_kind.value = "none"
        elif named is not None and named[0] == "uniform":
            self.temporal_kind.value = "box"
            self.box_frames.value = named[1][0]
        elif named is not None and named[0] == "gaussian":
            self.temporal_kind.value = "gaussian"
            self.temporal_sigma.value = named[1][0]
        elif isinstance(value, str) and Path(value).suffix:
            self.temporal_kind.value = "file"
            self.temporal_file.value = value

    def _set_spatial(self, value, g: int) -> None:
        named = _parsed(parse_spatial_spec, value)
        if value is None or named == ("none", ()):
            self.spatial_kind.value = "none"
        elif named is not None and named[0] == "gaussian":
            self.spatial_kind.value = "gaussian"
            self.spatial_sigma.value = named[1][0] / g
        elif named is not None and named[0] == "airy":
            na, wl, px = named[1]
            self.spatial_kind.value = "airy"
            self.na.value, self.wavelength_nm.value, self.pixel_nm.value = na, wl, px * g


def _parsed(parse, value) -> tuple[str, tuple] | None:
    """A record's PSF string through the core's parser; a string it rejects is left unset (None)."""
    try:
        return parse(value)
    except ValueError:
        return None
