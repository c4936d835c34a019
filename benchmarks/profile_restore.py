"""Where a default restore spends its time: network, CG, operators, I/O, scaling, noise estimate, the rest.

Runs the command line's default restore (``napari-svi restore IN.tif -o OUT.tif --temporal-psf
uniform:7 --threads N``) in this process on a crop of the bundled blurred sample (the README's main
job, cut to ``--frames`` x ``--crop`` x ``--crop``) and credits every second to one category. Each
category is a set of functions wrapped by a timer; time is *exclusive*: a call inside another
category's call (an operator inside CG, a read inside the noise estimate) counts for the inner one,
so the categories add up to the wall time. Then, optionally, the same restore under cProfile (the
functions with the most own time) and one network evaluation under ``torch.profiler`` (time per
PyTorch operator).

    OMP_NUM_THREADS=1 python benchmarks/profile_restore.py --threads 1 -o benchmarks/results/speed/profile.md

The wrappers cost microseconds per call (a few thousand calls per restore): well under 1 % here.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

#: category -> (module path, attribute path) of the functions it times, looked up where they are called.
CATEGORIES = {
    "network (UNet eps prediction)": [("napari_svi.priors.tiling", "TiledPrior.predict_noise")],
    "operators (A, A^T, masks)": [("napari_svi.operators.base", f"LinearOperator.{m}")
                                  for m in ("forward", "adjoint", "normal", "observed")],
    "CG vector arithmetic": [("napari_svi.sampler", "conjugate_gradient")],
    "gamma rule (residual, statistics)": [("napari_svi.sampler", "operator_statistics"),
                                          ("napari_svi.noise", "ResidualGamma.__call__")],
    "noise draws (NoiseField)": [("napari_svi.pieces", "NoiseField.region")],
    "I/O (TIFF read and write, window reads)": [("napari_svi.io", "read_input"), ("napari_svi.io", "write_stack"),
                                                 ("napari_svi.pieces", "read_frames")],
    "intensity scaling": [("napari_svi.restore", "measurement_scale"),
                          ("napari_svi.intensity", "IntensityScale.to_unit"),
                          ("napari_svi.intensity", "IntensityScale.from_unit")],
    "noise estimate": [("napari_svi.restore", "stack_noise_sigma")],
    "prior loading": [("napari_svi.restore", "restoration_prior")],
    "TV estimates (held-out weight, SURE, discrepancy, ADMM)": [
        ("napari_svi.warm_start", n) for n in ("holdout_tv", "sure_tv", "discrepancy_tv", "tv_admm")],
    "Richardson-Lucy (held-out stop, full run)": [("napari_svi.warm_start", n) for n in ("holdout_rl", "richardson_lucy")],
    "blend weights (held-out fits, bands)": [("napari_svi.warm_start", n) for n in ("blend_weights", "band_weights")],
    "consistency check of the result": [("napari_svi.restore", "_Restoration.check")],
    "planning (windows, operators)": [("napari_svi.restore", "plan_restore"), ("napari_svi.pieces", "Plan._piece")],
}
REST = "everything else (sampler arithmetic, Python, torch import excluded)"


class ExclusiveTimer:
    """Wraps functions so that every second of a run is credited to the innermost category running."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []  # [category, start of the current uncredited stretch]
        self._undo: list = []

    def wrap(self, owner, name: str, category: str) -> None:
        original = owner.__dict__[name]
        timer = self

        def wrapped(*args, **kwargs):
            now = time.perf_counter()
            if timer._stack:  # pause the enclosing category
                outer = timer._stack[-1]
                timer.seconds[outer[0]] += now - outer[1]
            timer._stack.append([category, now])
            timer.calls[category] += 1
            try:
                return original(*args, **kwargs)
            finally:
                end = time.perf_counter()
                cat, start = timer._stack.pop()
                timer.seconds[cat] += end - start
                if timer._stack:
                    timer._stack[-1][1] = end

        setattr(owner, name, wrapped)
        self._undo.append((owner, name, original))

    def install(self, categories: dict) -> None:
        import importlib

        for category, targets in categories.items():
            for module_name, path in targets:
                owner = importlib.import_module(module_name)
                *parents, name = path.split(".")
                for p in parents:
                    owner = getattr(owner, p)
                self.wrap(owner, name, category)

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def make_input(folder: Path, frames: int, crop: int) -> Path:
    """The first ``frames`` frames of the bundled blurred sample, a centred ``crop`` x ``crop`` cut, as a TIFF."""
    import tifffile

    from napari_svi.datasets import sample_data_dir

    data = tifffile.imread(sample_data_dir() / "nuclei_timelapse_blurred.tif")
    h, w = data.shape[-2:]
    y0, x0 = (h - crop) // 2, (w - crop) // 2
    path = folder / f"sample_{frames}x{crop}x{crop}.tif"
    tifffile.imwrite(path, np.ascontiguousarray(data[:frames, y0 : y0 + crop, x0 : x0 + crop]))
    return path


def cli_args(path: Path, out: Path, threads: int, extra: list[str]) -> list[str]:
    return ["restore", str(path), "-o", str(out), "--temporal-psf", "uniform:7", "--threads", str(threads),
            "--overwrite", "--quiet", *extra]


def network_ops(frames: int, crop: int, threads: int, top: int = 12) -> str:
    """``torch.profiler`` table of one network evaluation of ``frames`` x ``crop`` x ``crop``, as the restore runs it."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from napari_svi.priors.loading import load_prior
    from napari_svi.priors.tiling import TiledPrior

    torch.set_num_threads(threads)
    prior = TiledPrior(load_prior("default", "cpu", channels=1), max_pixels_per_batch=65536)
    x = torch.randn(frames, 1, crop, crop, generator=torch.Generator().manual_seed(0))
    t = torch.full((frames,), 500)
    prior.predict_noise(x, t)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        prior.predict_noise(x, t)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def network_gflop(crop: int) -> float:
    """Floating-point operations of one network evaluation of one ``crop`` x ``crop`` frame, in GFLOP."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_svi.priors.loading import load_prior

    net = load_prior("default", "cpu", channels=1).network
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(torch.zeros(1, 1, crop, crop), torch.full((1,), 500))
    return counter.get_total_flops() / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-cprofile", action="store_true", help="skip the second run under cProfile")
    p.add_argument("--no-torch-profile", action="store_true", help="skip the torch.profiler table of one network call")
    p.add_argument("-o", "--output", default=None, help="write the report (Markdown) here")
    p.add_argument("restore_flags", nargs="*", help="more flags of napari-svi restore (after --)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from napari_svi import cli
    from napari_svi.benchmark.report import machine_info

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = make_input(tmp, args.frames, args.crop)
        argv_cli = cli_args(path, tmp / "out.tif", args.threads, args.restore_flags)
        timer = ExclusiveTimer()
        timer.install(CATEGORIES)
        t0 = time.perf_counter()
        rc = cli.main(argv_cli)
        wall = time.perf_counter() - t0
        timer.uninstall()
        if rc:
            raise SystemExit(f"restore failed with exit status {rc}")
        cprof = None
        if not args.no_cprofile:
            prof = cProfile.Profile()
            t1 = time.perf_counter()
            prof.runcall(cli.main, argv_cli)
            cprof_wall = time.perf_counter() - t1
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
            cprof = (cprof_wall, buf.getvalue())
    ops = None if args.no_torch_profile else network_ops(args.frames, args.crop, args.threads)
    machine = machine_info()
    lines = [f"# Profile of a default restore, {args.frames} x {args.crop} x {args.crop}", "",
             "```", f"OMP_NUM_THREADS={args.threads} python benchmarks/profile_restore.py --threads {args.threads} "
             f"--frames {args.frames} --crop {args.crop}" + (f" -o {args.output}" if args.output else ""),
             "```", "",
             f"The restore: `napari-svi {' '.join(a if a != str(path) else 'CROP.tif' for a in argv_cli)}` "
             "(run in-process; CROP.tif is the centred crop of the first frames of "
             "`src/napari_svi/sample_data/nuclei_timelapse_blurred.tif`, the README's main job; defaults: "
             "20 NFE, 5 CG steps, eta and gamma auto, noise level estimated).", "",
             f"Machine: {machine['processor']}, {machine['cpu_cores']} cores, torch {machine['torch']}, "
             f"{torch.get_num_threads()} thread(s), load average {machine['load_average_1min']} at the end.", "",
             f"Wall time of the restore: **{wall:.2f} s**. Exclusive time per category (an operator called by CG "
             "counts as operator, not CG):", "",
             "| category | seconds | share | calls |", "|---|---:|---:|---:|"]
    credited = sum(timer.seconds.values())
    rows = sorted(timer.seconds.items(), key=lambda kv: -kv[1]) + [(REST, wall - credited)]
    for cat, sec in rows:
        lines.append(f"| {cat} | {sec:.2f} | {100 * sec / wall:.1f} % | {timer.calls.get(cat, '')} |")
    for cat in CATEGORIES:
        if cat not in timer.seconds:
            lines.append(f"| {cat} | 0 | 0 % | 0 |")
    gflop = network_gflop(args.crop)
    nfe = timer.calls.get("network (UNet eps prediction)", 0)
    net_s = timer.seconds.get("network (UNet eps prediction)", 0.0)
    total = gflop * args.frames * nfe
    lines += ["", f"Arithmetic of the network (torch.utils.flop_counter): {gflop:.2f} GFLOP per {args.crop} x {args.crop} "
              f"frame per evaluation, so {total / 1000:.2f} TFLOP for {nfe} evaluations of {args.frames} frames: "
              f"{total / max(net_s, 1e-9):.0f} GFLOP/s achieved in the network here. One core of this CPU does at most "
              "2 x 8 float32 fused multiply-adds per cycle (AVX2, two FMA units): 32 FLOP per cycle, about 100 GFLOP/s "
              "at 3 GHz: the most a lever that keeps the arithmetic could win is the gap to that, on a core that is not "
              "shared (see the load average above)."]
    if cprof is not None:
        lines += ["", f"## cProfile (second run, {cprof[0]:.2f} s under the profiler): top 20 by own time", "",
                  "```", *_trim_pstats(cprof[1]), "```"]
    if ops is not None:
        lines += ["", f"## torch.profiler: one network evaluation of {args.frames} x {args.crop} x {args.crop} "
                  "(chunks of 65536 pixels, as restore runs it)", "", "```", ops.rstrip(), "```"]
    text = "\n".join(lines) + "\n"
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    sys.stdout.write(text)
    return 0


def _trim_pstats(text: str) -> list[str]:
    """The table of a pstats print, without the header lines naming the temporary folder."""
    lines = text.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    root = str(Path(__file__).resolve().parents[1])
    return [line.replace(root + "/", "").replace(sys.prefix + "/", "") for line in lines[start:]]


if __name__ == "__main__":
    raise SystemExit(main())
