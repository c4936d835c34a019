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
import os
import sys
import time
from pathlib import Path

import numpy as np

from ._version import __version__
from .cli_flags import (
    add_operator_flags,
    add_sampler_flags,
    add_threads_flag,
    operator_from_args,
    sampler_kwargs,
    stderr_is_terminal,
)

_SUBCOMMAND_MODULES: dict[str, str] = {
    "train": "napari_svi.cli_train", "benchmark": "napari_svi.benchmark.cli", "batch": "napari_svi.batch",
    "estimate": "napari_svi.cli_estimate"}

DESCRIPTION = """Restore microscopy time-lapses blurred in time and space, undersampled or with missing pixels,
with an image diffusion prior (SVI: Kwon & Ye, ICLR 2025).

Run 'napari-svi COMMAND --help' for the options of one command. Example:
  napari-svi restore movie.tif -o restored.tif --temporal-psf uniform:7"""


def _version() -> str:
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
    except Exception as err:  # noqa: BLE001 - no traceback reaches a user; NAPARI_SVI_DEBUG=1 shows it
        if os.environ.get("NAPARI_SVI_DEBUG"):
            raise
        from .outputs import describe_error

        print(f"napari-svi {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------- shared flags: napari_svi.cli_flags


def _check_output(args, side: tuple[str, ...] = (), zarr_ok: bool = False) -> Path:
    """``-o`` and its side files ``OUT_<tag>.tif`` checked before the work (:mod:`napari_svi.outputs`)."""
    from .outputs import check_outputs, input_paths, side_path

    out = Path(args.output)
    check_outputs([out, *(side_path(out, tag) for tag in side)], input_paths(args),
                  overwrite=args.overwrite, zarr_ok=zarr_ok)
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
    from .degrade import degrade, random_mask
    from .io import read_input, write_stack
    from .outputs import side_path
    from .threads import set_torch_threads

    if args.missing_fraction is not None and args.mask is not None:
        raise ValueError("give either --mask or --missing-fraction, not both")
    # the mask is written next to the output, unless --mask already names that file
    copy_mask = args.missing_fraction is not None or (
        args.mask is not None and Path(args.mask).resolve() != side_path(args.output, "mask").resolve())
    out = _check_output(args, side=("mask",) if copy_mask else ())
    set_torch_threads(args.threads, "--threads")
    data, info, time_axis, axes = read_input(args.input, args.time_axis)
    spec = operator_from_args(args)
    t, h, w = data.shape[time_axis], data.shape[-2], data.shape[-1]
    mask_path = None
    if args.missing_fraction is not None:
        m_shape = spec.measurement_shape((t, h, w))
        spec.mask = random_mask(m_shape, args.missing_fraction, seed=args.seed)
    if spec.mask is not None and copy_mask:
        mask_path = side_path(out, "mask")  # checked with the output before the work
    measurement = degrade(data, spec, time_axis=time_axis, noise_sigma=args.noise_sigma,
                          poisson_peak=args.poisson_peak, seed=args.seed)
    px = info.pixel_size_um
    if px is not None and args.downsample > 1:
        px = (px[0] * args.downsample, px[1] * args.downsample)
    meta = {"napari_svi_version": __version__, "command": "degrade", "source": str(args.input),
            "operator": spec.to_dict(), "noise_sigma": args.noise_sigma, "poisson_peak": args.poisson_peak,
            "seed": args.seed, "time_axis": time_axis, "mask_file": str(mask_path or args.mask) if (mask_path or args.mask) else None}
    if mask_path is not None:
        mask = (spec.mask_array() != 0).astype(np.uint8)
        write_stack(mask_path, mask, axes=("TYX" if mask.ndim == 3 else "YX"), pixel_size_um=px,
                    metadata={"napari_svi_version": __version__, "command": "degrade (mask)", "observed": "nonzero"})
    interval = info.frame_interval_s * args.temporal_subsample if info.frame_interval_s else None
    write_stack(out, measurement, axes=axes, pixel_size_um=px, frame_interval_s=interval, metadata=meta)
    print(f"wrote {out} {measurement.shape} float32" + (f" and mask {mask_path}" if mask_path else ""))
    return 0


# ---------------------------------------------------------------- restore


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
            "estimating blur": "estimating the blur", "planning windows": "planning windows"}

    def __init__(self, quiet: bool = False):
        from tqdm import tqdm

        self.t0 = time.perf_counter()
        # a log file or a pipe gets whole lines (a stage, then every tenth of the steps), not a bar's \r fragments
        self.lines = not quiet and not stderr_is_terminal()
        self._said, self._tenth = "", -1
        self.bar = tqdm(total=None, desc="starting", unit="step", disable=quiet or self.lines, file=sys.stderr,
                        dynamic_ncols=True)

    def _line(self, text: str) -> None:
        if text != self._said:
            self._said = text
            print(f"napari-svi restore: {text} ({time.perf_counter() - self.t0:.0f} s)", file=sys.stderr, flush=True)

    def stage(self, name: str, detail: str = "") -> None:
        text = self.TEXT.get(name, name) + (f" {detail}" if detail else "")
        if self.lines:
            self._line(text)
            return
        self.bar.set_description_str(text, refresh=True)

    def report(self, info: dict) -> None:
        if info["stage"] not in ("window", "sampling"):
            self.stage(info["stage"])
            return
        if self.lines:
            windows = info.get("windows") or 1
            where = f", window {info['window'] + 1}/{windows}" if windows > 1 else ""
            tenth = 10 * info["step"] // max(info["total"], 1)
            if tenth != self._tenth or info["stage"] == "window":
                self._tenth = tenth
                self._line(f"sampling{where}: step {info['step']}/{info['total']}")
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
    from .io import read_input, write_stack
    from .lazy import is_zarr_path

    to_zarr = is_zarr_path(args.output)
    # an existing napari-svi store is resumed (same parameters) or replaced (--overwrite)
    out = _check_output(args, side=("std",) if args.samples > 1 and not to_zarr else (), zarr_ok=True)
    progress.stage("reading", Path(args.input).name)
    data, info, time_axis, axes = read_input(args.input, args.time_axis)
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
        std_path = out.with_name(out.stem + "_std.tif")  # checked with the output before the work
        write_stack(std_path, result.std.astype(np.float32), axes=axes, pixel_size_um=px,
                    frame_interval_s=interval, metadata={**meta, "content": "per-pixel posterior std"})
        written.append(str(std_path))
    progress.close()
    print(f"wrote {', '.join(written)} in {time.perf_counter() - progress.t0:.1f} s on {result.metadata['device']}")
    for k, check in enumerate(result.metadata.get("consistency") or []):
        if check.get("message"):  # also recorded in the output's metadata
            print(f"napari-svi restore: warning (stack {k}): {check['message']}", file=sys.stderr)
    if result.metadata.get("sampler_weight_zero"):
        print(f"napari-svi restore: note: {result.metadata['sampler_weight_zero']}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- info


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="version, devices and bundled priors")
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    import platform

    import torch

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


if __name__ == "__main__":  # at the end: main() needs every helper above defined
    raise SystemExit(main())
