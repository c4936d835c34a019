"""Side by side: a default restore of one clip by the current code and by a reference (the previous release).

A figure measured on a shared machine changes with its load; a ratio measured in one run, with the
two codes alternating (reference, current, reference, current, ...), holds. Each run is a fresh
Python process (:mod:`._clip_worker`) that imports napari-svi from a source folder: the reference's
``src`` exported from git (``git archive REV src``, the release of 2026-11-26 by default) or the
current code's own. Both restore the same measurement with their own defaults on the same number of
threads; the parent scores both against the ground truth.

The clip: the held-out nuclei time-lapse that ships with napari-svi (frames 0.., a centred crop),
degraded by the quality benchmark's ``temporal-box7-noisy`` task (box of 7 frames, symmetric
boundary, Poisson-Gaussian noise of 200 photons at the 99.9th percentile plus 2 photons of read
noise, fixed seed).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The 2026-11-26 release of napari-svi (a commit of its repository): the default reference.
RELEASE = "95cdad5"
RELEASE_NAME = "release of 2026-11-26 (95cdad5)"
WORKER = Path(__file__).with_name("_clip_worker.py")


@dataclass
class ClipRun:
    """One timed restore: seconds of the ``restore`` call, its peak memory above the start, the result."""

    seconds: float
    peak_mb: float
    restored: np.ndarray
    info: dict


#: ``runner(y, spec)`` restores the measurement ``y`` (T, H, W) for the operator spec (a dict of
#: :class:`~napari_svi.operators.OperatorSpec` arguments) and returns a :class:`ClipRun`.
Runner = Callable[[np.ndarray, dict], ClipRun]


def benchmark_clip(frames: int = 16, size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """``(truth, measurement, spec, record)``: the held-out clip and its ``temporal-box7-noisy`` measurement."""
    from ..datasets import load_heldout_timelapse
    from .quality import TASKS, QualitySettings, make_measurement, prepare_truth

    truth, record = prepare_truth(load_heldout_timelapse(), frames=frames, crop=size)
    task = TASKS["temporal-box7-noisy"]
    y, spec, noise = make_measurement(truth, task, QualitySettings(seed=seed))
    spec_args = {"temporal_psf": spec.temporal_psf, "temporal_boundary": spec.temporal_boundary}
    return truth, y, spec_args, {**record, "task": task.name, "noise": noise, "operator": spec_args}


def repository_root(start: Path | None = None) -> Path | None:
    """The git work tree holding this napari-svi (``None`` for an installed copy or without git)."""
    here = (start or Path(__file__)).resolve().parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else None


def export_source(rev: str, dest: Path, repo: Path | None = None) -> Path:
    """``git archive REV src`` of the repository unpacked into ``dest``; returns the exported ``src`` folder."""
    repo = repo or repository_root()
    if repo is None:
        raise ValueError(f"--reference {rev}: exporting a git revision needs napari-svi's git repository, and this "
                         "napari-svi is not inside one; give a source folder (one holding napari_svi/) or 'none'")
    archive = Path(dest) / "src.tar"
    try:
        done = subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), rev, "src"], cwd=repo,
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        raise ValueError(f"--reference {rev}: git archive failed ({err})") from None
    if done.returncode:
        raise ValueError(f"--reference {rev}: not a revision of {repo} with a src folder "
                         f"({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'git archive failed'})")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    return Path(dest) / "src"


def source_folder(reference: str, tmp: Path) -> tuple[Path, str]:
    """The folder to import the reference from, and its name: a folder holding ``napari_svi/``, or a git revision."""
    path = Path(reference)
    if path.is_dir():
        src = path / "src" if (path / "src" / "napari_svi").is_dir() else path
        if not (src / "napari_svi" / "__init__.py").is_file():
            raise ValueError(f"--reference {reference}: the folder holds no napari_svi package (nor src/napari_svi)")
        return src, str(path)
    name = RELEASE_NAME if reference == RELEASE else f"git revision {reference}"
    return export_source(reference, tmp), name


def current_source() -> Path:
    """The source folder of the napari-svi that is running (the folder that holds ``napari_svi/``)."""
    return Path(__file__).resolve().parents[2]


#: ``--allocator``: the environment of each restore's process. glibc keeps arrays below its dynamic mmap
#: threshold (up to 32 MB) on the heap, where the same code's peak varies by a quarter from run to run
#: (benchmarks/results/speed/side_by_side_2026-12-03); a fixed 1 MB threshold maps every large array on its
#: own, so the peak is the live set (benchmarks/window_memory.py does the same).
ALLOCATORS = {"default": {}, "mmap-1mb": {"MALLOC_MMAP_THRESHOLD_": "1048576"}}


def subprocess_runner(src: Path, *, threads: int, options: dict | None = None, python: str = sys.executable,
                      timeout_s: float = 3600.0, extra_env: dict | None = None) -> Runner:
    """A :data:`Runner` that restores in a fresh process importing napari-svi from ``src`` (:mod:`._clip_worker`).

    ``options``: keyword arguments of that code's ``restore`` (JSON values); nothing else is set
    but ``device="cpu"`` unless given, so each code runs with its own defaults. ``extra_env``: more
    environment variables of the process (an allocator setting of :data:`ALLOCATORS`).
    """
    options = {"device": "cpu", **(options or {})}

    def run(y: np.ndarray, spec: dict) -> ClipRun:
        with tempfile.TemporaryDirectory(prefix="napari-svi-clip-") as tmp:
            tmp = Path(tmp)
            np.save(tmp / "y.npy", np.asarray(y, np.float32))
            job = {"src": str(src), "input": str(tmp / "y.npy"), "output": str(tmp / "x.npy"), "spec": spec,
                   "options": options, "threads": int(threads)}
            (tmp / "job.json").write_text(json.dumps(job))
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   "PYTHONPATH": str(src), **(extra_env or {})}
            done = subprocess.run([python, str(WORKER), str(tmp / "job.json")], env=env, capture_output=True,
                                  text=True, timeout=timeout_s)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode or not lines:
                tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
                raise RuntimeError(f"the restore with the code in {src} failed (exit status {done.returncode}):\n{tail}")
            info = json.loads(lines[-1])
            peak = info.pop("peak_mb")  # None where the process's high-water mark cannot be read
            return ClipRun(info.pop("seconds"), float("nan") if peak is None else peak, np.load(tmp / "x.npy"), info)

    return run


def compare(runners: dict[str, Runner], truth: np.ndarray, y: np.ndarray, spec: dict, *, repeats: int = 2,
            progress: Callable[[str], object] | None = print) -> dict:
    """Run every runner ``repeats`` times, alternating (A, B, A, B, ...), and score each run against ``truth``.

    The first runner is the reference. Returns ``{"runs", "summary", "ratio"}`` (JSON-able): every
    run (``name``, ``round``, ``seconds``, ``peak_mb``, ``psnr``); per runner the median seconds,
    frames per second at the median, the median and the largest peak memory and the PSNR (with its
    spread over the runs); and the ratios of each other runner to the reference: the speed-up as the
    ratio of the medians and as the median of the per-round ratios (each round's two runs share the
    machine's load of that moment), the peak memory as the ratio of the medians and of the largest.
    """
    from .metrics import psnr, truth_scale

    if repeats < 1 or not runners:
        raise ValueError(f"compare needs at least one runner and repeats >= 1, got {len(runners)} and {repeats}")
    scale = truth_scale(truth)
    truth01 = scale.to_unit(truth)
    runs: list[dict] = []
    for r in range(repeats):
        for name, runner in runners.items():
            run = runner(y, spec)
            if run.restored.shape != truth.shape:
                raise RuntimeError(f"{name}: restored shape {run.restored.shape} is not the truth's {truth.shape}")
            rec = {"name": name, "round": r, "seconds": round(float(run.seconds), 3),
                   "peak_mb": round(float(run.peak_mb), 1), "psnr": round(psnr(truth01, scale.to_unit(run.restored)), 3),
                   **{k: v for k, v in run.info.items() if k in ("napari_svi_version", "load_average_1min", "threads")}}
            runs.append(rec)
            if progress:
                progress(f"round {r + 1}/{repeats} {name}: {rec['seconds']:.2f} s, peak {rec['peak_mb']:.0f} MB, "
                         f"PSNR {rec['psnr']:.2f} dB")
    frames = int(truth.shape[0])
    summary = {}
    for name in runners:
        mine = [x for x in runs if x["name"] == name]
        sec = statistics.median(x["seconds"] for x in mine)
        psnrs = [x["psnr"] for x in mine]
        summary[name] = {"seconds_median": round(sec, 3), "seconds_min": min(x["seconds"] for x in mine),
                         "seconds_per_clip": round(sec, 3), "frames_per_second": round(frames / sec, 4),
                         "peak_mb": _median_or_nan([x["peak_mb"] for x in mine]),
                         "peak_mb_max": max((x["peak_mb"] for x in mine if x["peak_mb"] == x["peak_mb"]),
                                            default=float("nan")), "psnr": round(statistics.median(psnrs), 3),
                         "psnr_spread": round(max(psnrs) - min(psnrs), 3)}
    names = list(runners)
    ref = names[0]
    ratio = {}
    for name in names[1:]:
        per_round = [a["seconds"] / b["seconds"] for a, b in zip((x for x in runs if x["name"] == ref),
                                                                  (x for x in runs if x["name"] == name), strict=True)]
        ratio[name] = {"speedup_of_medians": round(summary[ref]["seconds_median"] / summary[name]["seconds_median"], 3),
                       "speedup_per_round": [round(v, 3) for v in per_round],
                       "speedup_median_of_rounds": round(statistics.median(per_round), 3),
                       "psnr_difference_db": round(summary[name]["psnr"] - summary[ref]["psnr"], 3),
                       "peak_mb_ratio": round(summary[name]["peak_mb"] / max(summary[ref]["peak_mb"], 1e-9), 3),
                       "peak_mb_ratio_of_max": round(summary[name]["peak_mb_max"] / max(summary[ref]["peak_mb_max"], 1e-9), 3)}
    return {"reference": ref, "frames": frames, "shape": list(truth.shape), "runs": runs, "summary": summary,
            "ratio": ratio}


def _median_or_nan(values: list[float]) -> float:
    known = [v for v in values if v == v]
    return round(float(statistics.median(known)), 1) if known else float("nan")


def comparison_markdown(result: dict) -> str:
    """The side-by-side table, the ratios and every run."""
    m = result.get("machine", {})
    clip = result.get("clip", {})
    shape = " x ".join(str(s) for s in result["shape"])
    lines = [f"# Side by side: a default restore of {shape} (frames x height x width)", ""]
    if result.get("command"):
        lines += [f"Command: `{result['command']}`", ""]
    lines += [f"Machine: {m.get('processor')}, {m.get('cpu_cores')} cores (usable {m.get('cpu_cores_usable')}), "
              f"torch {m.get('torch')}, {result.get('threads')} thread(s) per restore; load average "
              f"{m.get('load_average_1min')} at the start, {m.get('load_average_1min_end')} at the end.", "",
              f"Clip: {clip.get('task', '?')} of the held-out nuclei time-lapse (frames {clip.get('frames')}, rows "
              f"{clip.get('rows')}, columns {clip.get('columns')}). Each run is a fresh process; the codes alternate "
              f"({result.get('repeats')} rounds). Seconds: the `restore` call (prior loading included), "
              "peak: resident memory above the start of that call"
              + (f" (allocator: {result['allocator']}, {ALLOCATORS[result['allocator']] or 'glibc as it comes'})."
                 if result.get("allocator") in ALLOCATORS else "."), "",
              "| code | settings | seconds per clip (median) | frames per second | peak MB (median, largest) | PSNR (dB) |",
              "|---|---|---:|---:|---:|---:|"]
    for name, s in result["summary"].items():
        opts = result.get("options", {}).get(name) or {}
        text = ", ".join(f"{k}={v}" for k, v in opts.items()) or "defaults"
        lines.append(f"| {name} | {text} | {s['seconds_median']:.2f} | {s['frames_per_second']:.3f} | "
                     f"{s['peak_mb']:.0f}, {s.get('peak_mb_max', s['peak_mb']):.0f} | {s['psnr']:.2f} |")
    lines.append("")
    for name, r in result["ratio"].items():
        lines.append(f"**{name} vs {result['reference']}: {r['speedup_of_medians']:.2f}x faster** (ratio of the "
                     f"medians; per round {', '.join(f'{v:.2f}' for v in r['speedup_per_round'])}, median "
                     f"{r['speedup_median_of_rounds']:.2f}x); PSNR {r['psnr_difference_db']:+.2f} dB; peak memory "
                     f"x{r['peak_mb_ratio']:.2f} (medians; largest x{r.get('peak_mb_ratio_of_max', r['peak_mb_ratio']):.2f}).")
    lines += ["", "| round | code | seconds | peak MB | PSNR (dB) |", "|---|---|---:|---:|---:|"]
    for x in result["runs"]:
        lines.append(f"| {x['round'] + 1} | {x['name']} | {x['seconds']:.2f} | {x['peak_mb']:.0f} | {x['psnr']:.2f} |")
    return "\n".join(lines) + "\n"


def parse_options(items: list[str] | None, flag: str) -> dict:
    """``["steps=10", "eta=auto"]`` -> ``{"steps": 10, "eta": "auto"}`` (values read as JSON, else kept as text)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{flag}: expected KEY=VALUE with KEY an argument of restore, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_reference_comparison(reference: str = RELEASE, *, frames: int = 16, size: int = 128, repeats: int = 2,
                             threads: int = 1, current_options: dict | None = None,
                             reference_options: dict | None = None, seed: int = 0, allocator: str = "default",
                             progress: Callable[[str], object] | None = print) -> dict:
    """The clip of :func:`benchmark_clip` restored by ``reference`` (a git revision or a source folder) and by
    the current code, alternating, ``repeats`` rounds; :func:`compare`'s result plus the settings."""
    if allocator not in ALLOCATORS:
        raise ValueError(f"--allocator must be one of {list(ALLOCATORS)}, got {allocator!r}")
    truth, y, spec, clip = benchmark_clip(frames, size, seed)
    env = ALLOCATORS[allocator]
    options = {"reference": dict(reference_options or {}), "current": dict(current_options or {})}
    with tempfile.TemporaryDirectory(prefix="napari-svi-reference-") as tmp:
        src, name = source_folder(reference, Path(tmp))
        runners = {"reference": subprocess_runner(src, threads=threads, options=options["reference"], extra_env=env),
                   "current": subprocess_runner(current_source(), threads=threads, options=options["current"], extra_env=env)}
        if progress:
            progress(f"side by side: {name} (reference) and the current code ({current_source()}), "
                     f"{frames} x {size} x {size}, {threads} thread(s), {repeats} rounds")
        result = compare(runners, truth, y, spec, repeats=repeats, progress=progress)
    return {**result, "reference_code": name, "current_code": str(current_source()), "options": options,
            "threads": threads, "repeats": repeats, "clip": clip, "allocator": allocator}
