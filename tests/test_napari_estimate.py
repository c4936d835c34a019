"""GUI tests of the Restore widget's "Estimate from data" button: a real napari viewer (run under xvfb-run -a)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("GUI tests need a display: run them under xvfb-run -a", allow_module_level=True)

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def blurred():
    """16 frames of 64 x 64 of the held-out nuclei, a box of 5 frames, Gaussian noise."""
    from napari_svi.benchmark.suite import load_clip
    from napari_svi.degrade import degrade
    from napari_svi.operators import OperatorSpec

    truth = load_clip("nuclei", 16, 64)[0]
    return degrade(truth, OperatorSpec(temporal_psf="uniform:5"), noise_sigma=0.01 * float(np.percentile(truth, 99.9)))


def dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-svi", "Restore time-lapse")
    return widget


def test_estimate_button_fills_the_form_off_the_gui_thread(make_napari_viewer, qtbot, blurred):
    from napari_svi.estimate import estimate_blur

    viewer = make_napari_viewer()
    viewer.add_image(blurred, name="cells")
    w = dock(viewer)
    panel = w.estimate_panel
    w.operator.temporal_kind.value = "none"
    w.operator.spatial_kind.value = "gaussian"
    panel.button.changed.emit(True)
    # the click returns at once: the estimate runs in a worker thread while the form stays live
    assert panel.worker is not None and not panel.button.enabled and "Estimating" in panel.info.value
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120_000)
    est = panel.estimate
    assert est is not None and panel.msg.text == ""
    assert est.to_dict() == estimate_blur(blurred).to_dict() | {"seconds": est.seconds}
    kind, _, value = est.temporal_psf.partition(":")
    assert kind == "uniform" and abs(int(value) - 5) <= 1
    assert w.operator.temporal_kind.value == "box" and w.operator.box_frames.value == int(value)
    if est.spatial_psf == "none":
        assert w.operator.spatial_kind.value == "none"
    else:
        assert w.operator.spatial_kind.value == "gaussian"
        assert w.operator.spatial_sigma.value == pytest.approx(float(est.spatial_psf.split(":")[1]))
    assert float(w.noise.value) == pytest.approx(est.noise_sigma, rel=1e-3)
    assert "Estimated in" in panel.info.value and ("sure" in panel.info.value)
    label = panel.info.native  # the wrapped text gets its full height (a scrolled dock cut it)
    assert label.minimumHeight() >= label.heightForWidth(max(label.width(), 240)) > label.fontMetrics().height()
    assert w.run_panel.button.enabled and panel.button.enabled
    # every field stays the user's to edit, and the form checks what is typed
    w.operator.box_frames.value = 3
    assert w.operator.temporal_psf() == "uniform:3"
    w.noise.value = "abc"
    assert w.noise_msg.text and not w.run_panel.button.enabled


def test_estimate_button_explains_what_it_cannot_do(make_napari_viewer, blurred):
    viewer = make_napari_viewer()
    viewer.add_image(blurred[:4], name="four frames")
    w = dock(viewer)
    panel = w.estimate_panel
    w.operator.downsample.value = 2
    panel.button.changed.emit(True)
    assert panel.worker is None and "full resolution" in panel.msg.text
    w.operator.downsample.value = 1
    panel.button.changed.emit(True)
    from qtpy.QtWidgets import QApplication

    while panel.worker is not None:
        QApplication.processEvents()
    assert panel.estimate is None and "at least 6 frames" in panel.msg.text
    assert panel.button.enabled


def test_structure_choice_measures_the_blur_against_its_reference(make_napari_viewer, qtbot, blurred, tmp_path):
    import tifffile

    from napari_svi._napari._estimate import FILE, STRUCTURE_CHOICES, UNNAMED

    viewer = make_napari_viewer()
    viewer.add_image(blurred, name="cells")
    w = dock(viewer)
    panel = w.estimate_panel
    assert panel.structure.value == UNNAMED and set(STRUCTURE_CHOICES) >= {"actin", "mitochondria", "nuclei", "walls"}
    assert panel.reference_file.native.isHidden()  # (visible is False in an unshown viewer either way)
    panel.structure.value = "nuclei"
    panel.button.changed.emit(True)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120_000)
    conf = panel.estimate.confidence["spatial_psf"]
    assert conf["method"] == "reference" and conf["reference"] == "nuclei" and panel.msg.text == ""
    if panel.estimate.spatial_psf != "none":
        assert "beyond the nuclei reference" in panel.info.value
    # a file of sharp images: asked for when chosen, and said plainly when missing
    panel.structure.value = FILE
    assert not panel.reference_file.native.isHidden()
    panel.estimate = None
    panel.button.changed.emit(True)
    assert panel.worker is None and "TIFF of sharp images" in panel.msg.text and panel.estimate is None
    sharp = tmp_path / "sharp.tif"
    tifffile.imwrite(sharp, np.zeros((64, 64), np.float32))  # constant: refused by the worker, said in the form
    panel.reference_file.value = sharp
    panel.button.changed.emit(True)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120_000)
    assert panel.estimate is None and "constant" in panel.msg.text and panel.button.enabled


def test_not_named_measures_against_the_chosen_priors_training_images(make_napari_viewer, qtbot, blurred, tmp_path):
    from napari_svi._napari._restore_checks import PRIOR_FOLDER
    from napari_svi.datasets import HELD_OUT_FIRST_COLUMN, load_bio_sample
    from napari_svi.priors.unet import UNetConfig
    from napari_svi.training import TrainConfig, train

    prior = tmp_path / "lab_prior"
    train(list(load_bio_sample("2D_timelapse.tif")[::6, :, :HELD_OUT_FIRST_COLUMN]), prior,
          TrainConfig(steps=2, batch_size=2, patch_size=16, warmup_steps=1, checkpoint_every=2,
                      unet=UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4)))
    viewer = make_napari_viewer()
    viewer.add_image(blurred, name="cells")
    w = dock(viewer)
    panel = w.estimate_panel
    assert panel.structure_value() is None  # the default prior: four structures, none of them chosen
    w.prior.value = PRIOR_FOLDER
    w.prior_path.value = prior
    panel.button.changed.emit(True)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120_000)
    conf = panel.estimate.confidence["spatial_psf"]
    assert conf["method"] == "reference" and conf["reference"] == "prior lab_prior" and panel.msg.text == ""
