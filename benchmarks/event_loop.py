"""How long the napari event loop stalls while "Restore time-lapse" runs: the worst and typical gap.

A 10 ms Qt timer ticks in a real viewer (with the Restore and Simulate docks) while the widget
restores a crop of the held-out time-lapse with the bundled prior (other fields at their
defaults); the same timer with the viewer idle is the baseline. Reported:

- the gaps while sampling, from the first temporal window to the result (worst, 99th
  percentile, median);
- with ``--preview N`` (a live preview every N steps) or ``--samples K`` (K > 1 adds the
  uncertainty layer), the gap that holds each layer the run adds, and the worst gap from the
  result to the end of the run (the result layers, the notifications, the unlocked form);
- the floor: the gap that holds a bare ``viewer.add_image`` of an array of the result's size in
  the idle viewer, napari's own cost of adding a layer (its visual and its layer controls).

Every gap depends on the machine's load (the 1-minute load average is printed with it), so
compare runs made one after the other; ``tests/test_napari_restore.py`` checks the typical gap
and the stalls relative to the floor on any machine. To compare with another checkout, run this
file with ``PYTHONPATH=OTHER/src``.

    OMP_NUM_THREADS=1 xvfb-run -a python benchmarks/event_loop.py [--preview 1 --samples 2 --steps 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=96, help="side of the square crop, pixels")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--preview", type=int, default=0, help="live preview every N steps (0: off)")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--prior", default="default", help="'default' or a prior folder")
    args = parser.parse_args()

    import napari
    import torch
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    import napari_svi
    from napari_svi.datasets import load_heldout_timelapse

    torch.set_num_threads(1)
    viewer = napari.Viewer(show=True)
    data = load_heldout_timelapse()[: args.frames, : args.size, : args.size].astype(np.float32)
    viewer.add_image(data, name="cells")
    _, w = viewer.window.add_plugin_dock_widget("napari-svi", "Restore time-lapse")
    viewer.window.add_plugin_dock_widget("napari-svi", "Simulate degradation")
    if args.prior != "default":
        w.prior.value, w.prior_path.value = "__folder__", args.prior
    w.steps.value, w.noise.value = args.steps, "2.5"
    w.preview_every.value, w.samples.value = args.preview, args.samples
    app = QApplication.instance()
    ticks, marks, inserted = [], {}, []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))

    def wait(seconds: float = 0.0, until=None) -> None:
        end = time.perf_counter() + seconds
        while (until is not None and not until()) or (until is None and time.perf_counter() < end):
            app.processEvents()
            time.sleep(0.001)

    def gap_at(t: np.ndarray, moment: float) -> float:
        i = int(np.searchsorted(t, moment))
        return float(1000 * (t[i] - t[i - 1])) if 0 < i < len(t) else float("nan")

    wait(1.0)
    timer.start()
    wait(2.0)
    idle = np.diff(ticks) * 1000
    floors = []  # napari's own cost of adding a layer of the result's size, in the idle viewer
    for _ in range(2):
        ticks.clear()
        wait(0.3)
        layer = viewer.add_image(np.zeros_like(data), name="floor", contrast_limits=(0, 1))
        done = time.perf_counter()
        wait(0.5)
        floors.append(gap_at(np.array(ticks), done))
        viewer.layers.selection.active = viewer.layers["cells"]
        viewer.layers.remove(layer)
        wait(0.5)
    ticks.clear()
    wait(0.5)
    load = os.getloadavg()[0]
    viewer.layers.events.inserted.connect(lambda e: inserted.append((e.value.name, time.perf_counter())))
    w.run_panel.button.changed.emit(True)

    def on_yield(info):
        now = time.perf_counter()
        if info["stage"] == "window":
            marks.setdefault("first", now)
        marks["last"] = now  # the last report: the result follows

    w._worker.yielded.connect(on_yield)
    w._worker.returned.connect(lambda _: marks.setdefault("returned", time.perf_counter()))
    wait(until=lambda: w._worker is None)
    marks["done"] = time.perf_counter()
    wait(0.5)
    timer.stop()
    t = np.array(ticks)
    during = np.diff(t[(t >= marks["first"]) & (t <= marks["last"])]) * 1000
    after = np.diff(t[t >= marks["last"]]) * 1000  # from the last report to half a second after the end
    added = ", ".join(f"{name!r} {gap_at(t, moment):.0f} ms" for name, moment in inserted) or "none"
    print(f"napari-svi {napari_svi.__file__}; {args.frames} x {args.size} x {args.size}, {args.steps} steps, "
          f"preview every {args.preview}, {args.samples} sample(s)")
    print(f"restore {marks['returned'] - marks['first']:.1f} s; gaps while sampling: worst {during.max():.0f} ms, "
          f"99th percentile {np.percentile(during, 99):.0f} ms, median {np.median(during):.1f} ms")
    print(f"gaps holding each added layer: {added}; worst gap from the result to the end: "
          f"{after.max() if after.size else float('nan'):.0f} ms")
    print(f"floor (a bare add_image of that size, idle): {min(floors):.0f} ms; idle viewer: worst {idle.max():.0f} ms, "
          f"median {np.median(idle):.1f} ms; load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after, "
          f"{os.cpu_count()} cores")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
