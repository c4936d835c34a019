"""Command-line flags shared by ``napari-svi restore``, ``degrade`` and ``batch``, and their translation.

Its own module so that every command imports it and none imports another command's module.
"""

from __future__ import annotations

import argparse
import sys

from .noise import parse_noise_sigma


def add_operator_flags(p: argparse.ArgumentParser) -> None:
    """The flags that describe the forward model, shared by degrade, restore and batch."""
    g = p.add_argument_group("forward model (true stack -> measurement)")
    g.add_argument("--time-axis", type=int, default=None, help="index of the time axis (default: from the file's axes, else 0)")
    g.add_argument("--temporal-psf", default="none", metavar="SPEC",
                   help="none | uniform:K (box of K frames) | gaussian:SIGMA (frames) | FILE (1-D kernel) | auto (restore: "
                   "estimated from the data, see 'napari-svi estimate') (default: none)")
    g.add_argument("--exposure-ms", type=float, default=None,
                   help="with --frame-interval-ms: temporal PSF = box of exposure / interval frames (replaces --temporal-psf)")
    g.add_argument("--frame-interval-ms", type=float, default=None, help="time between frame starts, ms")
    g.add_argument("--temporal-boundary", choices=("symmetric", "circular"), default="symmetric",
                   help="symmetric (mirror at the first and last frame; realistic) or circular (the paper's) (default: symmetric)")
    g.add_argument("--temporal-subsample", type=int, default=1, metavar="S", help="only every S-th frame is measured (default: 1)")
    g.add_argument("--spatial-psf", default="none", metavar="SPEC",
                   help="none | gaussian:SIGMA (pixels) | airy:NA,WAVELENGTH_NM,PIXEL_NM | FILE (TIFF) | auto (restore: "
                   "estimated from the data; against the training images of a --prior made by napari-svi train) | auto:STRUCTURE (restore: estimated against sharp images of what was imaged: "
                   "actin, mitochondria, nuclei, walls or a TIFF of them; see 'napari-svi estimate --help') (default: none)")
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


def noise_arg(text: str):
    """``--noise-sigma``: :func:`napari_svi.noise.parse_noise_sigma` as an argparse type."""
    try:
        return parse_noise_sigma(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("noise level: ")) from None


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


def eta_arg(text: str) -> float | str:
    """``--eta``: ``auto`` or a number (its range, [0, 1], is checked by restore with the other settings)."""
    return "auto" if text.strip().lower() == "auto" else float(text)


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the sampler, the prior and the windowing, shared by restore and batch."""
    p.add_argument("--noise-sigma", type=noise_arg, default="auto",
                   help="noise std in the file's units, 'auto' (estimate) or 'none' (noiseless) (default: auto)")
    p.add_argument("--gamma", type=float, default=None, help="data-consistency weight (default: set at every step from the noise level and the data residual)")
    p.add_argument("--prior", default="default", help="default | prior folder | diffusers folder | ADM .pt file")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps (network evaluations per frame; default: 5 from the warm start, 20 from noise)")
    p.add_argument("--start", choices=("tv", "noise"), default="tv",
                   help="start the sampler from the TV estimate (weight from the noise level) diffused to --start-t, "
                   "or from pure noise as in the paper (default: tv)")
    p.add_argument("--start-t", type=int, default=200, metavar="T",
                   help="timestep (1-999) of the warm start (default: 200)")
    p.add_argument("--blend", choices=("cv", "none"), default="cv",
                   help="cv: blend the result with the TV estimate by weights chosen on 10%% held-out measurements, "
                   "one per band of temporal frequency and 64-px region; none: the sampler's result (default: cv)")
    p.add_argument("--eta", type=eta_arg, default="auto",
                   help="DDIM stochasticity in [0, 1], or 'auto': 1 with noise, 0.15 (the paper's) without (default: auto)")
    p.add_argument("--cg-steps", type=int, default=5, help="CG iterations per step (default: 5)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sampler's noise; the same seed, input and device give the same result (default: 0)")
    p.add_argument("--samples", type=int, default=1, help="posterior samples; >1 also writes OUTPUT_std.tif")
    p.add_argument("--device", default="auto", help="auto (CUDA, else Apple MPS, else CPU) | cpu | cuda | cuda:N | mps (default: auto)")
    p.add_argument("--independent-noise", action="store_true", help="ablation: per-frame noise instead of shared")
    p.add_argument("--true-frames", type=int, default=None, help="frames of the true stack with --temporal-subsample")
    add_threads_flag(p)
    p.add_argument("--fill-unseen", type=float, default=None, metavar="WEIGHT",
                   help="pull of frames no measurement reaches (frame interpolation) towards the interpolation "
                   "of measured ones; 0 = off (default: restore's, 4)")
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


def sampler_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`napari_svi.restore.iter_restore` from the sampler flags."""
    return dict(
        prior=args.prior, steps=args.steps, start=args.start, start_t=args.start_t, blend=args.blend, eta=args.eta, cg_steps=args.cg_steps, noise_sigma=args.noise_sigma,
        gamma="auto" if args.gamma is None else args.gamma, seed=args.seed, samples=args.samples,
        device=args.device, batch_consistent=not args.independent_noise, true_frames=args.true_frames,
        window=args.window or None, window_overlap=args.window_overlap, window_margin=args.window_margin,
        tile_size=args.tile_size, memory_budget=args.memory_budget, threads=args.threads,
        **({} if args.fill_unseen is None else {"fill_unseen": args.fill_unseen}),
    )


def stderr_is_terminal() -> bool:
    """Whether progress goes to a person's terminal (a live bar) rather than to a log file or a pipe (whole lines)."""
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
