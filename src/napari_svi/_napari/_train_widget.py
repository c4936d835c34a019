"""Dock widget "Train prior": train a diffusion prior on image layers of the lab's own sample.

Calls :func:`napari_svi.training.train` in a worker thread; the prior folder it writes (weights,
``config.json`` with the training record, ``loss.csv``) can be picked in "Restore time-lapse"
straight away. Stopping keeps what was learnt: the folder holds a usable prior and a checkpoint,
and training again into the same folder with the same settings resumes.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, Select, SpinBox

from ._common import TRAINED_PRIORS, Message, RunPanel, device_choices, guarded, make_scrollable, stop_worker_on_close

if TYPE_CHECKING:
    import napari

# name -> (UNet settings, what the user reads)
MODEL_SIZES = {
    "small": ({"base_channels": 16, "channel_mults": (1, 2, 2)}, "small · 0.4 M parameters · fast on a CPU"),
    "medium": ({"base_channels": 32, "channel_mults": (1, 2, 3, 4)}, "medium · 5 M parameters · as the default prior"),
    "large": ({"base_channels": 64, "channel_mults": (1, 2, 3, 4)}, "large · 21 M parameters · needs a GPU"),
}


def train_steps(images, out_dir, config, device, stop: threading.Event, data_sources):
    """Generator over ``train``'s progress dicts; returns the prior folder.

    ``train`` reports through a callback, so it runs in a helper thread that feeds a queue; setting
    ``stop`` makes the callback ask ``train`` to save a checkpoint and return.
    """
    from ..priors.loading import resolve_device
    from ..training import train

    device = resolve_device(device)
    updates: queue.Queue = queue.Queue()
    outcome: dict = {}

    def callback(info: dict) -> bool:
        updates.put(info)
        return stop.is_set()

    def target() -> None:
        try:
            outcome["folder"] = train(
                images, out_dir, config, device=device, callback=callback, data_sources=data_sources
            )
        except BaseException as err:  # handed to the worker thread below
            outcome["error"] = err
        finally:
            updates.put(None)

    thread = threading.Thread(target=target, name="napari-svi-train", daemon=True)
    thread.start()
    while (info := updates.get()) is not None:
        yield info
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["folder"]


class TrainWidget(Container):
    """Train a noise-prediction UNet prior on still images (2-D layers or stacks of frames)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self._viewer = napari_viewer
        self.images = Select(label="Training images", choices=self._image_layers)
        self.images.tooltip = "Image layers of your sample (2-D, or stacks whose frames are used as stills)"
        self.images_msg = Message()
        self.out_dir = FileEdit(label="Prior folder", mode="d", value=str(Path.home() / "napari-svi-prior"))
        self.out_dir.tooltip = "Folder for the prior; training into a folder with a checkpoint resumes it"
        self.out_msg = Message()
        self.model_size = ComboBox(
            label="Model size", value="small", choices=[(text, key) for key, (_, text) in MODEL_SIZES.items()]
        )
        self.steps = SpinBox(label="Training steps", value=4000, min=1, max=10_000_000, step=100)
        self.batch_size = SpinBox(label="Batch size", value=16, min=1, max=1024)
        self.patch_size = SpinBox(label="Patch size (px)", value=64, min=8, max=2048, step=8)
        self.patch_msg = Message()
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self.device = ComboBox(label="Device", choices=device_choices())
        self.hint = Label(value="")
        self.hint.native.setWordWrap(True)
        self.run_panel = RunPanel("Train", self._start, self._stop, cancel_text="Stop (keeps the prior)")
        super().__init__(
            widgets=[
                self.images,
                self.images_msg,
                self.out_dir,
                self.out_msg,
                self.model_size,
                self.steps,
                self.batch_size,
                self.patch_size,
                self.patch_msg,
                self.seed,
                self.device,
                self.hint,
                self.run_panel,
            ]
        )
        make_scrollable(self)  # the dock scrolls instead of growing the window
        self._worker = None
        self._stop_event: threading.Event | None = None
        for w in (self.images, self.out_dir, self.model_size, self.patch_size):
            w.changed.connect(self.validate)
        stop_worker_on_close(self, self._stop)
        self._viewer.layers.events.inserted.connect(self.reset_choices)
        self._viewer.layers.events.removed.connect(self.reset_choices)
        self.validate()

    def _image_layers(self, _widget=None) -> list:
        import napari

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, napari.layers.Image) and not layer.rgb and not layer.multiscale
        ]

    def config(self):
        """The :class:`TrainConfig` the fields describe (raises ValueError with the reason)."""
        from ..priors.unet import UNetConfig
        from ..training import TrainConfig

        unet = UNetConfig(**MODEL_SIZES[self.model_size.value][0])
        return TrainConfig(
            steps=self.steps.value,
            batch_size=self.batch_size.value,
            patch_size=self.patch_size.value,
            seed=self.seed.value,
            unet=unet,
        )

    def validate(self, *_) -> bool:
        """Check the fields; show each problem under its field; enable Train only when all are fine."""
        layers = list(self.images.value or [])
        images_err = None if layers else "Choose at least one image layer."
        smallest = min((min(np.shape(layer.data)[-2:]) for layer in layers), default=None)
        if layers and min(np.ndim(layer.data) for layer in layers) < 2:
            images_err = "Training images must be 2-D or stacks of 2-D frames."
        self.images_msg.show_message(images_err)

        out_err = None
        out = Path(str(self.out_dir.value)).expanduser()
        if str(self.out_dir.value) in ("", "."):
            out_err = "Choose a folder for the prior."
        elif out.exists() and not out.is_dir():
            out_err = f"{out} is a file, not a folder."
        elif not out.exists() and not out.parent.is_dir():
            out_err = f"The parent folder {out.parent} does not exist."
        self.out_msg.show_message(out_err)
        resumes = (out / "checkpoint.pt").is_file()
        self.hint.value = (
            f"{out.name} holds a checkpoint: training resumes it if the settings match." if resumes else ""
        )

        patch_err = None
        try:
            cfg = self.config()
            if smallest is not None and cfg.patch_size > smallest:
                patch_err = f"Larger than the smallest training frame ({smallest} px)."
        except ValueError as err:
            patch_err = str(err)
        self.patch_msg.show_message(patch_err)

        ok = not (images_err or out_err or patch_err)
        self.run_panel.set_ready(ok)
        return ok

    def _start(self) -> None:
        if not self.validate():
            return
        from napari.qt.threading import create_worker

        layers = list(self.images.value)
        images = [np.asarray(layer.data) for layer in layers]
        sources = [f"napari layer {layer.name!r}, shape {tuple(np.shape(layer.data))}" for layer in layers]
        out = Path(str(self.out_dir.value)).expanduser()
        self._stop_event = threading.Event()
        self._worker = create_worker(
            guarded,
            train_steps,
            images,
            out,
            self.config(),
            self.device.value,
            self._stop_event,
            sources,
            _start_thread=False,
            _ignore_errors=True,
        )
        self._worker.yielded.connect(self._on_step)
        self._worker.returned.connect(self._on_done)
        self._worker.errored.connect(self._on_error)
        self._worker.finished.connect(self._on_finished)
        self.run_panel.started("Preparing the training images…")
        self._worker.start()

    def _stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    def _on_step(self, info: dict) -> None:
        self.run_panel.report(info["step"], info["steps"], extra=f"loss {info['loss']:.4f}")

    def _on_done(self, folder) -> None:
        from napari.utils.notifications import show_info

        TRAINED_PRIORS.add(str(folder))
        stopped = self._stop_event is not None and self._stop_event.is_set()
        what = "stopped; the prior so far is saved" if stopped else "finished"
        self._message = f"Training {what} in {folder}. Pick it under Prior in Restore time-lapse."
        show_info(self._message)

    def _on_error(self, err: Exception) -> None:
        from napari.utils.notifications import show_error

        self._message = f"Training failed: {err}"
        show_error(self._message)

    def _on_finished(self) -> None:
        self.run_panel.stopped(getattr(self, "_message", ""))
        self._message = ""
        self._worker = None
        self._stop_event = None
