"""GUI tests of "Restore time-lapse": a real napari viewer, the real core and a tiny trained prior.

Run under a display: ``OMP_NUM_THREADS=1 xvfb-run -a pytest tests/test_napari_restore.py``.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("GUI tests need a display: run them under xvfb-run -a", allow_module_level=True)

pytestmark = pytest.mark.gui


def dock_restore(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-svi", "Restore time-lapse")
    return widget


def use_prior(widget, folder: str) -> None:
    widget.prior.value = "__folder__"
    widget.prior_path.value = folder


def click(widget) -> None:
    widget.run_panel.button.changed.emit(True)


def wait_done(qtbot, widget, timeout: int = 120_000) -> None:
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


def test_widget_builds_with_its_fields(make_napari_viewer, stack):
    from napari_svi._napari._restore_widget import RestoreWidget

    viewer = make_napari_viewer()
    viewer.add_image(stack, name="cells")
    _, first = viewer.window.add_plugin_dock_widget("napari-svi")  # what `napari -w napari-svi` opens
    assert isinstance(first, RestoreWidget)
    w = dock_restore(viewer)
    assert w.image.value is viewer.layers["cells"]
    assert w.operator.temporal_kind.choices == ("none", "box", "gaussian", "exposure", "file")
    assert w.operator.spatial_kind.choices == ("none", "gaussian", "airy", "layer")
    assert w.device.choices[:2] == ("auto", "cpu")
    assert (w.steps.value, w.eta_auto.value, w.cg_steps.value, w.samples.value) == (5, True, 5, 1)
    assert not w.eta.enabled  # eta follows the noise level until the user unticks "automatic"
    w.eta_auto.value = False
    assert w.eta.enabled
    w.eta.value = 0.3
    assert w.restore_kwargs()["eta"] == 0.3
    w.eta_auto.value = True
    assert w.restore_kwargs()["eta"] == "auto"
    assert w.run_panel.button.text == "Restore"
    # the live previews follow the fields: one bar per frame of the temporal kernel
    w.operator.temporal_kind.value = "box"
    w.operator.box_frames.value = 3
    assert "3 frames" in w.operator.temporal_info.value
    bars = w.operator.temporal_preview.image_rgba[40, :, :3]  # a row through all bars
    lit = np.any(bars != bars[0], axis=-1).astype(int)
    assert np.count_nonzero(np.diff(lit) == 1) == 3
    w.operator.temporal_kind.value = "exposure"
    w.operator.exposure_ms.value, w.operator.interval_ms.value = 200.0, 100.0
    assert "3 frames" in w.operator.temporal_info.value  # [0.25, 0.5, 0.25]


def test_pixel_size_is_prefilled_from_the_layer_scale(make_napari_viewer, stack):
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="um", scale=(1, 0.065, 0.065))
    viewer.add_image(stack, name="unit", scale=(0.5, 0.2, 0.2), units=("s", "um", "um"))
    w = dock_restore(viewer)
    w.operator.spatial_kind.value = "airy"
    w.image.value = viewer.layers["um"]
    assert w.operator.pixel_nm.value == pytest.approx(65.0)
    assert "read as µm" in w.operator.pixel_note.value
    w.image.value = viewer.layers["unit"]
    assert w.operator.pixel_nm.value == pytest.approx(200.0)
    assert w.operator.interval_ms.value == pytest.approx(500.0)  # 0.5 s per frame, from the time unit
    # Airy spec on the result's grid: with 2x downsampling the PSF pixel is half the input pixel
    w.operator.downsample.value = 2
    assert w.operator.spatial_psf() == "airy:1.4,520,100"
    assert "FWHM" in w.operator.spatial_info.value


def test_bad_parameters_show_their_reason_and_run_nothing(make_napari_viewer, stack, tiny_prior):
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="cells")
    w = dock_restore(viewer)
    use_prior(w, tiny_prior)
    assert w.validate() and w.run_panel.button.enabled
    # a circular 9-frame box on a 6-frame stack would wrap onto itself
    w.operator.box_frames.value = 9
    w.operator.temporal_boundary.value = "circular"
    assert "temporal_psf spans 9 frames" in w.operator.temporal_msg.text
    assert not w.operator.temporal_msg.native.isHidden()  # shown under its field (the window itself is hidden)
    assert not w.run_panel.button.enabled
    click(w)
    assert w._worker is None and len(viewer.layers) == 1
    w.operator.temporal_boundary.value = "symmetric"
    assert w.operator.temporal_msg.text == "" and w.run_panel.button.enabled
    # typed noise level
    w.noise.value = "lots"
    assert "not 'lots'" in w.noise_msg.text and not w.run_panel.button.enabled
    w.noise.value = "-1"
    assert ">= 0" in w.noise_msg.text
    w.noise.value = "auto"
    # a mask of the wrong size
    viewer.add_labels(np.ones((8, 8), dtype=np.uint8), name="small mask")
    w.operator.mask_layer.value = viewer.layers["small mask"]
    assert "mask must have shape" in w.operator.mask_msg.text and not w.run_panel.button.enabled
    w.operator.mask_layer.value = None
    # downsampling that the PSF does not fit, and a missing prior folder
    w.operator.spatial_kind.value = "gaussian"
    w.operator.spatial_sigma.value = 10.0
    assert "larger than the" in w.operator.spatial_msg.text
    # a measured PSF must be a 2-D image layer; a kernel file must exist
    w.operator.spatial_kind.value = "layer"
    viewer.add_image(np.ones((3, 5, 5), dtype=np.float32), name="psf stack")
    w.operator.psf_layer.value = viewer.layers["psf stack"]
    assert "must be a 2-D image" in w.operator.spatial_msg.text and not w.run_panel.button.enabled
    viewer.add_image(np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]), name="psf")
    w.operator.psf_layer.value = viewer.layers["psf"]
    assert w.operator.spatial_msg.text == "" and "3 × 3 px" in w.operator.spatial_info.value
    w.operator.spatial_kind.value = "none"
    w.operator.temporal_kind.value = "file"
    w.operator.temporal_file.value = "/nonexistent/kernel.txt"
    assert "file not found" in w.operator.temporal_msg.text and not w.run_panel.button.enabled
    w.operator.temporal_kind.value = "box"
    w.prior_path.value = "/nonexistent/prior"
    assert "does not exist" in w.prior_msg.text and not w.run_panel.button.enabled
    click(w)
    assert w._worker is None and len(viewer.layers) == 4


def test_restore_adds_result_and_uncertainty_with_geometry_and_metadata(make_napari_viewer, qtbot, stack, tiny_prior):
    viewer = make_napari_viewer()
    original = stack.copy()
    layer = viewer.add_image(
        stack, name="cells", scale=(2.0, 0.5, 0.5), translate=(0.0, 10.0, 20.0), contrast_limits=(0, 200)
    )
    w = dock_restore(viewer)
    use_prior(w, tiny_prior)
    w.operator.box_frames.value = 3
    w.operator.downsample.value = 2
    w.noise.value = "3.0"
    w.steps.value = 3
    w.cg_steps.value = 2
    w.samples.value = 2
    w.preview_every.value = 1
    w.threads.value = 1
    steps_seen, stages_seen = [], []

    widget_on_step = w._on_step

    def on_step(info):  # the widget's handler, then what it showed
        widget_on_step(info)
        steps_seen.append((info["step"], info["total"]))
        stages_seen.append((info["stage"], w.run_panel.progress.native.format()))

    w._on_step = on_step  # connected when the worker is made: sees the first report too
    click(w)
    assert w.run_panel.button.text == "Cancel" and not w.run_panel.progress.native.isHidden()
    wait_done(qtbot, w)
    assert stages_seen[:4] == [("estimating noise", "Estimating the noise…"), ("loading prior", "Loading the prior…"),
                               ("planning windows", "Planning windows…"), ("window", "Step 0 / 9 · sampling…")]
    assert steps_seen[-1] == (9, 9)  # 3 steps x (2 samples + the held-out solve of the blend)
    assert w.run_panel.text.startswith("Step 9 / 9 · 0 s left")  # what the progress bar read last
    assert w.run_panel.button.text == "Restore" and "Done" in w.run_panel.status.value
    names = [lay.name for lay in viewer.layers]
    assert names == ["cells", "cells restored", "cells uncertainty"]  # the preview became the result
    restored, uncertainty = viewer.layers["cells restored"], viewer.layers["cells uncertainty"]
    assert restored.data.shape == uncertainty.data.shape == (6, 32, 32)
    assert restored.data.dtype == np.float32
    np.testing.assert_allclose(restored.scale, (2.0, 0.25, 0.25))
    # the centre of result pixels 0 and 1 straddle the centre of input pixel 0
    np.testing.assert_allclose(restored.translate, (0.0, 10.0 - 0.125, 20.0 - 0.125))
    np.testing.assert_allclose(uncertainty.scale, restored.scale)
    assert tuple(restored.contrast_limits) == (0, 200)
    md = restored.metadata["napari_svi"]
    # the samples' spread, scaled by the blend's weights of the sampler per temporal band (0: the result is the
    # classical estimate)
    applied = max(max(b) for b in md["blend_band_weights"])
    assert np.all(uncertainty.data >= 0) and (uncertainty.data.max() > 0) == (applied > 0)
    assert ("sampler_weight_zero" in md) == (applied == 0)  # and the user is told (notification)
    assert md["steps"] == 3 and md["cg_steps"] == 2 and md["samples"] == 2 and md["noise_sigma"] == 3.0
    assert md["threads"] == 1
    assert md["operator"]["temporal_psf"] == "uniform:3" and md["operator"]["downsample"] == 2
    assert md["prior"] and md["napari_svi_version"] and md["source_layer"] == "cells"
    assert uncertainty.metadata["napari_svi"]["kind"] == "posterior standard deviation"
    np.testing.assert_array_equal(layer.data, original)  # the input is untouched


def test_cancel_stops_within_one_step_and_adds_nothing(make_napari_viewer, qtbot, stack, tiny_prior, monkeypatch):
    import importlib

    core = importlib.import_module("napari_svi.restore")  # the module (napari_svi.restore is also a function)

    produced = []  # (time, step) as the worker thread produced them: the real core, only timed
    real_iter_restore = core.iter_restore

    def timed_iter_restore(*args, **kwargs):
        gen = real_iter_restore(*args, **kwargs)
        try:
            while True:
                info = next(gen)
                produced.append((time.perf_counter(), info["step"]))
                yield info
        except StopIteration as stop:
            return stop.value

    monkeypatch.setattr(core, "iter_restore", timed_iter_restore)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="cells")
    w = dock_restore(viewer)
    use_prior(w, tiny_prior)
    w.steps.value = 200
    w.preview_every.value = 1
    w.noise.value = "none"
    received, cancelled_at = [], []

    def on_step(info):
        if info["stage"] != "sampling":
            return
        received.append(info["step"])
        if len(received) == 2:  # a preview layer exists by now
            cancelled_at.append(time.perf_counter())
            click(w)  # the button is Cancel now

    click(w)
    w._worker.yielded.connect(on_step)
    aborted = []
    w._worker.aborted.connect(lambda: aborted.append(True))
    wait_done(qtbot, w)
    assert aborted == [True]
    after = [step for t, step in produced if t > cancelled_at[0]]
    assert len(after) <= 1, f"{len(after)} sampler steps finished after cancel"
    assert produced[-1][1] < 200
    assert [lay.name for lay in viewer.layers] == ["cells"]  # no result, and the preview is gone
    assert w.run_panel.button.text == "Restore" and w.run_panel.button.enabled
    assert "Cancelled" in w.run_panel.status.value
    viewer.add_points([[0, 1, 1]])  # the viewer is still usable
    assert len(viewer.layers) == 2


def test_errors_are_notifications_and_leave_the_viewer_usable(make_napari_viewer, qtbot, stack, tmp_path):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    viewer.add_image(stack, name="cells")
    broken = tmp_path / "broken-prior"
    broken.mkdir()
    (broken / "config.json").write_text('{"format": "napari-svi-prior", "unet": {}}')  # no weights
    w = dock_restore(viewer)
    use_prior(w, str(broken))
    assert w.validate()  # looks like a prior folder; loading it fails in the worker
    messages = []
    notification_manager.notification_ready.connect(lambda n: messages.append((n.severity, n.message)))
    click(w)
    wait_done(qtbot, w)
    assert any("Restore time-lapse failed" in m for _, m in messages), messages
    assert [lay.name for lay in viewer.layers] == ["cells"]
    assert w.run_panel.button.text == "Restore" and w.run_panel.status.value.startswith("Failed")
