"""``napari-svi benchmark quality|speed``: the benchmark commands (registered in ``napari_svi.cli``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_parser(subparsers) -> None:
    """Add ``benchmark`` with its ``quality`` and ``speed`` subcommands to the ``napari-svi`` parser."""
    from ..cli_flags import eta_arg
    from .quality import METHODS, TASKS, QualitySettings
    from .reference import RELEASE

    defaults = QualitySettings()
    p = subparsers.add_parser("benchmark", help="restoration quality and speed benchmarks",
                              description="Benchmarks: quality against classical baselines on real data, and speed.")
    sub = p.add_subparsers(dest="benchmark_command", required=True)

    q = sub.add_parser(
        "quality", help="degrade a real time-lapse, restore it with every method, score against the truth",
        description="Degrade a clean time-lapse for each task (forward model + noise, fixed seeds), restore it with "
        "each method and write results.json, details.json, results.md and PNG figures to REPORT_DIR.",
    )
    q.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="folder for the report (created)")
    q.add_argument("--data", default=None, metavar="STACK.tif",
                   help="ground-truth time-lapse TIFF (default: the held-out half of the nuclei time-lapse shipped "
                   "with napari-svi)")
    q.add_argument("--time-axis", type=int, default=None, help="time axis of --data (default: from the file, else 0)")
    q.add_argument("--frames", type=int, default=16, help="frames of the clip (default: 16)")
    q.add_argument("--start-frame", type=int, default=0, help="first frame of the clip (default: 0)")
    q.add_argument("--crop", type=int, default=128,
                   help="centred crop of CROP x CROP pixels; 0 = whole frames (default: 128)")
    q.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                   help=f"tasks to run (default: all): {', '.join(TASKS)}")
    q.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"methods to run (default: all): {', '.join(METHODS)}")
    q.add_argument("--prior", default="default", help="prior of svi and independent: default | folder | checkpoint")
    q.add_argument("--steps", type=int, default=defaults.steps, help="SVI denoising steps, NFE (default: restore's)")
    _add_start_flags(q)
    q.add_argument("--eta", type=eta_arg, default=defaults.eta,
                   help="SVI DDIM stochasticity in [0, 1] or 'auto' (default: auto, restore's)")
    q.add_argument("--cg-steps", type=int, default=defaults.cg_steps,
                   help="CG iterations per SVI step, and of the 'cg' baseline (default: 5)")
    q.add_argument("--seed", type=int, default=defaults.seed, help="seed of noise, masks and sampling (default: 0)")
    q.add_argument("--device", default=defaults.device, help="auto (CUDA, else Apple MPS, else CPU) | cpu | cuda | cuda:N | mps (default: auto)")
    q.add_argument("--peak-photons", type=float, default=defaults.peak_photons,
                   help="noisy tasks: photons at the truth's 99.9th percentile (default: 200)")
    q.add_argument("--read-noise", type=float, default=defaults.read_noise_photons,
                   help="noisy tasks: Gaussian read noise in photons (default: 2)")
    q.add_argument("--rl-max-iter", type=int, default=defaults.rl_max_iter,
                   help="Richardson-Lucy: most iterations searched by the oracle (default: 200)")
    q.add_argument("--tv-iter", type=int, default=defaults.tv_iter, help="TV-ADMM iterations (default: 50)")
    q.add_argument("--threads", type=int, default=None,
                   help="CPU threads of PyTorch (default: PyTorch's choice); recorded with the results")
    q.add_argument("--max-pixels", type=int, default=None,
                   help="svi/independent: at most this many pixels per network call (same result; on a CPU about "
                   "50000 is faster than whole stacks); default: restore's default")
    q.add_argument("--featured-task", default=None, choices=list(TASKS), metavar="TASK",
                   help="task shown in figure.png (default: temporal-box7-noisy)")
    q.add_argument("--save-stacks", action="store_true",
                   help="also write every estimate as REPORT_DIR/stacks/TASK_METHOD.tif (float32, data units)")
    q.set_defaults(func=run_quality_command)

    from .suite import SUITE_CLIPS, SUITE_TASKS

    r = sub.add_parser(
        "suite", help="the realistic suite: held-out clips of several structures x realistic degradations",
        description="Run every method on every (clip, task) of the realistic suite (nuclei, actin, mitochondria, "
        "cell walls; temporal and spatial blur, downsampling, missing pixels and frames, short stacks, two photon "
        "levels) and write results.json and results.md to REPORT_DIR.",
    )
    r.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="folder for the report (created)")
    r.add_argument("--clips", nargs="+", default=list(SUITE_CLIPS), choices=list(SUITE_CLIPS), metavar="CLIP",
                   help=f"clips (default: all): {', '.join(SUITE_CLIPS)}")
    r.add_argument("--tasks", nargs="+", default=list(SUITE_TASKS), choices=list(SUITE_TASKS), metavar="TASK",
                   help=f"tasks (default: all): {', '.join(SUITE_TASKS)}")
    r.add_argument("--methods", nargs="+", default=[m for m in METHODS if m not in ("cg-converged", "independent")],
                   choices=list(METHODS), metavar="METHOD", help="methods (default: all but cg-converged and independent)")
    r.add_argument("--frames", type=int, default=12, help="frames per clip (default: 12)")
    r.add_argument("--crop", type=int, default=96, help="frame size of the clips in px (default: 96)")
    r.add_argument("--data-dir", default=None, help="folder of the suite's still crops (default: benchmarks/data/suite)")
    r.add_argument("--prior", default="default", help="prior of svi: default | folder | checkpoint")
    r.add_argument("--steps", type=int, default=None, help="SVI denoising steps (default: restore's default)")
    r.add_argument("--eta", type=eta_arg, default=None, help="SVI DDIM stochasticity in [0, 1] or 'auto' (default: auto)")
    _add_start_flags(r)
    r.add_argument("--samples", type=int, default=1,
                   help="SVI posterior samples; the result is their mean (default: 1, restore's default)")
    r.add_argument("--seed", type=int, default=defaults.seed, help="seed of noise, masks and sampling (default: 0)")
    r.add_argument("--device", default=defaults.device, help="auto (CUDA, else Apple MPS, else CPU) | cpu | cuda | cuda:N | mps (default: auto)")
    r.add_argument("--threads", type=int, default=None, help="CPU threads of PyTorch (default: PyTorch's choice)")
    r.set_defaults(func=run_suite_command)

    s = sub.add_parser(
        "speed", help="time per network evaluation and per restore versus frames and frame size",
        description="First restore one clip side by side with a reference code (the 2026-11-26 release by default), "
        "alternating fresh processes, and write comparison.json and comparison.md (seconds per clip, frames per second, "
        "peak memory, PSNR, the ratio); then time one network evaluation and one restore versus the number of frames "
        "and the frame size on each device, with peak memory and linear fits (speed.json, speed.md, speed.png).",
    )
    s.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="folder for the report (created)")
    s.add_argument("--prior", default="default", help="default | folder | checkpoint")
    s.add_argument("--device", nargs="+", default=None,
                   help="devices to time (default: cpu, plus cuda when available)")
    s.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64, 128, 256],
                   help="frame counts of the first sweep (default: 8 16 32 64 128 256)")
    s.add_argument("--frames-size", type=int, default=64, help="frame size in px of the frame sweep (default: 64)")
    s.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256, 512, 1024],
                   help="frame sizes in px of the second sweep (default: 64 128 256 512 1024)")
    s.add_argument("--size-frames", type=int, default=2, help="frames of the size sweep (default: 2)")
    s.add_argument("--steps", type=int, default=2,
                   help="NFE per timed restore (default: 2, to keep the CPU sweep short; the network dominates)")
    s.add_argument("--cg-steps", type=int, default=5, help="CG iterations per step (default: 5)")
    s.add_argument("--max-pixels", type=int, default=2**18,
                   help="most pixels per network call; bounds its memory (default: 262144 = 4 x 256 x 256)")
    s.add_argument("--tile-size", type=int, default=256,
                   help="also time the largest frame size with the network in tiles of this size; 0 = skip (default: 256)")
    s.add_argument("--threads", type=int, default=None,
                   help="CPU threads of PyTorch (default: the cores this process may use)")
    s.add_argument("--reference", default=RELEASE, metavar="REV|FOLDER|none",
                   help=f"first restore one clip side by side with this code: a git revision of napari-svi's "
                   f"repository or a source folder holding napari_svi/; 'none' skips it (default: {RELEASE}, the "
                   "release of 2026-11-26)")
    s.add_argument("--clip-frames", type=int, default=16, help="frames of the side-by-side clip (default: 16)")
    s.add_argument("--clip-size", type=int, default=128, help="frame size in px of the side-by-side clip (default: 128)")
    s.add_argument("--repeats", type=int, default=2,
                   help="side-by-side rounds, alternating reference and current code (default: 2: A B A B)")
    s.add_argument("--current-option", nargs="+", default=None, metavar="KEY=VALUE",
                   help="restore arguments of the current code in the side-by-side run, e.g. steps=10 (values as "
                   "JSON; default: its defaults)")
    s.add_argument("--reference-option", nargs="+", default=None, metavar="KEY=VALUE",
                   help="restore arguments of the reference code in the side-by-side run (default: its defaults)")
    s.add_argument("--allocator", choices=("default", "mmap-1mb"), default="default",
                   help="memory allocator setting of the side-by-side processes: glibc as it comes, or a fixed 1 MB "
                   "mmap threshold (every large array mapped on its own: the peak is the live set, steadier from "
                   "run to run; default: default)")
    s.add_argument("--no-sweep", action="store_true", help="only the side-by-side run, no frame and size sweeps")
    s.set_defaults(func=run_speed_command)


#: Packages of the ``benchmark`` extra: checked before any work, not after ten minutes of it.
OPTIONAL_PACKAGES = {"matplotlib": "the PNG figures"}


def check_optional_dependencies(command: str) -> None:
    """``ValueError`` naming every missing package of the ``benchmark`` extra and how to install it."""
    import importlib.util

    missing = []
    for name, purpose in OPTIONAL_PACKAGES.items():
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None, or one without a spec
            found = False
        if not found:
            missing.append(f"{name} (for {purpose})")
    if missing:
        raise ValueError(f"benchmark {command} needs {', '.join(missing)}, which is not installed: "
                         "pip install 'napari-svi[benchmark]'")


def _check_report_folder(path: str) -> Path:
    """``-o REPORT_DIR``: a folder (created with its parents) that can be written to."""
    from ..outputs import check_writable_folder

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output: {str(out)!r} is a file; name a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    return check_writable_folder(out)


def _set_threads(threads: int | None) -> None:
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def _load_truth(args):
    from ..datasets import HELD_OUT_FILE, load_heldout_timelapse
    from .quality import prepare_truth

    if args.data is None:
        data, time_axis = load_heldout_timelapse(), 0 if args.time_axis is None else args.time_axis
        name = f"napari-svi held-out nuclei time-lapse ({HELD_OUT_FILE}, real fluorescence, not used in training)"
    else:
        from ..io import read_stack

        data, info = read_stack(args.data)
        time_axis = args.time_axis if args.time_axis is not None else (info.time_axis or 0)
        name = str(args.data)
    truth, record = prepare_truth(data, time_axis=time_axis, frames=args.frames, start_frame=args.start_frame,
                                  crop=None if args.crop in (None, 0) else args.crop)
    return truth, {"name": name, **record}


def run_quality_command(args: argparse.Namespace) -> int:
    from ..priors.loading import load_prior, resolve_device
    from .quality import QualitySettings, run_quality
    from .report import command_line, machine_info, write_quality_report

    for name in ("frames", "steps", "cg_steps", "rl_max_iter", "tv_iter"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.peak_photons <= 0 or args.read_noise < 0:
        raise ValueError("--peak-photons must be > 0 and --read-noise >= 0")
    check_optional_dependencies("quality")
    _set_threads(args.threads)
    out = _check_report_folder(args.output)
    truth, data_record = _load_truth(args)
    device = resolve_device(args.device)
    needs_prior = any(m in ("svi", "independent") for m in args.methods)
    prior = load_prior(args.prior, device, channels=1) if needs_prior else None
    if prior is not None and args.max_pixels is not None:
        from ..priors.tiling import TiledPrior

        if args.max_pixels < 1:
            raise ValueError(f"--max-pixels must be >= 1, got {args.max_pixels}")
        prior = TiledPrior(prior, tile_size=None, max_pixels_per_batch=args.max_pixels)
    settings = QualitySettings(steps=args.steps, eta=args.eta, cg_steps=args.cg_steps, seed=args.seed,
                               start=args.start, blend=args.blend, gamma=args.gamma,
                               device=str(device), peak_photons=args.peak_photons, read_noise_photons=args.read_noise,
                               rl_max_iter=args.rl_max_iter, tv_iter=args.tv_iter)
    header = {"command": command_line(), "data": data_record, "machine": machine_info(device),
              "prior": None if prior is None else {**_prior_record(prior, args.prior),
                                                   "max_pixels_per_call": args.max_pixels}}
    print(f"quality benchmark: clip {truth.shape} (T, H, W), {len(args.tasks)} tasks x {len(args.methods)} methods, "
          f"device {device}", file=sys.stderr)
    t0 = time.perf_counter()
    result = run_quality(truth, prior, tasks=tuple(args.tasks), methods=tuple(args.methods), settings=settings,
                         progress=lambda line: print(line, file=sys.stderr, flush=True))
    header["machine"]["load_average_1min_end"] = machine_info()["load_average_1min"]
    written = write_quality_report(result, out, header=header, featured_task=args.featured_task)
    if args.save_stacks:
        written += _save_stacks(result, out / "stacks")
    print(f"wrote {len(written)} files to {out} in {time.perf_counter() - t0:.0f} s")
    return 0


def run_suite_command(args: argparse.Namespace) -> int:
    from ..priors.loading import load_prior, resolve_device
    from .quality import QualitySettings
    from .report import command_line, machine_info, write_json
    from .suite import load_clip, run_suite, suite_markdown

    if args.frames < 8 or args.crop < 32:
        raise ValueError(f"--frames must be >= 8 and --crop >= 32, got {args.frames} and {args.crop}")
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    _set_threads(args.threads)
    for name in args.clips:  # fail on missing data before loading the prior or running anything
        load_clip(name, args.frames, args.crop, args.data_dir)
    device = resolve_device(args.device)
    prior = load_prior(args.prior, device, channels=1) if "svi" in args.methods or "independent" in args.methods else None
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    header = {"command": command_line(), "machine": machine_info(device),
              "prior": None if prior is None else _prior_record(prior, args.prior)}
    t0 = time.perf_counter()
    result = run_suite(prior, clips=tuple(args.clips), tasks=tuple(args.tasks), methods=tuple(args.methods),
                       frames=args.frames, crop=args.crop, data_dir=args.data_dir,
                       settings=QualitySettings(seed=args.seed, device=str(device),
                                                start=args.start, blend=args.blend, gamma=args.gamma, samples=args.samples,
                                                **{k: getattr(args, k) for k in ("steps", "eta")
                                                   if getattr(args, k) is not None}),
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    header["machine"]["load_average_1min_end"] = machine_info()["load_average_1min"]
    header["seconds_total"] = round(time.perf_counter() - t0, 1)
    write_json(out / "results.json", {**header, **result})
    (out / "results.md").write_text(suite_markdown(result, header))
    print(f"wrote results.json and results.md to {out} in {header['seconds_total']:.0f} s")
    return 0


def _add_start_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", choices=("tv", "noise"), default="tv",
                   help="SVI's start: the TV estimate diffused to t=200, or noise as in the paper (default: tv)")
    p.add_argument("--blend", choices=("cv", "none"), default="cv",
                   help="SVI's blend with the TV estimate by held-out data, or none (default: cv)")
    p.add_argument("--gamma", choices=("auto", "piece"), default="auto",
                   help="SVI's data weight: one per 64-px window, or one per piece (default: auto)")


def _prior_record(prior, spec: str) -> dict:
    training = prior.info.get("training", {}) if isinstance(prior.info, dict) else {}
    return {"spec": str(spec), "name": prior.name, "steps_done": training.get("steps_done"),
            "parameters": training.get("parameters"), "data": training.get("data")}


def _save_stacks(result, folder: Path) -> list[Path]:
    import numpy as np
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "ground_truth.tif"]
    tifffile.imwrite(paths[0], np.asarray(result.truth, np.float32))
    for (task, method), stack in result.estimates.items():
        path = folder / f"{task}_{method}.tif"
        tifffile.imwrite(path, np.asarray(stack, np.float32))
        paths.append(path)
    return paths


def run_speed_command(args: argparse.Namespace) -> int:
    import torch

    from ..priors.loading import load_prior
    from ..threads import choose_threads, usable_cores
    from .reference import comparison_markdown, parse_options, run_reference_comparison
    from .report import command_line, machine_info, write_json, write_speed_report
    from .speed import run_speed

    check_optional_dependencies("speed")
    _set_threads(args.threads)
    out = _check_report_folder(args.output)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if min(args.frames + args.sizes + [args.frames_size, args.size_frames, args.steps, args.max_pixels]) < 1:
        raise ValueError("frames, sizes, steps and --max-pixels must be positive")
    if args.clip_frames < 8 or args.clip_size < 32 or args.repeats < 1:
        raise ValueError(f"--clip-frames must be >= 8, --clip-size >= 32 and --repeats >= 1, got {args.clip_frames}, "
                         f"{args.clip_size} and {args.repeats}")
    options = {"current": parse_options(args.current_option, "--current-option"),
               "reference": parse_options(args.reference_option, "--reference-option")}
    prior = load_prior(args.prior, "cpu", channels=1)
    bad = [s for s in args.sizes + [args.frames_size] if s % prior.size_multiple]
    if bad:
        raise ValueError(f"frame sizes must be multiples of {prior.size_multiple} for this prior, got {bad}")
    written = []
    if str(args.reference).lower() != "none":
        machine = {**machine_info(), "cpu_cores_usable": usable_cores()}
        threads = choose_threads(args.threads, "--threads")
        comparison = run_reference_comparison(
            args.reference, frames=args.clip_frames, size=args.clip_size, repeats=args.repeats, threads=threads,
            current_options=options["current"], reference_options=options["reference"], allocator=args.allocator,
            progress=lambda line: print(line, file=sys.stderr, flush=True))
        machine["load_average_1min_end"] = machine_info()["load_average_1min"]
        comparison = {"command": command_line(), "machine": machine, **comparison}
        written.append(write_json(out / "comparison.json", comparison))
        (out / "comparison.md").write_text(comparison_markdown(comparison))
        written.append(out / "comparison.md")
        for name, r in comparison["ratio"].items():
            print(f"{name} vs {comparison['reference_code']}: {r['speedup_of_medians']:.2f}x faster, "
                  f"PSNR {r['psnr_difference_db']:+.2f} dB, peak memory x{r['peak_mb_ratio']:.2f} (medians)")
    if not args.no_sweep:
        machine = machine_info()
        result = run_speed(prior, devices=tuple(devices), frames=tuple(args.frames), sizes=tuple(args.sizes),
                           frames_size=args.frames_size, size_frames=args.size_frames, steps=args.steps,
                           cg_steps=args.cg_steps, max_pixels_per_batch=args.max_pixels,
                           tile_size=args.tile_size or None,
                           progress=lambda line: print(line, file=sys.stderr, flush=True))
        machine["load_average_1min_end"] = machine_info()["load_average_1min"]
        result = {"command": command_line(), "machine": machine, **result}
        written += write_speed_report(result, out)
        for f in result["fits"]:
            print(f"{f['device']:5s} {f['kind']:8s} vs {f['x']}: {f['slope']:.4g} s per {f['unit']}, "
                  f"intercept {f['intercept']:.3g} s, R^2 {f['r2']:.4f}")
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
