"""Rerun the README's time and memory figures: each one the command a user types, timed here.

Every figure runs the ``napari-svi`` commands in a child process, exactly as the README gives them,
and prints the wall seconds, the CPU seconds, the peak memory (the child's maximum resident set),
the PyTorch threads, the machine (CPU, usable cores) and its load: the 1-minute load average
before and after, and the CPU time other processes used meanwhile (from ``/proc/stat``), so a
figure taken on a busy machine says so. ``--json FILE`` also writes the records.

    python tools/readme_figures.py list                     # which README figure comes from where
    python tools/readme_figures.py main-job                 # "The two commands": the main job
    python tools/readme_figures.py degrade-restore          # "Speed": degrade + restore, 16 x 128 x 128
    python tools/readme_figures.py all --json figures.json

``--frames``, ``--crop`` and ``--steps`` shrink the input to try the tool quickly; the record then
says it is not the README's setting. The figures from the benchmarks (network evaluation and
restore scaling, GPU) are printed by their own commands, named by ``list``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "src" / "napari_svi" / "sample_data"
BLURRED, HELDOUT = SAMPLES / "nuclei_timelapse_blurred.tif", SAMPLES / "nuclei_timelapse_heldout.tif"

SOURCES = [
    ("The two commands: main job time, peak memory, PSNR", "python tools/readme_figures.py main-job"),
    ("Results > Speed: degrade + restore of 16 x 128 x 128 at 20 NFE", "python tools/readme_figures.py degrade-restore"),
    ("Results > Speed: network evaluation per frame size, restore per frame, peak memory over frames",
     "napari-svi benchmark speed --prior default --threads 1 -o OUT (writes speed.md with the machine and load)"),
    ("Results > Quality: PSNR table (no times)", "napari-svi benchmark quality ... (see the README line)"),
    ("Results > GPU: restore seconds and GPU memory", "python3 -m napari_svi.benchmark.gpu --device cuda -o OUT "
     "(tools/gpu_session.sh; needs a CUDA GPU)"),
    ("Walk-through: event-loop gaps while restoring", "xvfb-run -a python benchmarks/event_loop.py"),
]


# ------------------------------------------------------------------------------ the machine and its load


def _busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (``/proc/stat``), or None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def machine() -> dict:
    from napari_svi.benchmark.report import machine_info
    from napari_svi.threads import cgroup_cpu_limit, default_threads, usable_cores

    info = machine_info()
    info.pop("torch_threads", None)  # this process's; the commands choose their own
    info.update(cpu_cores_usable=usable_cores(), cgroup_cpu_limit=cgroup_cpu_limit(), default_threads=default_threads())
    return info


def run_timed(argv: list[str], env: dict | None = None) -> dict:
    """Run ``argv``; its wall and CPU seconds, peak memory, exit code and the machine's load meanwhile."""
    load_before = os.getloadavg()[0]
    busy_before, t0 = _busy_seconds(), time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    busy_after = _busy_seconds()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read()
    proc.stdout.close()
    cpu = usage.ru_utime + usage.ru_stime
    peak_kib = usage.ru_maxrss if sys.platform.startswith("linux") else usage.ru_maxrss / 1024
    others = None if busy_before is None or busy_after is None else max(0.0, busy_after - busy_before - cpu)
    return {
        "command": shlex.join(argv), "exit_code": proc.returncode, "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1), "peak_memory_gb": round(peak_kib / 2**20, 2),
        "load_average_1min_before": round(load_before, 2), "load_average_1min_after": round(os.getloadavg()[0], 2),
        "other_processes_cores": None if others is None else round(others / seconds, 2), "output": out.strip(),
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "napari_svi.cli", *args]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _threads_flags(args) -> list[str]:
    return [] if args.threads is None else ["--threads", str(args.threads)]


def _crop(stack: np.ndarray, frames: int | None, crop: int | None) -> np.ndarray:
    if frames:
        stack = stack[:frames]
    if crop:
        y0, x0 = (stack.shape[1] - crop) // 2, (stack.shape[2] - crop) // 2
        stack = stack[:, y0 : y0 + crop, x0 : x0 + crop]
    return np.ascontiguousarray(stack)


def _psnr(truth: np.ndarray, path: Path) -> float:
    from napari_svi.benchmark.metrics import stack_metrics
    from napari_svi.io import read_stack

    return round(stack_metrics(truth, read_stack(path)[0])["psnr"], 2)


# ------------------------------------------------------------------------------ the figures


def main_job(args, work: Path) -> dict:
    """The README's main job: restore the bundled blurred sample (30 x 511 x 256, box of 7 frames)."""
    import tifffile

    from napari_svi.io import read_stack

    truth = _crop(tifffile.imread(HELDOUT), args.frames, args.crop)
    source = BLURRED
    if args.frames or args.crop:  # a smaller try: the same file cut down, with its recorded model
        data, info = read_stack(BLURRED)
        source = work / "blurred_small.tif"
        from napari_svi.io import write_stack

        write_stack(source, _crop(data, args.frames, args.crop), axes="TYX", metadata=info.metadata)
    out = work / "restored.tif"
    flags = ["--temporal-psf", "uniform:7", "--window", "32", "--overwrite", *_threads_flags(args)]
    if args.steps:
        flags += ["--steps", str(args.steps)]
    record = run_timed(_cli("restore", str(source), "-o", str(out), *flags), env=_env())
    if record["exit_code"] == 0:
        record["psnr_measurement_db"] = _psnr(truth, source)
        record["psnr_restored_db"] = _psnr(truth, out)
    return record


def degrade_restore(args, work: Path) -> dict:
    """Degrade a 16 x 128 x 128 clip of the held-out time-lapse (box of 7, noise 2), then restore it."""
    import tifffile

    from napari_svi.io import write_stack

    truth = _crop(tifffile.imread(HELDOUT), args.frames or 16, args.crop or 128)
    clean, blurred, out = work / "clean.tif", work / "blurred.tif", work / "restored.tif"
    write_stack(clean, truth, axes="TYX")
    model = ["--temporal-psf", "uniform:7"]
    first = run_timed(_cli("degrade", str(clean), "-o", str(blurred), *model, "--noise-sigma", "2", "--overwrite",
                           *_threads_flags(args)), env=_env())
    steps = ["--steps", str(args.steps)] if args.steps else []
    second = run_timed(_cli("restore", str(blurred), "-o", str(out), *model, "--overwrite", *steps,
                            *_threads_flags(args)), env=_env())
    record = {
        "command": f"{first['command']} && {second['command']}",
        "exit_code": first["exit_code"] or second["exit_code"],
        "seconds": round(first["seconds"] + second["seconds"], 1),
        "cpu_seconds": round(first["cpu_seconds"] + second["cpu_seconds"], 1),
        "peak_memory_gb": max(first["peak_memory_gb"], second["peak_memory_gb"]),
        "load_average_1min_before": first["load_average_1min_before"],
        "load_average_1min_after": second["load_average_1min_after"],
        "other_processes_cores": None if None in (first["other_processes_cores"], second["other_processes_cores"])
        else round((first["other_processes_cores"] * first["seconds"] + second["other_processes_cores"]
                    * second["seconds"]) / max(first["seconds"] + second["seconds"], 1e-9), 2),
        "parts": {"degrade": first, "restore": second},
    }
    if record["exit_code"] == 0:
        record["psnr_measurement_db"] = _psnr(truth, blurred)
        record["psnr_restored_db"] = _psnr(truth, out)
    return record


FIGURES = {"main-job": main_job, "degrade-restore": degrade_restore}


def _print(name: str, record: dict, readme_setting: bool) -> None:
    print(f"\n{name}{'' if readme_setting else ' (NOT the README setting: --frames/--crop/--steps given)'}")
    print(f"  command: {record['command']}")
    if record["exit_code"]:
        print(f"  FAILED with exit code {record['exit_code']}")
        return
    others = record["other_processes_cores"]
    print(f"  {record['seconds']:.1f} s ({record['seconds'] / 60:.1f} min) wall, {record['cpu_seconds']:.1f} CPU seconds, "
          f"peak memory {record['peak_memory_gb']:.2f} GB")
    print(f"  load average (1 min) {record['load_average_1min_before']} before, {record['load_average_1min_after']} "
          f"after; other processes used {'?' if others is None else others} cores on average meanwhile")
    if "psnr_restored_db" in record:
        print(f"  PSNR against the held-out truth: measurement {record['psnr_measurement_db']} dB, "
              f"restored {record['psnr_restored_db']} dB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("figure", choices=["list", "all", *FIGURES], help="the figure to rerun, all of them, or list sources")
    p.add_argument("--threads", type=int, default=None,
                   help="pass --threads N to every command (default: the commands' own default)")
    p.add_argument("--frames", type=int, default=None, help="try on the first FRAMES frames only (not the README's)")
    p.add_argument("--crop", type=int, default=None, help="try on a centred CROP x CROP crop only (not the README's)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: restore's, 20)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the records as JSON")
    args = p.parse_args(argv)
    if args.figure == "list":
        for figure, command in SOURCES:
            print(f"{figure}\n    {command}")
        return 0
    info = machine()
    print(f"machine: {info['processor']}, {info['cpu_cores_usable']} of {info['cpu_cores']} cores usable "
          f"(cgroup limit {info['cgroup_cpu_limit']}), default threads {info['default_threads']}; "
          f"{info['platform']}, python {info['python']}, torch {info['torch']}, napari-svi {info['napari_svi_version']}")
    readme_setting = not (args.frames or args.crop or args.steps)
    records = {"machine": info, "readme_setting": readme_setting, "threads": args.threads, "figures": {}}
    names = list(FIGURES) if args.figure == "all" else [args.figure]
    failed = False
    for name in names:
        with tempfile.TemporaryDirectory(prefix="napari-svi-figures-") as work:
            record = FIGURES[name](args, Path(work))
        records["figures"][name] = record
        failed |= bool(record["exit_code"])
        _print(name, record, readme_setting)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
