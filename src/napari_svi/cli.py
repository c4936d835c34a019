"""The ``napari-svi`` command line: degrade, restore, info, and the subcommands of other modules.

Each extra subcommand lives in its own module exposing ``add_parser(subparsers)``; the parser it
adds sets ``func`` (called with the parsed namespace, returning an exit code). List the module in
``_SUBCOMMAND_MODULES`` to register it. Only the module of the command being run is imported
(the benchmark's imports PyTorch), so a command starts reporting within a second.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

_SUBCOMMAND_MODULES: dict[str, str] = {
    "train": "napari_svi.cli_train", "benchmark": "napari_svi.benchmark.cli", "batch": "napari_svi.batch"}

DESCRIPTION = """Restore microscopy time-lapses blurred in time and space, undersampled or with missing pixels,
with an image diffusion prior (SVI: Kwon & Ye, ICLR 2025).

Run 'napari-svi COMMAND --help' for the options of one command. Example:
  napari-svi restore movie.tif -o restored.tif --temporal-psf uniform:7"""


def _version() -> str:
    from . import __version__

    return f"napari-svi {__version__}"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``napari-svi`` parser; with ``command`` (one of the subcommands) only that one's module is imported."""
    parser = argparse.ArgumentParser(prog="napari-svi", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    _add_degrade(sub)
    _add_restore(sub)
    _add_info(sub)
    for name, module in _SUBCOMMAND_MODULES.items():
        if command in (None, name) or command not in ("degrade", "restore", "info", "--version", *_SUBCOMMAND_MODULES):
            importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"napari-svi {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-svi {args.command}: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- shared operator flags


def add_operator_flags(p: argparse.ArgumentParser) -> None:
    """The flags that describe the forward model, shared by degrade, restore and batch."""
    g = p.add_argument_group("forward model (true stack -> measurement)")
    g.add_argument("--time-axis", type=int, default=None, help="index of the time axis (default: from the file's axes, else 0)")
    g.add_argument("--temporal-psf", default="none", metavar="SPEC",
                   help="none | uniform:K (box of K frames) | gaussian:SIGMA (frames) | FILE (1-D kernel) (default: none)")
    g.add_argument("--exposure-ms", type=float, default=None,
                   help="with --frame-interval-ms: temporal PSF = box of exposure / interval frames (replaces --temporal-psf)")
    g.add_argument("--frame-interval-ms", type=float, default=None, help="time between frame starts, ms")
    g.add_argument("--temporal-boundary", choices=("symmetric", "circular"), default="symmetric",
                   help="symmetric (mirror at the first and last frame; realistic) or circular (the paper's) (default: symmetric)")
    g.add_argument("--temporal-subsample", type=int, default=1, metavar="S", help="only every S-th frame is measured (default: 1)")
    g.add_argument("--spatial-psf", default="none", metavar="SPEC",
                   help="none | gaussian:SIGMA (pixels) | airy:NA,WAVELENGTH_NM,PIXEL_NM | FILE (TIFF) (default: none)")
    g.add_argument("--downsample", type=int, default=1, metavar="S", help="integer downsampling factor (mean of S x S blocks)")
    g.add_argument("--mask", default=None, metavar="FILE", help="TIFF mask at measurement resolution, nonzero = observed")


def operator_from_args(args: argparse.Namespace):
    from .operators import OperatorSpec
    from .psf import temporal_kernel_from_exposure

    temporal = None if args.temporal_psf in (None, "none") else args.temporal_psf
    if (args.exposure_ms is None) != (args.frame_interval_ms is None):
        raise ValueError("--exposure-ms and --frame-interval-ms must be given together")
    if args.exposure_ms is not None:
        if temporal is not None:
            raise ValueError("give either --temporal-psf or --exposure-ms/--frame-interval-ms, not both")
        temporal = temporal_kernel_from_exposure(args.exposure_ms, args.frame_interval_ms)
    return OperatorSpec(
        temporal_psf=temporal,
        temporal_boundary=args.temporal_boundary,
        temporal_subsample=args.temporal_subsample,
        spatial_psf=None if args.spatial_psf in (None, "none") else args.spatial_psf,
        downsample=args.downsample,
        mask=args.mask,
    )


def _read_input(args):
    from .io import StackInfo, read_stack
    from .lazy import is_zarr_path, open_zarr, zarr_axes

    if is_zarr_path(args.input):
        data, attrs = open_zarr(args.input)  # lazy: read window by window
        record = attrs.get("napari_svi") if isinstance(attrs.get("napari_svi"), dict) else {}
        px = record.get("pixel_size_um")
        info = StackInfo(axes=zarr_axes(attrs, data.ndim) or "Q" * (data.ndim - 2) + "YX",
                         pixel_size_um=tuple(px) if px else None, frame_interval_s=record.get("frame_interval_s"))
    else:
        data, info = read_stack(args.input)
    time_axis = args.time_axis if args.time_axis is not None else info.time_axis
    if time_axis is None:
        raise ValueError(f"{args.input} has shape {data.shape}: a time-lapse needs a time axis and two image axes")
    if time_axis < 0:
        time_axis += data.ndim
    axes = info.axes if len(info.axes) == data.ndim else "Q" * (data.ndim - 2) + "YX"
    axes = axes[:time_axis] + "T" + axes[time_axis + 1 :]
    axes = "".join(a if a in "TZCYXS" else "Z" for a in axes)  # unknown letters (Q, I) become Z
    if len(set(axes)) != len(axes):
        axes = "Q" * (data.ndim - 2) + "YX"
        axes = axes[:time_axis] + "T" + axes[time_axis + 1 :]
    return data, info, time_axis, axes


def _check_output(args) -> Path:
    out = Path(args.output)
    if out.resolve() == Path(args.input).resolve():
        raise ValueError("the output file must differ from the input: the input is never overwritten")
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.exists():
        raise ValueError(f"output folder does not exist: {out.parent}")
    return out


def _common_io_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="input TIFF")
    p.add_argument("-o", "--output", required=True, help="output TIFF (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


# ---------------------------------------------------------------- degrade


def _add_degrade(sub) -> None:
    p = sub.add_parser("degrade", help="simulate a measurement from a clean stack (forward model + noise)",
                       description="Apply the forward model and noise to a clean stack, in the file's own units.")
    _common_io_flags(p)
    add_operator_flags(p)
    p.add_argument("--noise-sigma", type=float, default=0.0, help="Gaussian noise std in the file's units (default: 0)")
    p.add_argument("--poisson-peak", type=float, default=None, help="Poisson noise: photons at the 99.9th percentile")
    p.add_argument("--missing-fraction", type=float, default=None,
                   help="make a random mask with this fraction of missing pixels (written next to the output)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and the random mask (default: 0)")
    add_threads_flag(p)
    p.set_defaults(func=_run_degrade)


def _run_degrade(args) -> int:
    from . import __version__
    from .degrade import degrade, random_mask
    from .io import write_stack
    from .threads import set_torch_threads

    out = _check_output(args)
    set_torch_threads(args.threads, "--threads")
    data, info, time_axis, axes = _read_input(args)
    spec = operator_from_args(args)
    t, h, w = data.shape[time_axis], data.shape[-2], data.shape[-1]
    mask_path = None
    if args.missing_fraction is not None:
        if args.mask is not None:
            raise ValueError("give either --mask or --missing-fraction, not both")
        m_shape = spec.measurement_shape((t, h, w))
        spec.mask = random_mask(m_shape, args.missing_fraction, seed=args.seed)
    if spec.mask is not None:
        mask_path = out.with_name(out.stem + "_mask.tif")
    measurement = degrade(data, spec, time_axis=time_axis, noise_sigma=args.noise_sigma,
                          poisson_peak=args.poisson_peak, seed=args.seed)
    px = info.pixel_size_um
    if px is not None and args.downsample > 1:
        px = (px[0] * args.downsample, px[1] * args.downsample)
    meta = {"napari_svi_version": __version__, "command": "degrade", "source": str(args.input),
            "operator": spec.to_dict(), "noise_sigma": args.noise_sigma, "poisson_peak": args.poisson_peak,
            "seed": args.seed, "time_axis": time_axis, "mask_file": str(mask_path) if mask_path else None}
    if mask_path is not None:
        mask = (spec.mask_array() != 0).astype(np.uint8)
        write_stack(mask_path, mask, axes=("TYX" if mask.ndim == 3 else "YX"), pixel_size_um=px,
                    metadata={"napari_svi_version": __version__, "command": "degrade (mask)", "observed": "nonzero"})
    interval = info.frame_interval_s * args.temporal_subsample if info.frame_interval_s else None
    write_stack(out, measurement, axes=axes, pixel_size_um=px, frame_interval_s=interval, metadata=meta)
    print(f"wrote {out} {measurement.shape} float32" + (f" and mask {mask_path}" if mask_path else ""))
    return 0


# ---------------------------------------------------------------- restore


def _noise_arg(text: str):
    if text == "auto":
        return "auto"
    if text in ("none", "0"):
        return None
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("must be 'auto', 'none' or a number >= 0")
    return value


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the sampler, the prior and the windowing, shared by restore and batch."""
    p.add_argument("--noise-sigma", type=_noise_arg, default="auto",
                   help="noise std in the file's units, 'auto' (estimate) or 'none' (noiseless) (default: auto)")
    p.add_argument("--gamma", type=float, default=None, help="data-consistency weight (default: set at every step from the noise level and the data residual)")
    p.add_argument("--prior", default="default", help="default | prior folder | diffusers folder | ADM .pt file")
    p.add_argument("--steps", type=int, default=20, help="denoising steps (default: 20)")
    p.add_argument("--eta", type=float, default=0.15, help="DDIM stochasticity (default: 0.15)")
    p.add_argument("--cg-steps", type=int, default=5, help="CG iterations per step (default: 5)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sampler's noise; the same seed, input and device give the same result (default: 0)")
    p.add_argument("--samples", type=int, default=1, help="posterior samples; >1 also writes OUTPUT_std.tif")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--independent-noise", action="store_true", help="ablation: per-frame noise instead of shared")
    p.add_argument("--true-frames", type=int, default=None, help="frames of the true stack with --temporal-subsample")
    add_threads_flag(p)
    g = p.add_argument_group("long and large stacks")
    g.add_argument("--window", type=int, default=16, metavar="FRAMES",
                   help="frames each temporal window keeps; 0 = the whole stack at once (default: 16)")
    g.add_argument("--window-overlap", type=int, default=None, metavar="FRAMES",
                   help="blended overlap of neighbouring windows (default: min(4, window / 4))")
    g.add_argument("--window-margin", type=int, default=None, metavar="FRAMES",
                   help="frames solved beyond each window edge (default: temporal PSF length - 1 + subsample - 1)")
    g.add_argument("--tile-size", type=int, default=None, metavar="PIXELS",
                   help="evaluate the network in tiles of this size (frames larger than GPU memory allows)")
    g.add_argument("--memory-budget", default=None, metavar="BYTES",
                   help="cut frames into spatial tiles so one window's solver fits, e.g. 8GB (default: no limit)")


def _threads_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def add_threads_flag(p: argparse.ArgumentParser) -> None:
    """``--threads``: PyTorch's CPU threads, by default the cores this process may use."""
    p.add_argument("--threads", type=_threads_arg, default=None, metavar="N",
                   help="CPU threads of PyTorch (default: OMP_NUM_THREADS when set, else the CPU cores this process "
                   "may use, from its CPU affinity and cgroup quota); on a machine shared with other jobs fewer "
                   "threads are often faster")


def sampler_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`napari_svi.restore.iter_restore` from the sampler flags."""
    return dict(
        prior=args.prior, steps=args.steps, eta=args.eta, cg_steps=args.cg_steps, noise_sigma=args.noise_sigma,
        gamma="auto" if args.gamma is None else args.gamma, seed=args.seed, samples=args.samples,
        device=args.device, batch_consistent=not args.independent_noise, true_frames=args.true_frames,
        window=args.window or None, window_overlap=args.window_overlap, window_margin=args.window_margin,
        tile_size=args.tile_size, memory_budget=args.memory_budget, threads=args.threads,
    )


def _add_restore(sub) -> None:
    p = sub.add_parser("restore", help="restore a degraded time-lapse with the diffusion prior",
                       description="Restore a measurement (low-resolution when --downsample is set); "
                       "the output is the estimate of the true stack, float32 in the input's units. "
                       "A .zarr input is read window by window; a .zarr output is written window by window "
                       "and resumed when the command is run again after an interruption.")
    p.add_argument("input", help="input TIFF or zarr store (.zarr)")
    p.add_argument("-o", "--output", required=True,
                   help="output TIFF (written atomically) or zarr store (.zarr: written window by window, resumable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_operator_flags(p)
    add_sampler_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_restore)


class RestoreProgress:
    """The restore's progress bar on stderr: each stage from the first second, then every sampler step.

    ``stage(name)`` names what runs now (reading, loading the prior, ...); ``report(info)`` takes a
    report of :func:`napari_svi.restore.iter_restore`. The elapsed time counts from the start.
    """

    TEXT = {"loading prior": "loading the prior", "estimating noise": "estimating the noise",
            "planning windows": "planning windows"}

    def __init__(self, quiet: bool = False):
        from tqdm import tqdm

        self.t0 = time.perf_counter()
        self.bar = tqdm(total=None, desc="starting", unit="step", disable=quiet, file=sys.stderr, dynamic_ncols=True)

    def stage(self, name: str, detail: str = "") -> None:
        self.bar.set_description_str(self.TEXT.get(name, name) + (f" {detail}" if detail else ""), refresh=True)

    def report(self, info: dict) -> None:
        if info["stage"] not in ("window", "sampling"):
            self.stage(info["stage"])
            return
        if self.bar.total != info["total"]:
            start = getattr(self.bar, "start_t", None)
            self.bar.reset(total=info["total"])
            if start is not None:
                self.bar.start_t = start  # elapsed covers the whole run; the rate is from the steps
        windows = info.get("windows") or 1
        desc = "sampling" + (f", window {info['window'] + 1}/{windows}" if windows > 1 else "")
        if getattr(self.bar, "desc", None) != desc:
            self.bar.set_description_str(desc, refresh=info["stage"] == "window")
        self.bar.update(info["step"] - self.bar.n)

    def close(self, failed: bool = False) -> None:
        if failed:
            self.bar.leave = False  # an error message follows; do not leave a half bar above it
        self.bar.close()


def _run_restore(args) -> int:
    progress = RestoreProgress(quiet=args.quiet)
    try:
        code = _restore_with_progress(args, progress)
    except BaseException:
        progress.close(failed=True)
        raise
    return code


def _restore_with_progress(args, progress: RestoreProgress) -> int:
    from .io import write_stack
    from .lazy import is_zarr_path

    to_zarr = is_zarr_path(args.output)
    if to_zarr:  # an existing store is resumed (same parameters) or replaced (--overwrite)
        out = Path(args.output)
        if out.resolve() == Path(args.input).resolve():
            raise ValueError("the output must differ from the input: the input is never overwritten")
        if not out.parent.exists():
            raise ValueError(f"output folder does not exist: {out.parent}")
    else:
        out = _check_output(args)
    progress.stage("reading", Path(args.input).name)
    data, info, time_axis, axes = _read_input(args)
    spec = operator_from_args(args)
    from .restore import iter_restore  # imports PyTorch: after the first report

    gen = iter_restore(data, spec, time_axis=time_axis, **sampler_kwargs(args),
                       out=str(out) if to_zarr else None, overwrite=args.overwrite)
    try:
        while True:
            progress.report(next(gen))
    except StopIteration as stop:
        result = stop.value
    progress.stage("writing", out.name)
    px = info.pixel_size_um
    if px is not None and args.downsample > 1:
        px = (px[0] / args.downsample, px[1] / args.downsample)
    interval = info.frame_interval_s / args.temporal_subsample if info.frame_interval_s else None
    meta = {**result.metadata, "command": "restore", "source": str(args.input)}
    if to_zarr:
        import zarr

        group = zarr.open_group(str(out), mode="r+")
        group.attrs["napari_svi"] = json.loads(json.dumps(
            {**meta, "axes": axes, "pixel_size_um": list(px) if px else None, "frame_interval_s": interval},
            default=str))
        progress.close()
        print(f"wrote {out} (restored{', std, samples' if args.samples > 1 else ''}) in "
              f"{time.perf_counter() - progress.t0:.1f} s on {result.metadata['device']}")
        return 0
    write_stack(out, result.restored, axes=axes, pixel_size_um=px, frame_interval_s=interval, metadata=meta)
    written = [str(out)]
    if result.std is not None:
        std_path = out.with_name(out.stem + "_std.tif")
        write_stack(std_path, result.std.astype(np.float32), axes=axes, pixel_size_um=px,
                    frame_interval_s=interval, metadata={**meta, "content": "per-pixel posterior std"})
        written.append(str(std_path))
    progress.close()
    print(f"wrote {', '.join(written)} in {time.perf_counter() - progress.t0:.1f} s on {result.metadata['device']}")
    return 0


# ---------------------------------------------------------------- info


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="version, devices and bundled priors")
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    import platform

    import torch

    from . import __version__

    print(f"napari-svi {__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPU cores")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            print(f"device cuda:{i}: {props.name}, {props.total_memory / 2**30:.1f} GiB")
    else:
        print("device cuda: not available (restores run on the CPU)")
    default = Path(__file__).parent / "priors" / "default"
    if (default / "config.json").is_file():
        import json

        cfg = json.loads((default / "config.json").read_text())
        tr = cfg.get("training", {})
        print(f"bundled prior 'default': {cfg.get('architecture')} {tr.get('parameters', '?')} parameters, "
              f"{tr.get('steps_done', '?')} training steps, schedule {cfg.get('schedule')}")
    else:
        print("bundled prior 'default': missing from this installation")
    return 0


if __name__ == "__main__":  # python -m napari_svi.cli
    raise SystemExit(main())
