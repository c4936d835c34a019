"""How long the napari event loop stalls while "Restore time-lapse" runs: the worst and typical gap.

A 10 ms Qt timer ticks in a real viewer while the widget restores a 30 x 96 x 96 crop of the
held-out time-lapse with the bundled prior (8 steps, other fields at their defaults), from the
first temporal window to the result; the same timer with the viewer idle is the baseline. The
worst gap depends on the machine's load (the 1-minute load average is printed with it), so run
this on a quiet machine; ``tests/test_napari_restore.py`` checks the typical gap on any machine.

    OMP_NUM_THREADS=1 xvfb-run -a python benchmarks/event_loop.py
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def main() -> int:
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_svi.datasets import load_heldout_timelapse

    viewer = napari.Viewer(show=True)
    viewer.add_image(load_heldout_timelapse()[:, :96, :96].astype(np.float32), name="cells")
    _, w = viewer.window.add_plugin_dock_widget("napari-svi", "Restore time-lapse")
    w.steps.value, w.noise.value = 8, "2.5"
    app = QApplication.instance()
    ticks, marks = [], {}
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))

    def wait(seconds: float = 0.0, until=None) -> None:
        end = time.perf_counter() + seconds
        while (until is not None and not until()) or (until is None and time.perf_counter() < end):
            app.processEvents()
            time.sleep(0.001)

    wait(1.0)
    timer.start()
    wait(2.0)
    idle = np.diff(ticks) * 1000
    ticks.clear()
    load = os.getloadavg()[0]
    w.run_panel.button.changed.emit(True)
    w._worker.yielded.connect(lambda info: info["stage"] == "window" and marks.setdefault("first", time.perf_counter()))
    w._worker.returned.connect(lambda _: marks.setdefault("returned", time.perf_counter()))
    wait(until=lambda: w._worker is None)
    timer.stop()
    t = np.array(ticks)
    during = np.diff(t[(t >= marks["first"]) & (t <= marks["returned"])]) * 1000
    print(f"restore {marks['returned'] - marks['first']:.1f} s; event loop gaps while sampling: worst {during.max():.0f} ms, "
          f"99th percentile {np.percentile(during, 99):.0f} ms, median {np.median(during):.1f} ms; idle viewer: worst "
          f"{idle.max():.0f} ms, median {np.median(idle):.1f} ms; load average (1 min) {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after, {os.cpu_count()} cores")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
