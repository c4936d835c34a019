"""Take the plugin's screenshots in docs/ with a real napari window.

Run from the repository root under a display, e.g.::

    OMP_NUM_THREADS=2 xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py

Options: ``--prior`` (default ``default``: the bundled prior), ``--crop`` (side of a centred square
crop of the sample's frames; 0 = the whole 511 x 256 frames, which take about 8 min per step on a
busy 2-core CPU), ``--only`` (a comma-separated subset of restore,simulate,forms,train,estimate).

Everything shown is computed: the sample opens through napari's sample menu machinery, the
widgets are the plugin's dock widgets, and "Restore" runs the real sampler with the widget's
defaults (the fields the sample's metadata fills in: box of 7 frames, symmetric, noise 2.53).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
SIZE = (1500, 950)


def wait(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def wait_until(app, condition, timeout: float) -> None:
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("gave up waiting")
        app.processEvents()
        time.sleep(0.02)


def shot(viewer, app, name: str, colours: int = 0) -> None:
    """Save the whole window as docs/NAME; ``colours`` > 0 stores a palette of that many (a smaller file)."""
    wait(app, 0.3)  # let the canvas take its final size before fitting the view to it
    viewer.reset_view()
    wait(app, 0.5)
    path = DOCS / name
    viewer.screenshot(str(path), canvas_only=False)
    if colours:
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colours).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} kB)")


def crop_layers(viewer, crop: int) -> None:
    """Replace the sample layers by a centred crop (same metadata), for CPU-sized runs."""
    for layer in list(viewer.layers):
        t, h, w = layer.data.shape
        y0, x0 = (h - crop) // 2, (w - crop) // 2
        data = np.asarray(layer.data[:, y0 : y0 + crop, x0 : x0 + crop])
        viewer.layers.remove(layer)
        viewer.add_image(data, name=layer.name, contrast_limits=layer.contrast_limits, metadata=layer.metadata)


def restore_shots(app, prior: str, crop: int) -> None:
    import napari

    viewer = napari.Viewer(title="napari-svi: Restore time-lapse")
    viewer.window.resize(*SIZE)
    viewer.open_sample("napari-svi", "nuclei_timelapse_ground_truth")
    viewer.open_sample("napari-svi", "blurred_nuclei_timelapse")
    if crop:
        crop_layers(viewer, crop)
    viewer.layers.selection.active = viewer.layers["blurred nuclei"]
    viewer.layers["nuclei ground truth"].visible = False
    _, w = viewer.window.add_plugin_dock_widget("napari-svi", "Restore time-lapse")
    if prior != "default":
        w.prior.value = "__folder__" if Path(prior).is_dir() else "__file__"
        w.prior_path.value = prior
    viewer.dims.set_current_step(0, 15)
    wait(app, 1)
    assert w.validate(), "the form is not valid"
    w.run_panel.button.changed.emit(True)
    steps = []
    w._worker.yielded.connect(lambda info: steps.append(info["step"]))
    wait_until(app, lambda: len(steps) >= 3 or w._worker is None, timeout=3600)
    shot(viewer, app, "restore_running.png")
    wait_until(app, lambda: w._worker is None, timeout=4 * 3600)
    restored = viewer.layers["blurred nuclei restored"]
    print("restored", restored.data.shape, restored.metadata["napari_svi"]["seconds"], "s")
    truth = viewer.layers["nuclei ground truth"]
    truth.visible = True
    viewer.layers.move(viewer.layers.index(truth), len(viewer.layers))  # order: blurred, restored, truth
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid
    grid.shape = (1, 3)  # one row, left to right: measurement, restoration, ground truth
    grid.enabled = True
    viewer.layers.selection.active = restored
    shot(viewer, app, "restore_result.png")
    viewer.close()


def simulate_shot(app) -> None:
    import napari

    viewer = napari.Viewer(title="napari-svi: Simulate degradation")
    viewer.window.resize(*SIZE)
    viewer.open_sample("napari-svi", "nuclei_timelapse_ground_truth")
    _, w = viewer.window.add_plugin_dock_widget("napari-svi", "Simulate degradation")
    f = w.operator
    f.temporal_kind.value = "exposure"
    f.exposure_ms.value, f.interval_ms.value = 500.0, 100.0
    f.spatial_kind.value = "airy"
    f.na.value, f.wavelength_nm.value, f.pixel_nm.value = 0.8, 520.0, 160.0
    w.noise_sigma.value = 2.0
    assert w.validate(), "the form is not valid"
    w.run_panel.button.changed.emit(True)
    wait_until(app, lambda: w._worker is None, timeout=600)
    viewer.layers["nuclei ground truth"].visible = False
    viewer.dims.set_current_step(0, 15)
    shot(viewer, app, "simulate_widget.png")
    viewer.close()


def forms_shot(app) -> None:
    """Restore and Simulate docked together: a region from a Shapes rectangle, and a refused value."""
    import napari

    viewer = napari.Viewer(title="napari-svi: Restore and Simulate")
    viewer.window.resize(*SIZE)
    viewer.open_sample("napari-svi", "nuclei_timelapse_ground_truth")
    viewer.open_sample("napari-svi", "blurred_nuclei_timelapse")
    viewer.layers["nuclei ground truth"].visible = False
    roi = viewer.add_shapes([np.array([[150.0, 40.0], [277.9, 167.9]])], shape_type="rectangle", name="region",
                            edge_color="yellow", face_color="transparent", edge_width=3)
    restore_dock, restore = viewer.window.add_plugin_dock_widget("napari-svi", "Restore time-lapse")
    simulate_dock, simulate = viewer.window.add_plugin_dock_widget("napari-svi", "Simulate degradation")
    restore.image.value = viewer.layers["blurred nuclei"]
    restore.region.value = roi
    restore.first_frame.value, restore.last_frame.value = 5, 20
    simulate.image.value = viewer.layers["nuclei ground truth"]
    simulate.noise_sigma.value = -1.0  # typed: reported under the field, Simulate disabled
    viewer.layers.selection.active = viewer.layers["blurred nuclei"]
    viewer.dims.set_current_step(0, 12)
    assert restore.validate() and not simulate.validate(), "the forms are not in the state the picture shows"
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QScrollArea

    restore_dock.window().resizeDocks([restore_dock, simulate_dock], [560, 300], Qt.Orientation.Vertical)
    wait(app, 0.5)
    simulate.native.findChild(QScrollArea).ensureWidgetVisible(simulate.run_panel.native)  # the refused value
    shot(viewer, app, "restore_and_simulate.png", colours=256)
    viewer.close()


def estimate_shot(app) -> None:
    """Estimate from data with the structure named: a held-out nuclei clip, box of 5 frames and 1 px Gaussian."""
    import napari

    from napari_svi.benchmark.suite import load_clip
    from napari_svi.degrade import degrade
    from napari_svi.operators import OperatorSpec

    truth = load_clip("nuclei", 24, 96)[0]
    measured = degrade(truth, OperatorSpec(temporal_psf="uniform:5", spatial_psf="gaussian:1"),
                       noise_sigma=0.01 * float(np.percentile(truth, 99.9)))
    viewer = napari.Viewer(title="napari-svi: Estimate from data")
    viewer.window.resize(*SIZE)
    viewer.add_image(measured, name="held-out nuclei, box 5 frames + Gaussian 1 px")
    _, w = viewer.window.add_plugin_dock_widget("napari-svi", "Restore time-lapse")
    panel = w.estimate_panel
    panel.structure.value = "nuclei"
    panel.button.changed.emit(True)
    wait_until(app, lambda: panel.worker is None, timeout=600)
    assert panel.estimate is not None, panel.msg.text
    viewer.dims.set_current_step(0, 12)
    from qtpy.QtWidgets import QScrollArea

    w.native.findChild(QScrollArea).ensureWidgetVisible(panel.info.native)
    shot(viewer, app, "estimate_from_data.png", colours=256)
    viewer.close()


def train_shot(app, tmp: Path) -> None:
    import napari

    viewer = napari.Viewer(title="napari-svi: Train prior")
    viewer.window.resize(*SIZE)
    viewer.open_sample("napari-svi", "nuclei_timelapse_ground_truth")
    _, w = viewer.window.add_plugin_dock_widget("napari-svi", "Train prior")
    w.images.value = [viewer.layers["nuclei ground truth"]]
    w.out_dir.value = str(tmp / "my-nuclei-prior")
    w.steps.value = 2000
    w.batch_size.value = 4
    w.run_panel.button.changed.emit(True)
    steps = []
    w._worker.yielded.connect(lambda info: steps.append(info["step"]))
    wait_until(app, lambda: len(steps) >= 10, timeout=600)
    shot(viewer, app, "train_widget.png")
    w.run_panel.button.changed.emit(True)  # stop; the prior so far is saved
    wait_until(app, lambda: w._worker is None, timeout=600)
    viewer.close()


def main() -> None:
    import tempfile

    from qtpy.QtWidgets import QApplication

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prior", default="default")
    parser.add_argument("--crop", type=int, default=0)
    parser.add_argument("--only", default="restore,simulate,forms,train,estimate")
    args = parser.parse_args()
    import napari  # noqa: F401  (creates the Qt application settings napari expects)

    app = QApplication.instance() or QApplication([])
    only = set(args.only.split(","))
    if "simulate" in only:
        simulate_shot(app)
    if "forms" in only:
        forms_shot(app)
    if "estimate" in only:
        estimate_shot(app)
    if "train" in only:
        with tempfile.TemporaryDirectory() as tmp:
            train_shot(app, Path(tmp))
    if "restore" in only:
        restore_shots(app, args.prior, args.crop)


if __name__ == "__main__":
    main()
