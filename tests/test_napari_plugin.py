"""GUI tests of the rest of the plugin: manifest, sample data, writer, "Simulate degradation", "Train prior".

Run under a display: ``OMP_NUM_THREADS=1 xvfb-run -a pytest tests/test_napari_plugin.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("GUI tests need a display: run them under xvfb-run -a", allow_module_level=True)

pytestmark = pytest.mark.gui
REPO = Path(__file__).resolve().parents[1]


def click(widget) -> None:
    widget.run_panel.button.changed.emit(True)


def test_manifest_contributions_and_imports():
    import yaml
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-svi")
    manifest.validate_imports()  # every python_name resolves
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == [
        "Restore time-lapse",
        "Simulate degradation",
        "Train prior",
    ]
    assert [s.display_name for s in contributions.sample_data] == [
        "Blurred nuclei time-lapse",
        "Nuclei time-lapse (ground truth)",
    ]
    assert [m.command for m in contributions.menus["napari/layers/filter"]] == ["napari-svi.restore_widget"]
    assert contributions.writers[0].layer_types == ["image"]
    # the package's manifest is the top-level one (a link), not a stale copy
    packaged = REPO / "src" / "napari_svi" / "napari.yaml"
    assert yaml.safe_load(packaged.read_text()) == yaml.safe_load((REPO / "napari.yaml").read_text())


def test_sample_data_open_and_prefill_the_restore_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-svi", "nuclei_timelapse_ground_truth")
    viewer.open_sample("napari-svi", "blurred_nuclei_timelapse")
    truth, blurred = viewer.layers["nuclei ground truth"], viewer.layers["blurred nuclei"]
    assert truth.data.shape == blurred.data.shape == (30, 511, 256)
    record = blurred.metadata["napari_svi"]
    assert record["operator"]["temporal_psf"] == "uniform:7" and record["noise_sigma"] == pytest.approx(2.53)
    # the measurement is the box-7 average of the truth plus noise of about that level
    from scipy.ndimage import uniform_filter1d

    expected = uniform_filter1d(truth.data.astype(np.float64), 7, axis=0, mode="reflect")
    residual = blurred.data - expected
    assert abs(residual.mean()) < 0.1 and 2.3 < residual.std() < 2.8
    _, w = viewer.window.add_plugin_dock_widget("napari-svi", "Restore time-lapse")
    assert w.image.value is blurred
    f = w.operator
    assert (f.temporal_kind.value, f.box_frames.value, f.temporal_boundary.value) == ("box", 7, "symmetric")
    assert f.spatial_kind.value == "none" and f.downsample.value == 1
    assert float(w.noise.value) == pytest.approx(2.53)


def test_writer_keeps_the_parameters(make_napari_viewer, tmp_path):
    from napari_svi.io import read_stack

    viewer = make_napari_viewer()
    record = {
        "kind": "restored",
        "steps": 20,
        "prior": "tiny",
        "operator": {"temporal_psf": "uniform:7"},
        "time_axis": 0,
    }
    data = np.random.default_rng(0).random((4, 8, 10)).astype(np.float32)
    viewer.add_image(
        data, name="cells restored", scale=(1.0, 0.1, 0.1), units=("s", "um", "um"), metadata={"napari_svi": record}
    )
    # File > Save Selected Layers offers it as a file type of its own
    from napari.plugins._npe2 import file_extensions_string_for_layers

    filters, _ = file_extensions_string_for_layers([viewer.layers[0]])
    assert "napari-svi TIFF (keeps restoration parameters) (*.tif *.tiff)" in filters
    path = tmp_path / "restored.tif"
    written = viewer.layers.save(str(path), plugin="napari-svi")
    assert written == [str(path)]
    back, info = read_stack(path)
    np.testing.assert_array_equal(back, data)
    assert info.axes == "TYX"
    assert info.metadata["steps"] == 20 and info.metadata["prior"] == "tiny"
    assert info.metadata["layer"]["name"] == "cells restored"
    assert info.pixel_size_um == pytest.approx((0.1, 0.1))
    assert info.frame_interval_s == pytest.approx(1.0)


def test_simulate_degradation_records_its_model(make_napari_viewer, qtbot):
    from napari_svi.datasets import load_heldout_timelapse

    viewer = make_napari_viewer()
    clean = load_heldout_timelapse()[:8, 200:232, 100:132]
    viewer.add_image(clean, name="clean", scale=(1.0, 0.1, 0.1))
    _, w = viewer.window.add_plugin_dock_widget("napari-svi", "Simulate degradation")
    assert w.image.value is viewer.layers["clean"]
    f = w.operator
    f.box_frames.value = 3
    f.downsample.value = 2
    f.spatial_kind.value = "gaussian"
    f.spatial_sigma.value = 1.0
    f.mask_layer.value = "random"
    f.missing_fraction.value = 0.25
    w.noise_sigma.value = 1.5
    assert w.validate()
    assert "measurement 8 × 16 × 16" in w.image_info.value
    f.downsample.value = 3  # 32 is not a multiple of 3
    assert "downsample=3 must divide" in f.downsample_msg.text and not w.run_panel.button.enabled
    f.downsample.value = 2
    click(w)
    qtbot.waitUntil(lambda: w._worker is None, timeout=60_000)
    degraded, mask = viewer.layers["clean degraded"], viewer.layers["clean mask"]
    assert degraded.data.shape == (8, 16, 16) and mask.data.shape == (8, 16, 16)
    assert 0.6 < mask.data.mean() < 0.9  # 25 % missing
    assert np.all(degraded.data[mask.data == 0] == 0)
    np.testing.assert_allclose(degraded.scale, (1.0, 0.2, 0.2))
    np.testing.assert_allclose(degraded.translate, (0.0, 0.05, 0.05))
    record = degraded.metadata["napari_svi"]
    assert record["operator"]["spatial_psf"] == "gaussian:1" and record["operator"]["downsample"] == 2
    assert record["noise_sigma"] == 1.5 and record["mask_layer"] == "clean mask"
    # "Restore time-lapse" takes the same model for this layer, on the result's finer grid
    _, r = viewer.window.add_plugin_dock_widget("napari-svi", "Restore time-lapse")
    r.image.value = degraded
    assert r.operator.box_frames.value == 3 and r.operator.downsample.value == 2
    assert r.operator.spatial_sigma.value == pytest.approx(0.5)  # 1 fine pixel = 0.5 input pixels
    assert r.operator.spatial_psf() == "gaussian:1"
    assert r.operator.mask_layer.value is mask and float(r.noise.value) == 1.5
    assert r.operator.validate(r.input_shape())
    assert "result 8 × 32 × 32" in r.image_info.value


def test_train_prior_saves_a_prior_restore_can_pick(make_napari_viewer, qtbot, tmp_path):
    from napari_svi.datasets import load_heldout_timelapse
    from napari_svi.priors.loading import load_prior

    viewer = make_napari_viewer()
    viewer.add_image(load_heldout_timelapse()[:3, :64, :64], name="stills")
    _, w = viewer.window.add_plugin_dock_widget("napari-svi", "Train prior")
    _, r = viewer.window.add_plugin_dock_widget("napari-svi", "Restore time-lapse")
    w.images.value = [viewer.layers["stills"]]
    out = tmp_path / "my-prior"
    w.out_dir.value = str(out)
    w.model_size.value = "small"
    w.patch_size.value = 128
    assert "Larger than the smallest training frame (64 px)" in w.patch_msg.text and not w.run_panel.button.enabled
    w.patch_size.value = 16
    w.batch_size.value = 2
    w.steps.value = 500
    losses = []

    def on_step(info):
        losses.append(info["loss"])
        if len(losses) == 2:
            click(w)  # "Stop (keeps the prior)"

    click(w)
    assert w.run_panel.button.text == "Stop (keeps the prior)"
    w._worker.yielded.connect(on_step)
    qtbot.waitUntil(lambda: w._worker is None, timeout=120_000)
    config = (out / "config.json").read_text()
    import json

    done = json.loads(config)["training"]["steps_done"]
    assert 2 <= done < 500  # stopped early, and what was learnt is saved
    assert load_prior(str(out), "cpu").channels == 1
    assert str(out) in r.prior.choices  # offered by "Restore time-lapse" straight away
    assert "Pick it under Prior" in w.run_panel.status.tooltip
