"""``napari-svi train``: train a diffusion prior on a lab's own still images (TIFF files).

The images are checked before any training starts (files exist, are readable, finite, not
constant, larger than a patch). Progress and loss show in a progress bar. Ctrl-C stops after the
current step and saves a checkpoint; running the same command again resumes it, and a larger
``--steps`` extends a finished run. The prior folder gets a ``MODEL_CARD.md`` saying what data and
which command made it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shlex
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .intensity import percentile_scale

_DEFAULTS = {"steps": 4000, "batch_size": 16, "patch_size": 64, "lr": 2e-4, "ema": 0.999, "schedule": "linear",
             "seed": 0, "base_channels": 32, "channel_mults": "1,2,4", "blocks_per_level": 2, "device": "auto"}  # fmt: skip


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` on the ``napari-svi`` subcommand parser."""
    p = subparsers.add_parser(
        "train",
        help="train a diffusion prior on your own still images",
        description="Train a noise-prediction UNet prior on still images of your sample (TIFF files). "
        "Ctrl-C stops after the current step and saves a checkpoint; the same command resumes, a larger "
        "--steps extends a finished run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="TIFF files: 2-D images or stacks of frames")
    p.add_argument("-o", "--output", required=True, metavar="PRIOR_DIR", help="folder to write the prior into")
    p.add_argument("--steps", type=int, default=_DEFAULTS["steps"], help="total training steps")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS["batch_size"], help="patches per step")
    p.add_argument("--patch-size", type=int, default=_DEFAULTS["patch_size"], help="patch height and width (pixels)")
    p.add_argument("--lr", type=float, default=_DEFAULTS["lr"], help="AdamW learning rate")
    p.add_argument("--ema", type=float, default=_DEFAULTS["ema"], help="decay of the weights' moving average")
    p.add_argument("--schedule", choices=("linear", "cosine"), default=_DEFAULTS["schedule"], help="noise schedule")
    p.add_argument("--seed", type=int, default=_DEFAULTS["seed"], help="random seed")
    p.add_argument("--base-channels", type=int, default=_DEFAULTS["base_channels"], help="UNet width at full resolution")
    p.add_argument("--channel-mults", type=_int_list, default=_DEFAULTS["channel_mults"], help="width multiplier per level")
    p.add_argument("--blocks-per-level", type=int, default=_DEFAULTS["blocks_per_level"], help="residual blocks per level")
    p.add_argument("--device", default=_DEFAULTS["device"], help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="auto: bfloat16 autocast on CUDA, float32 on the CPU")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop after this many minutes of training (resumable: run the same command again)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if PRIOR_DIR holds a checkpoint")
    from .cli_flags import add_threads_flag

    add_threads_flag(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Validate the images, train, write the model card. 0 when done, 130 when stopped by Ctrl-C."""
    from .priors.loading import resolve_device
    from .priors.unet import UNetConfig
    from .threads import set_torch_threads
    from .training import TrainConfig, train

    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.lr,
        ema_decay=args.ema,
        schedule=args.schedule,
        seed=args.seed,
        unet=UNetConfig(
            base_channels=args.base_channels,
            channel_mults=tuple(_int_list(args.channel_mults)),
            blocks_per_level=args.blocks_per_level,
        ),
    )
    if not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if args.minutes is not None and not args.minutes > 0:
        raise ValueError(f"--minutes must be positive, got {args.minutes}")
    set_torch_threads(args.threads, "--threads")
    device = resolve_device(args.device)
    from .outputs import check_prior_folder

    out = check_prior_folder(args.output, args.images)
    images, sources = read_training_images(args.images, args.patch_size)
    progress = _Progress()
    started = time.perf_counter()
    with progress, _stop_on_ctrl_c(progress):
        train(images, out, config, device=device, resume=not args.no_resume, precision=args.precision,
              max_seconds=None if args.minutes is None else args.minutes * 60, callback=progress,
              data_sources=sources)
    trained = json.loads((out / "config.json").read_text())["training"] if (out / "config.json").exists() else {}
    done = int(trained.get("steps_done", 0))
    write_model_card(out, args, sources, device=str(device), session_seconds=time.perf_counter() - started)
    if progress.stop:
        print(f"stopped at step {done} of {args.steps}; checkpoint saved in {out}, run the same command to resume")
        return 130
    if done < args.steps:
        print(f"--minutes reached at step {done} of {args.steps}; prior written to {out}, run the same command to go on")
        return 0
    print(f"prior written to {out} ({done} steps)")
    return 0


def read_training_images(paths: list[str], patch_size: int) -> tuple[list[np.ndarray], list[str]]:
    """Read TIFFs as lists of single-channel images, checking each; names the file on any problem.

    Colour samples (``S``) and channel (``C``) axes are split into separate images, so every
    channel is normalised on its own; all other axes are frames.
    """
    import tifffile

    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"training image(s) not found: {', '.join(missing)}")
    images, sources = [], []
    for path in paths:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                data, axes = series.asarray(), series.axes
        except Exception as err:  # tifffile raises several types for non-TIFF input
            raise ValueError(f"{path} is not a readable TIFF file ({type(err).__name__}: {err})") from None
        parts = _split_channels(data, axes)
        for k, a in enumerate(parts):
            name = path if len(parts) == 1 else f"{path} (channel {k})"
            _check_image(a, name, patch_size)
            images.append(a)
            sources.append(name)
    return images, sources


def _split_channels(data: np.ndarray, axes: str) -> list[np.ndarray]:
    """One array per colour sample (``S``) and channel (``C``), each without those axes."""
    parts = [(data, axes)]
    for axis in "SC":
        split = []
        for a, ax in parts:
            if axis in ax and len(ax) == a.ndim:
                i = ax.index(axis)
                split += [(np.take(a, k, axis=i), ax[:i] + ax[i + 1 :]) for k in range(a.shape[i])]
            else:
                split.append((a, ax))
        parts = split
    return [a for a, _ in parts]


def _check_image(a: np.ndarray, name: str, patch_size: int) -> None:
    if a.ndim < 2:
        raise ValueError(f"{name}: shape {a.shape} is not an image (need at least 2 dimensions)")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name}: pixel type {a.dtype} is not a number")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    h, w = a.shape[-2:]
    if min(h, w) < patch_size:
        raise ValueError(f"{name}: frames are {h}x{w} pixels, smaller than the {patch_size}-pixel --patch-size")
    percentile_scale(a, name=name)  # raises on constant images


def write_model_card(out: Path, args: argparse.Namespace, sources: list[str], *, device: str, session_seconds: float) -> Path:
    """``MODEL_CARD.md``: data (with SHA-256), command line, steps, time, machine, final loss."""
    import torch

    cfg = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    trained = cfg.get("training", {})
    losses = _read_losses(out / "loss.csv")
    final = f"{losses[-1]:.5f} (mean of the last {min(100, len(losses))} steps: {np.mean(losses[-100:]):.5f})" if losses else "n/a"
    data_rows = []
    for name in sources:
        file = Path(name.split(" (channel ")[0])
        data_rows.append(f"| `{name}` | {_sha256(file)[:16]} |")
    unet = cfg.get("unet", {})
    lines = [
        f"# Diffusion prior `{out.name}`",
        "",
        "A noise-prediction UNet (DDPM loss) trained by `napari-svi train` as an image prior for",
        "napari-svi (Kwon & Ye, ICLR 2025). Load it with `napari_svi.priors.load_prior(<this folder>)`.",
        "",
        "## Data",
        "",
        "| file | SHA-256 (first 16 hex digits) |",
        "|---|---|",
        *data_rows,
        "",
        "Each image or stack is scaled by its 0.1 and 99.9 percentiles to [-1, 1]; random patches with",
        "flips and 90-degree rotations.",
        "",
        "## Training",
        "",
        f"- command: `{command_line(args)}`",
        f"- steps done: {trained.get('steps_done', 'n/a')} of {args.steps}",
        f"- training time: {trained.get('seconds', 'n/a')} s in total, {session_seconds:.1f} s in the latest session",
        f"- final loss: {final}",
        f"- schedule: {cfg.get('schedule', 'n/a')}, 1000 steps; parameters: {trained.get('parameters', 'n/a')}",
        f"- UNet: {json.dumps(unet)}",
        "",
        "## Machine",
        "",
        f"- platform: {platform.platform()}, Python {platform.python_version()}",
        f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        f"- device: {device}{' (' + torch.cuda.get_device_name() + ')' if device.startswith('cuda') else ''}",
        f"- torch {torch.__version__}, napari-svi {trained.get('napari_svi_version', 'n/a')}",
        f"- written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
    ]
    path = out / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def command_line(args: argparse.Namespace) -> str:
    """The full, explicit ``napari-svi train`` command that reproduces ``args``."""
    parts = ["napari-svi", "train", *args.images, "-o", str(args.output)]
    for key in _DEFAULTS:
        value = getattr(args, key)
        value = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value
        parts += [f"--{key.replace('_', '-')}", str(value)]
    if args.no_resume:
        parts.append("--no-resume")
    return shlex.join(parts)


class _Progress:
    """Training callback: a tqdm bar with the loss; returns True (stop) once ``stop`` is set."""

    def __init__(self):
        self.bar = None
        self.stop = False
        self.smoothed: float | None = None
        from .cli_flags import stderr_is_terminal

        # a log file or a pipe gets a line every twentieth of the steps, not a bar's \r fragments
        self.lines = not stderr_is_terminal()
        self._t0, self._part = time.perf_counter(), None

    def __call__(self, info: dict) -> bool:
        from tqdm.auto import tqdm

        loss = info["loss"]
        self.smoothed = loss if self.smoothed is None else 0.98 * self.smoothed + 0.02 * loss
        if self.lines:
            part = 20 * info["step"] // max(info["steps"], 1)
            if part != self._part:
                self._part = part
                print(f"napari-svi train: step {info['step']}/{info['steps']}, loss {self.smoothed:.4f} "
                      f"({time.perf_counter() - self._t0:.0f} s)", file=sys.stderr, flush=True)
            return self.stop
        if self.bar is None:
            self.bar = tqdm(total=info["steps"], initial=info["step"] - 1, unit="step", desc="training", file=sys.stderr)
        self.bar.set_postfix(loss=f"{self.smoothed:.4f}", refresh=False)
        self.bar.update(1)
        return self.stop

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def _stop_on_ctrl_c(progress: _Progress):
    """First Ctrl-C: finish the step, save a checkpoint, stop. A second one interrupts at once."""

    def handler(signum, frame):
        if progress.stop:
            raise KeyboardInterrupt
        progress.stop = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _int_list(text: str | list[int]) -> list[int]:
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive comma-separated integers such as 1,2,4, got {text!r}")
    return values


def _read_losses(path: Path) -> list[float]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
