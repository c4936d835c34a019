"""The "Estimate from data" button of the Restore widget: blind PSF and noise estimate, off the GUI thread.

One click runs :func:`napari_svi.estimate.estimate_blur` on the frames and region the form restores
(a napari ``thread_worker``: it takes seconds), then fills the temporal PSF, the spatial PSF and the
noise fields and says how sure the estimate is. The fields stay editable; nothing else changes.

"Structure" names what was imaged (:mod:`napari_svi.estimate_reference`): one of the default prior's
structures, or a TIFF of sharp images of it. The spatial blur is then measured against that structure's
own spectrum, which tells a smooth structure (nuclei, cell walls) from a blurred one.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton

from ._common import Message

LEVEL_TEXT = {"high": "sure", "medium": "fairly sure", "low": "unsure"}
#: The Structure choices: (label, what estimate_blur's ``structure`` gets); FILE: the TIFF in the file field.
UNNAMED, FILE = "not named", "sharp images (TIFF)…"
STRUCTURE_CHOICES = (UNNAMED, "actin", "mitochondria", "nuclei", "walls", FILE)


def describe(est) -> str:
    """One paragraph for the form: what was filled in and how sure each value is."""
    t, s = est.confidence["temporal_psf"], est.confidence["spatial_psf"]

    def span(conf: dict, unit: str) -> str:
        interval = conf.get("interval")
        lo, hi = (round(interval[0], 2), round(interval[1], 2)) if interval else (None, None)
        return f", plausible {lo:g}–{hi:g} {unit}" if lo is not None and hi != lo else ""

    temporal = {"none": "no temporal blur"}.get(est.temporal_psf) or (
        f"box of {est.temporal_psf.split(':')[1]} frames" if est.temporal_psf.startswith("uniform")
        else f"Gaussian σ {est.temporal_psf.split(':')[1]} frames")
    other = f"; {t['alternative']} fits almost as well" if t.get("level") == "low" and t.get("alternative") \
        and est.temporal_psf != "none" else ""
    other += ", read from the field's drift" if t.get("method") == "drift model" else ""
    spatial = "no spatial blur" if est.spatial_psf == "none" else f"Gaussian σ {est.spatial_psf.split(':')[1]} px"
    if s.get("method") == "reference":
        spatial += f" beyond the {s['reference']} reference"
    return (f"Estimated in {est.seconds:.1f} s: {temporal}{span(t, 'frames')} ({LEVEL_TEXT[t['level']]}{other}); "
            f"{spatial}{span(s, 'px')} ({LEVEL_TEXT[s['level']]}); noise σ {est.noise_sigma:.4g}. "
            "Check and edit the fields before restoring.")


class EstimatePanel(Container):
    """A button and a line of text; ``form`` is the :class:`RestoreWidget` whose fields it fills."""

    def __init__(self, form):
        self._form = form
        self.button = PushButton(text="Estimate from data")
        self.button.tooltip = ("Estimate the temporal and spatial blur and the noise from the chosen frames and "
                               "region, and fill them in (seconds; every field stays editable)")
        self.structure = ComboBox(label="Structure", choices=STRUCTURE_CHOICES, value=UNNAMED)
        self.structure.tooltip = ("What was imaged: the spatial blur is measured against sharp images of it (the "
                                  "default prior's, or your TIFF), which tells smooth structures from blurred ones. "
                                  "'not named': the training images of the chosen prior if it was trained with napari-svi, "
                                  "else a generic spectrum, which reads a 1 px blur of nuclei as none")
        self.reference_file = FileEdit(label="Sharp images", mode="r", filter="*.tif *.tiff")
        self.reference_file.tooltip = "A TIFF of sharp, in-focus images of the structure imaged (2-D or a stack)"
        self.reference_file.visible = False
        self.info = Label(value="")
        self.msg = Message()
        super().__init__(widgets=[self.structure, self.reference_file, self.button, self.info, self.msg])
        self.info.native.setWordWrap(True)
        self.worker = None
        self.estimate = None  # the last BlurEstimate applied to the form
        self.button.changed.connect(self.start)
        self.structure.changed.connect(lambda value: setattr(self.reference_file, "visible", value == FILE))
        self.native.destroyed.connect(self._forget_worker)

    def data(self):
        """The array, time axis and structure the estimate reads: the form's layer, frames and region, and the
        Structure choice (ValueError says why not)."""
        form = self._form
        layer, shape = form.image.value, form.input_shape()
        if layer is None or shape is None or form.image_msg.text:
            raise ValueError(form.image_msg.text or "Choose a time-lapse layer first.")
        op = form.operator
        if op.downsample.value != 1 or op.temporal_subsample.value != 1 or op.mask_layer.value is not None:
            raise ValueError("Estimate from data needs the stack at full resolution and fully observed: "
                             "set downsampling and every-n-th frame to 1 and no mask.")
        crop = form.crop()
        axis = form.time_axis.value
        structure = self.structure_value()  # a missing reference file is said before any work
        data = layer.data if crop.is_whole(shape) else layer.data[crop.slices(np.ndim(layer.data), axis)]
        return data, axis, structure

    def structure_value(self):
        """What ``estimate_blur`` gets as ``structure``: None, a structure's name, the reference TIFF's path, or
        the references of the form's prior (not named)."""
        choice = self.structure.value
        if choice == UNNAMED:  # the chosen prior's training images when it carries them (napari-svi train)
            from ..estimate_reference import prior_references
            from ._restore_checks import check_prior

            try:
                prior = check_prior(self._form.prior.value, self._form.prior_path.value)
            except ValueError:  # no usable prior chosen: the form says why; the estimate needs none
                return None
            return prior_references(prior)
        if choice != FILE:
            return choice
        path = self.reference_file.value
        if path is None or not str(path).strip() or not path.is_file():
            raise ValueError("Structure: choose a TIFF of sharp images of the structure (or another choice).")
        return str(path)

    def start(self, *_) -> None:
        if self.worker is not None:
            return
        try:
            data, axis, structure = self.data()
        except ValueError as err:
            self.msg.show_message(str(err))
            return
        from napari.qt.threading import create_worker

        from ..estimate import estimate_blur

        self.msg.show_message(None)
        self.info.value = "Estimating the blur and the noise…"
        self.button.enabled = False
        self.worker = create_worker(estimate_blur, data, time_axis=axis, structure=structure,
                                    _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self.apply)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._done)
        self.worker.start()

    def apply(self, est) -> None:
        """Fill the form's temporal PSF, spatial PSF (input pixels) and noise fields from ``est``."""
        op = self._form.operator
        with op.changed.blocked():
            op._set_temporal(est.temporal_psf)
            op._set_spatial(est.spatial_psf, 1)
        op._changed()
        self._form.noise.value = f"{est.noise_sigma:.4g}"
        self.estimate = est
        self.info.value = describe(est)
        self._fit_info()

    def _fit_info(self) -> None:
        """Give the wrapped text the height it needs (a wrapped label in a scrolled dock is otherwise cut)."""
        label = self.info.native
        label.setMinimumHeight(label.heightForWidth(max(label.width(), 240)))

    def _failed(self, err: Exception) -> None:
        self.info.value = ""
        self.msg.show_message(f"Estimate failed: {err}")

    def _done(self) -> None:
        self.worker = None
        self.button.enabled = True

    def _forget_worker(self, *_) -> None:
        """The dock went away during an estimate: its result must not touch deleted widgets."""
        if self.worker is not None:
            for signal in (self.worker.returned, self.worker.errored, self.worker.finished):
                signal.disconnect()
