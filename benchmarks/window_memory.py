"""Peak memory of a windowed restore does not grow with the number of frames.

Restores a synthetic 256 x 512 x 512 stack and a 32 x 512 x 512 one, each in a fresh process, from a
zarr store (read window by window) to a zarr store (written window by window), and compares the
peak resident memory (``ru_maxrss``) of the two processes. The issue asks for a ratio within 20 %.

    python benchmarks/window_memory.py [-o benchmarks/results/window_memory] [--frames 256 32]

Settings: 2 NFE, 5 CG steps, windows of 16 frames (the default; each solves 16 + 2 x 6 frames),
temporal box of 7 frames, Gaussian noise. Peak memory is the measured process's own high-water
mark (``VmHWM`` from ``/proc/self/status``; ``ru_maxrss`` would inherit the parent's peak), with
glibc's default allocator and with a fixed 1 MB mmap threshold (the live set without heap
fragmentation). The prior is the analytic GaussianPrior (exact
noise prediction, no weights): it measures the memory of the windowing, the solver and the I/O,
not of a network (whose activations per window are bounded separately by tiling,
``tile_size``/``TiledPrior``) and it keeps the run within minutes on 2 CPU cores.
Writes ``window_memory.json`` and ``window_memory.md`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HEIGHT = WIDTH = 512
#: glibc keeps arrays below its (dynamic, up to 32 MB) mmap threshold on the heap, where they fragment;
#: a fixed 1 MB threshold maps every large array separately, so the peak is the live set (but slower).
ALLOCATORS = {"glibc default": {}, "glibc, mmap threshold 1 MB": {"MALLOC_MMAP_THRESHOLD_": "1048576"}}
SPEC = {"temporal_psf": "uniform:7"}


def make_input(path: Path, frames: int) -> None:
    """A synthetic time-lapse of drifting Gaussian blobs, blurred and noisy, written frame by frame (uint16)."""
    import numpy as np
    import zarr

    from napari_svi.degrade import degrade
    from napari_svi.operators import OperatorSpec

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
    layers = []
    for _ in range(2):  # two layers of blobs drifting in different directions
        layer = np.zeros((HEIGHT, WIDTH), np.float32)
        for cy, cx in rng.uniform(0, HEIGHT, (30, 2)):
            layer += 2000 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50.0)
        layers.append(layer)
    z = zarr.open_array(str(path), mode="w", shape=(frames, HEIGHT, WIDTH), chunks=(1, HEIGHT, WIDTH), dtype="uint16")
    spec = OperatorSpec(**SPEC)
    block = 16
    for start in range(0, frames, block):  # degrade in blocks (the temporal blur is short): bounded memory
        ts = np.arange(max(start - 3, 0), min(start + block + 3, frames))
        truth = np.zeros((len(ts), HEIGHT, WIDTH), np.float32)
        for i, t in enumerate(ts):
            truth[i] = np.roll(layers[0], (t, 2 * t), axis=(0, 1)) + np.roll(layers[1], (-2 * t, t), axis=(0, 1))
        y = degrade(truth + 200, spec, noise_sigma=20.0, seed=start)
        keep = slice(start - ts[0], start - ts[0] + min(block, frames - start))
        z[start : start + block] = np.clip(y[keep], 0, 65535).astype(np.uint16)


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB (VmHWM; falls back to ru_maxrss off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(inp: str, out: str) -> None:
    """The measured process: restore ``inp`` (zarr) into ``out`` (zarr); print one JSON line."""
    import numpy as np
    import torch
    import zarr

    from napari_svi.operators import OperatorSpec
    from napari_svi.priors.base import GaussianPrior
    from napari_svi.restore import restore
    from napari_svi.schedules import alphas_cumprod

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    rss_start = peak_rss_mb()
    t0 = time.perf_counter()
    data = zarr.open_array(inp, mode="r")
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    result = restore(data, OperatorSpec(**SPEC), prior=prior, steps=2, noise_sigma=20.0, device="cpu",
                     out=out, overwrite=True)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    restored = result.restored
    finite = all(bool(np.isfinite(restored[t]).all()) for t in range(restored.shape[0]))  # after the peak was taken
    print(json.dumps({
        "frames": int(data.shape[0]), "peak_rss_mb": round(peak, 1), "rss_after_imports_mb": round(rss_start, 1),
        "seconds": round(seconds, 1), "windows": result.metadata["windows"], "window": result.metadata["window"],
        "window_margin": result.metadata["window_margin"], "all_finite": finite,
        "input_mb": round(data.nbytes / 2**20, 1), "output_mb": round(restored.nbytes / 2**20, 1),
    }))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default="benchmarks/results/window_memory")
    p.add_argument("--frames", type=int, nargs="+", default=[256, 32])
    p.add_argument("--work", default=None, help="folder for the zarr stores (default: OUTPUT/work, removed after)")
    p.add_argument("--run", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--make", nargs=2, metavar=("PATH", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run:
        run_one(*args.run)
        return 0
    if args.make:
        make_input(Path(args.make[0]), int(args.make[1]))
        return 0
    out_dir = Path(args.output)
    work = Path(args.work) if args.work else out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for frames in args.frames:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make", str(work / f"in_{frames}.zarr"), str(frames)], check=True)
        print(f"made {frames} frames in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rows = []
    for allocator, env in ALLOCATORS.items():
        for frames in args.frames:
            inp, res = work / f"in_{frames}.zarr", work / f"out_{frames}.zarr"
            proc = subprocess.run([sys.executable, __file__, "--run", str(inp), str(res)],
                                  capture_output=True, text=True, check=False, env={**os.environ, **env})
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            row = {"allocator": allocator, **json.loads(proc.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    ratios = {}
    for allocator in ALLOCATORS:
        mine = [r for r in rows if r["allocator"] == allocator]
        big, small = max(mine, key=lambda r: r["frames"]), min(mine, key=lambda r: r["frames"])
        ratios[allocator] = round(big["peak_rss_mb"] / small["peak_rss_mb"], 3)
    report = {"rows": rows, "peak_ratio": ratios, "within_20_percent": {a: abs(r - 1) <= 0.2 for a, r in ratios.items()},
              "prior": "GaussianPrior(0, 0.5, linear schedule) (analytic, no network)", "steps": 2,
              "operator": SPEC, "frame_size": [HEIGHT, WIDTH], "threads": os.environ.get("OMP_NUM_THREADS"),
              "allocators": ALLOCATORS}
    (out_dir / "window_memory.json").write_text(json.dumps(report, indent=2))
    lines = ["| allocator | frames | input (MB) | output (MB) | windows | peak RSS (MB) | seconds |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['allocator']} | {r['frames']} | {r['input_mb']} | {r['output_mb']} | {r['windows']} | "
              f"{r['peak_rss_mb']} | {r['seconds']} |" for r in rows]
    lines.append("")
    lines += [f"peak RSS ratio {max(args.frames)} / {min(args.frames)} frames, {a}: {r:.3f} "
              f"({'within' if abs(r - 1) <= 0.2 else 'NOT within'} 20 %)" for a, r in ratios.items()]
    (out_dir / "window_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not args.work:
        import shutil

        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
