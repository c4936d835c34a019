"""``restore``: the one entry point that the widget, the command line and scripts call.

It checks every argument before any heavy work, maps intensities to [0, 1] by percentiles (per
2-D + t stack, from the whole stack), and runs the batch-consistent sampler
(:mod:`napari_svi.sampler`) on each 2-D + t stack in overlapping temporal windows (and, under a
memory budget, spatial tiles; :mod:`napari_svi.windows`), frames padded to the prior's size
multiple. Window estimates are blended into the output as they finish (:mod:`napari_svi.lazy`):
an in-memory array, any writable array, or a zarr group that makes the restore resumable. The
estimate is mapped back to the input's units as float32.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from .intensity import DEFAULT_PERCENTILES, IntensityScale, measurement_scale
from .lazy import (
    RECORD_KEY,
    ArraySink,
    MemorySink,
    WindowWriter,
    ZarrSink,
    as_lazy,
    create_zarr_output,
    is_zarr_path,
    json_record,
)
from .operators import Crop, OperatorSpec
from .priors.base import DiffusionPrior
from .sampler import ResidualGamma, auto_gamma, gamma_record, svi_steps
from .threads import set_torch_threads, usable_cores
from .validation import check_positive_int, check_stack, move_time_axis, normalize_axis
from .windows import (
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_OVERLAP,
    default_margin,
    parse_bytes,
    piece_operator,
    plan_axis_tiles,
    plan_windows,
    tile_for_budget,
)

#: The stages :func:`iter_restore` reports, in order; every yield has ``"stage"``, one of these.
#: "window" starts each temporal window (before its first step), "sampling" follows each step.
STAGES = ("loading prior", "estimating noise", "planning windows", "window", "sampling")


def _stage(name: str, windows: int) -> dict:
    """The progress report at the start of a stage other than sampling (no step done yet)."""
    return {"stage": name, "step": 0, "total": None, "estimate": None, "stack": None, "window": None, "windows": windows}


class RestoreCancelled(Exception):
    """The caller stopped a restore before it finished; no result exists."""


@dataclass
class RestoreResult:
    """What :func:`restore` returns.

    Attributes
    ----------
    restored : np.ndarray, float32
        Estimate of the true stack in the input's units and axis order (the posterior mean when
        several samples were drawn). Time and image sizes are those of the true stack.
    std : np.ndarray or None
        Per-pixel standard deviation over the posterior samples (``samples > 1``), same shape.
    samples : np.ndarray or None
        All samples, shape ``(samples, *restored.shape)``, when ``samples > 1``.
    metadata : dict
        Every parameter, the prior's name, the noise level used and the napari-svi version.
    """

    restored: np.ndarray
    std: np.ndarray | None = None
    samples: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)


def estimate_noise_sigma(y01: np.ndarray, mask: np.ndarray | None = None, bins: int = 16) -> float:
    """Root-mean-square noise standard deviation of a measurement ``(T, H, W)`` on the [0, 1] scale.

    Each pixel's residual to the mean of its 4 neighbours (variance ``1.25 sigma^2`` for white
    noise) is taken where all 4 neighbours are observed. Microscopy noise grows with the signal
    (Poisson), so pixels are grouped into ``bins`` equal-count bins of local brightness (the mean
    of the 4 diagonal neighbours, whose noise is independent of the residual's: binning on the
    residual's own neighbours would shrink its variance within a bin) and each bin's sigma is a
    robust MAD estimate, which edges and texture do not move while they are a minority in the bin.
    The result is the root of the pixel-weighted mean of the bins' variances: the noise energy per
    measurement that the data-consistency rule needs (a single robust median would measure the dark
    background's noise only: 4.3 instead of 6.5 on the quality benchmark's Poisson-Gaussian clip,
    where this gives 6.6). Where edges are the majority of a brightness bin (hard-edged binary
    objects) it overestimates, which errs towards trusting the prior.
    """
    y01 = np.asarray(y01, dtype=np.float64)
    if y01.ndim != 3 or min(y01.shape[-2:]) < 8:
        raise ValueError("noise_sigma='auto' needs frames of at least 8 x 8 pixels; give noise_sigma as a number")
    m = np.ones(y01.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask) != 0, y01.shape)
    inner = m[:, 1:-1, 1:-1] & m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:]
    inner &= m[:, :-2, :-2] & m[:, :-2, 2:] & m[:, 2:, :-2] & m[:, 2:, 2:]
    neigh = (y01[:, :-2, 1:-1] + y01[:, 2:, 1:-1] + y01[:, 1:-1, :-2] + y01[:, 1:-1, 2:]) / 4
    diagonal = (y01[:, :-2, :-2] + y01[:, :-2, 2:] + y01[:, 2:, :-2] + y01[:, 2:, 2:]) / 4
    r = (y01[:, 1:-1, 1:-1] - neigh)[inner]
    level = diagonal[inner]
    if r.size < 16:
        raise ValueError("noise_sigma='auto' needs more observed pixels; give noise_sigma as a number")
    bins = max(1, min(bins, r.size // 64))  # at least 64 pixels per bin
    order = np.argsort(level, kind="stable")
    variances = [(1.4826 * np.median(np.abs(part - np.median(part)))) ** 2 / 1.25 for part in np.array_split(r[order], bins)]
    return float(math.sqrt(np.mean(variances)))


def _check_settings(steps, eta, cg_steps, samples, seed, noise_sigma, gamma) -> None:
    check_positive_int(steps, "steps")
    check_positive_int(cg_steps, "cg_steps", minimum=0)
    check_positive_int(samples, "samples")
    check_positive_int(seed, "seed", minimum=0)
    if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    if not (noise_sigma is None or noise_sigma == "auto" or (
        isinstance(noise_sigma, (int, float)) and math.isfinite(noise_sigma) and noise_sigma >= 0
    )):
        raise ValueError(f"noise_sigma must be 'auto', None (noiseless) or a number >= 0, got {noise_sigma!r}")
    if not (gamma == "auto" or (isinstance(gamma, (int, float)) and gamma > 0)):
        raise ValueError(f"gamma must be 'auto' or a positive number (inf = noiseless form), got {gamma!r}")


def _release_memory() -> None:
    """Hand freed heap memory back to the system after a window (glibc only; as dask.distributed does).

    A window's arrays are tens of MB each, below glibc's largest mmap threshold, so they live on the
    heap; without a trim the process keeps their pages after the window is done.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _check_windowing(window, window_overlap, window_margin, tile_size, memory_budget):
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0):
        raise ValueError(f"window must be None (whole stack at once) or a number of frames >= 1, got {window!r}")
    window = int(window) if window else None
    if window_overlap is None:
        window_overlap = min(DEFAULT_WINDOW_OVERLAP, (window or 0) // 4)
    check_positive_int(window_overlap, "window_overlap", minimum=0)
    if window is not None and window_overlap >= window:
        raise ValueError(f"window_overlap must be smaller than window ({window} frames), got {window_overlap}")
    if window_margin is not None:
        check_positive_int(window_margin, "window_margin", minimum=0)
    if tile_size is not None:
        check_positive_int(tile_size, "tile_size", minimum=8)
    return window, int(window_overlap), parse_bytes(memory_budget)


def _open_output(out, out_shape, *, time_axis, lead_shape, samples, frame_shape, record, pending_frames, overwrite):
    """The sink for ``out`` and the object(s) to return as the result."""
    if out is None:
        return None, None
    if isinstance(out, (str, os.PathLike)):
        if not is_zarr_path(out):
            raise ValueError(f"out must be a zarr path (ending in .zarr), a zarr group or an array, got {str(out)!r}")
        group, _ = create_zarr_output(
            out, out_shape, time_axis=time_axis, samples=samples, record=record,
            pending_frames=pending_frames, overwrite=overwrite,
        )
        out = group
    if hasattr(out, "array_keys"):  # a zarr group: resumable
        if "restored" not in out:
            raise ValueError("a zarr group given as out must come from create_zarr_output (it has no 'restored' array)")
        if tuple(out["restored"].shape) != tuple(out_shape):
            raise ValueError(f"out['restored'] has shape {tuple(out['restored'].shape)}, the result has {tuple(out_shape)}")
        sink = ZarrSink(out, pending_frames=pending_frames, time_axis=time_axis, lead_shape=lead_shape,
                        n_samples=samples, frame_shape=frame_shape)
        return sink, out
    shape = getattr(out, "shape", None)
    if shape is None or not hasattr(out, "__setitem__"):
        raise ValueError(f"out must be a writable array-like, a zarr group or a .zarr path, got {type(out).__name__}")
    if tuple(shape) != tuple(out_shape):
        raise ValueError(f"out has shape {tuple(shape)}, but the restored stack has shape {tuple(out_shape)}")
    if np.dtype(out.dtype).kind != "f":
        raise ValueError(f"out must have a floating point dtype (the result is float32), got {out.dtype}")
    return ArraySink(out, time_axis=time_axis, lead_shape=lead_shape, n_samples=samples, frame_shape=frame_shape), out


def _noise_frames(t_m: int, limit: int = 32) -> np.ndarray:
    """Measured frames used to estimate the noise: all of them, or ``limit`` evenly spaced ones."""
    return np.unique(np.linspace(0, t_m - 1, min(t_m, limit)).round().astype(np.int64))


def _read(stack, frames: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Frames ``frames`` (a slice when contiguous) and one region of one stack, as a NumPy array."""
    if len(frames) and np.array_equal(frames, np.arange(frames[0], frames[0] + len(frames))):
        block = stack[int(frames[0]) : int(frames[0]) + len(frames), rows, cols]
    else:
        block = stack[frames][:, rows, cols]
    return np.asarray(block)


def iter_restore(
    data,
    operator: OperatorSpec | None = None,
    *,
    prior: str | DiffusionPrior = "default",
    time_axis: int = 0,
    steps: int = 20,
    eta: float = 0.15,
    cg_steps: int = 5,
    noise_sigma: float | str | None = "auto",
    gamma: float | str = "auto",
    seed: int = 0,
    samples: int = 1,
    device: str = "auto",
    batch_consistent: bool = True,
    true_frames: int | None = None,
    preview_every: int = 0,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    window: int | None = DEFAULT_WINDOW,
    window_overlap: int | None = None,
    window_margin: int | None = None,
    tile_size: int | None = None,
    memory_budget: int | str | None = None,
    out=None,
    overwrite: bool = False,
    threads: int | None = None,
) -> Generator[dict, None, RestoreResult]:
    """Restore a time-lapse step by step; a generator that returns a :class:`RestoreResult`.

    Everything is validated before the first yield, which comes before any heavy work. Each yield
    is ``{"stage", "step", "total", "estimate", "stack", "window", "windows"}``: ``stage`` goes
    through :data:`STAGES` in order; one yield starts each stage before sampling (``step`` 0,
    ``total`` None); then for every temporal window of every stack one yield ``"window"`` before
    its first step (``step`` = the steps done so far, of ``total``), and one yield ``"sampling"``
    after each sampler step, with ``estimate`` the current estimate (input units, true-stack shape)
    every ``preview_every`` steps and ``None`` otherwise (always ``None`` when writing to ``out``).
    Closing the generator cancels the restore. See :func:`restore` for the parameters.
    """
    from .priors.loading import load_prior, resolve_device
    from .priors.tiling import TiledPrior

    t_start = time.perf_counter()
    spec = operator if operator is not None else OperatorSpec()
    if not isinstance(spec, OperatorSpec):
        raise ValueError(f"operator must be an OperatorSpec or None, got {type(spec).__name__}")
    arr = check_stack(as_lazy(data), time_axis=time_axis, name="data")
    _check_settings(steps, eta, cg_steps, samples, seed, noise_sigma, gamma)
    check_positive_int(preview_every, "preview_every", minimum=0)
    window, window_overlap, budget = _check_windowing(window, window_overlap, window_margin, tile_size, memory_budget)
    n_threads = set_torch_threads(threads)
    stacks, restore_axes = move_time_axis(arr, time_axis)
    n_stacks, t_m, h_m, w_m = stacks.shape
    spec.validate((t_m, h_m, w_m), true_frames)
    t, h, w = spec.true_shape((t_m, h_m, w_m), true_frames)
    kernel, psf = spec.temporal_kernel(), spec.spatial_kernel()
    mask = spec.mask_array()
    windows = plan_windows(t, kernel, spec.temporal_boundary, spec.temporal_subsample,
                           window=window, overlap=window_overlap, margin=window_margin)
    solve_frames = max(len(p.solve) for p in windows)
    margin = default_margin(1 if kernel is None else kernel.size, spec.temporal_subsample) if window_margin is None else window_margin
    yield _stage("loading prior", len(windows))
    dev = resolve_device(device)
    prior_obj = prior if isinstance(prior, DiffusionPrior) else load_prior(prior, dev, channels=1)
    prior_obj = prior_obj.to(dev).eval()
    if prior_obj.channels != 1:
        raise ValueError(f"the prior expects {prior_obj.channels} channels; load it with channels=1 to adapt it")
    if tile_size is not None and not isinstance(prior_obj, TiledPrior):
        if tile_size % prior_obj.size_multiple:
            raise ValueError(f"tile_size must be a multiple of {prior_obj.size_multiple} (the prior's size multiple), got {tile_size}")
        prior_obj = TiledPrior(prior_obj, tile_size=tile_size, overlap=min(32, tile_size // 4))
    d = int(spec.downsample)
    tile = tile_for_budget(solve_frames, h, w, budget, multiple=max(d, prior_obj.size_multiple))
    if tile is not None and spec.spatial_boundary == "circular":
        raise ValueError("memory_budget would cut frames into tiles, which needs spatial_boundary='symmetric'; "
                         "raise memory_budget or use the symmetric boundary")
    psf_shape = (1, 1) if psf is None else psf.shape
    row_tiles = plan_axis_tiles(h, tile, psf_size=psf_shape[0], downsample=d, boundary=spec.spatial_boundary)
    col_tiles = plan_axis_tiles(w, tile, psf_size=psf_shape[1], downsample=d, boundary=spec.spatial_boundary)
    tiled = len(row_tiles) * len(col_tiles) > 1
    m = prior_obj.size_multiple
    if not isinstance(prior_obj, TiledPrior):
        # Frames go through the network in chunks: on the CPU about 64k pixels per call is about
        # twice as fast as one large batch (measured on 16 x 128 x 128); on CUDA the wrapper adds the
        # retry on out-of-memory. Frames are independent images, so chunking does not change eps.
        prior_obj = TiledPrior(prior_obj, max_pixels_per_batch=65536 if dev.type == "cpu" else None)

    # intensity scale and noise level of every stack, from the whole stack (strided for lazy input)
    yield _stage("estimating noise", len(windows))
    scales: list[IntensityScale] = []
    sigmas: list[float | None] = []
    gammas: list[float | ResidualGamma] = []
    noise_frames = _noise_frames(t_m)
    for k in range(n_stacks):
        stack = stacks[k]
        scale = measurement_scale(stack if hasattr(stack, "compute") else np.asarray(stack), percentiles, name="data")
        if noise_sigma == "auto":
            frames_mask = None if mask is None else (mask[noise_frames] if mask.ndim == 3 else mask)
            sigma01 = estimate_noise_sigma(scale.to_unit(_read(stack, noise_frames, slice(None), slice(None))), frames_mask)
        else:
            sigma01 = None if noise_sigma is None else scale.sigma_to_unit(noise_sigma)
        scales.append(scale)
        sigmas.append(sigma01)
        gammas.append(auto_gamma(sigma01) if gamma == "auto" else float(gamma))

    from . import __version__

    out_shape = list(arr.shape)
    ax = normalize_axis(time_axis, arr.ndim)
    out_shape[ax], out_shape[-2], out_shape[-1] = t, h, w
    lead_shape = tuple(s for i, s in enumerate(arr.shape[:-2]) if i != ax)
    metadata = {
        "napari_svi_version": __version__,
        "method": "SVI (Kwon & Ye, ICLR 2025): batch-consistent DDIM + CG data consistency",
        "prior": prior_obj.name,
        "operator": spec.to_dict(),
        "time_axis": int(time_axis),
        "steps": steps,
        "eta": float(eta),
        "cg_steps": cg_steps,
        "noise_sigma": noise_sigma if noise_sigma in (None, "auto") else float(noise_sigma),
        "noise_sigma_used": [None if s is None else s * sc.span for s, sc in zip(sigmas, scales, strict=True)],
        "gamma": [gamma_record(g) for g in gammas],
        "seed": seed,
        "samples": samples,
        "batch_consistent": bool(batch_consistent),
        "device": str(dev),
        "intensity_scale": [[sc.low, sc.high] for sc in scales],
        "percentiles": list(percentiles),
        "input_shape": list(arr.shape),
        "window": window,
        "window_overlap": window_overlap,
        "window_margin": margin,
        "windows": len(windows),
        "tiles": [len(row_tiles), len(col_tiles)],
        "tile_size": tile_size,
        "memory_budget": budget,
        "threads": n_threads,
        "cpu_cores_usable": usable_cores(),
    }
    yield _stage("planning windows", len(windows))
    sink, out_obj = _open_output(
        out, tuple(out_shape), time_axis=ax, lead_shape=lead_shape, samples=samples, frame_shape=(h, w),
        record=metadata, pending_frames=max(p.keep[1] - p.keep[0] for p in windows), overwrite=overwrite,
    )
    if sink is None:
        sink = MemorySink(samples, n_stacks, t, (h, w))
    writer = WindowWriter(sink, windows, n_stacks)

    todo = [(k, i) for k in range(n_stacks) for i in range(len(windows)) if not writer.is_done(k, i)]
    pieces_per_window = len(row_tiles) * len(col_tiles)
    total = len(todo) * pieces_per_window * samples * steps
    done = 0
    keep_index = [p.keep_in_solve for p in windows]
    for k, wi in todo:
        yield {"stage": "window", "step": done, "total": total, "estimate": None, "stack": k, "window": wi,
               "windows": len(windows)}
        piece = windows[wi]
        a, b = piece.keep
        buffer = np.zeros((samples, b - a, h, w), dtype=np.float32)
        for rows in row_tiles:
            for cols in col_tiles:
                op_true, frames, rsl, csl = piece_operator(
                    spec, t, piece, rows, cols, kernel=kernel, psf=psf, mask=mask, tiled=tiled
                )
                th, tw = len(rows.solve), len(cols.solve)
                hp, wp = -(-th // m) * m, -(-tw // m) * m
                shape = (len(piece.solve), 1, th, tw)
                op = op_true @ Crop((shape[0], 1, hp, wp), shape) if (hp, wp) != (th, tw) else op_true
                op = op.to(dev, torch.float32)
                y01 = scales[k].to_unit(_read(stacks[k], frames, rsl, csl))
                y = torch.from_numpy(y01)[:, None].to(dev)
                ky = slice(rows.keep[0] - int(rows.solve[0]), rows.keep[1] - int(rows.solve[0]))
                kx = slice(cols.keep[0] - int(cols.solve[0]), cols.keep[1] - int(cols.solve[0]))
                weight = (rows.weights[:, None] * cols.weights[None, :]).astype(np.float32)
                region = (slice(None), slice(rows.keep[0], rows.keep[1]), slice(cols.keep[0], cols.keep[1]))
                for s in range(samples):
                    gen = torch.Generator(device="cpu").manual_seed(seed + s)
                    for info in svi_steps(
                        prior_obj, y, op, steps=steps, eta=eta, cg_steps=cg_steps, gamma=gammas[k],
                        batch_consistent=batch_consistent, generator=gen,
                    ):
                        done += 1
                        last = info["i"] + 1 == steps
                        preview = (not last and preview_every and done % preview_every == 0
                                   and isinstance(sink, MemorySink) and not tiled)
                        if last or preview:
                            x01 = info["denoised"][keep_index[wi], 0, :th, :tw][:, ky, kx].float().cpu().numpy()
                        if last:
                            buffer[s][region] += weight * x01
                        estimate = None
                        if preview:
                            current = sink.values[s].copy()
                            current[k, a:b] = scales[k].from_unit(x01)
                            estimate = restore_axes(current)
                        yield {"stage": "sampling", "step": done, "total": total, "estimate": estimate, "stack": k,
                               "window": wi, "windows": len(windows)}
        writer.add(k, wi, scales[k].from_unit(buffer))
        del buffer
        _release_memory()

    metadata["seconds"] = round(time.perf_counter() - t_start, 2)
    if isinstance(sink, MemorySink):
        values = sink.values
        restored = restore_axes(values.mean(axis=0) if samples > 1 else values[0])
        std = restore_axes(values.std(axis=0)) if samples > 1 else None
        all_samples = np.stack([restore_axes(o) for o in values]) if samples > 1 else None
        return RestoreResult(restored=restored, std=std, samples=all_samples, metadata=metadata)
    if hasattr(out_obj, "array_keys"):
        out_obj.attrs[RECORD_KEY] = json_record(metadata)
        return RestoreResult(restored=out_obj["restored"], std=out_obj["std"] if samples > 1 else None,
                             samples=out_obj["samples"] if samples > 1 else None, metadata=metadata)
    return RestoreResult(restored=out_obj, metadata=metadata)


def restore(data, operator: OperatorSpec | None = None, *, callback: Callable[[dict], object] | None = None, **kwargs) -> RestoreResult:
    """Restore a degraded microscopy time-lapse with an image diffusion prior.

    Parameters
    ----------
    data : array_like, shape (..., T_m, ..., Y_m, X_m)
        The measurement (NumPy, dask, zarr or any sliceable array-like; lazy ones are read window
        by window), any numeric dtype and range, time axis at
        ``time_axis``; the last two axes are Y and X. Further axes (channels, z) are restored one
        2-D + t stack at a time. Not modified.
    operator : OperatorSpec, optional
        Forward model A (temporal PSF, temporal subsampling, spatial PSF, downsampling, mask);
        ``None`` means identity (pure denoising).
    prior : str or DiffusionPrior
        ``"default"`` (bundled), a prior folder, a diffusers folder or an ADM checkpoint file.
    time_axis : int
        Index of the time axis in ``data``.
    steps : int
        Denoising steps (network evaluations per frame); 20 in the paper.
    eta : float
        DDIM stochasticity in [0, 1]; 0.15 in the paper.
    cg_steps : int
        Conjugate-gradient iterations after every step; 5 in the paper.
    noise_sigma : float, "auto" or None
        Standard deviation of the measurement noise in the data's units (for Poisson noise, its root
        mean square over the pixels); ``"auto"`` estimates it (:func:`estimate_noise_sigma`),
        ``None`` assumes noiseless data (solves the normal equations).
    gamma : float or "auto"
        Data-consistency weight of the noisy CG form; ``"auto"`` sets it at every step from the
        noise level and the residual of the denoised estimate (:class:`~napari_svi.sampler.ResidualGamma`).
    seed : int
        Seed; the same seed, input and device give the same result.
    samples : int
        Posterior samples to draw (seeds ``seed .. seed + samples - 1``); with more than one the
        result is their mean and ``std`` their per-pixel standard deviation.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    batch_consistent : bool
        Share noise across frames (the method); ``False`` is the ablation.
    true_frames : int, optional
        Number of frames of the true stack when ``temporal_subsample > 1`` (default
        ``(T_m - 1) * s + 1``).
    preview_every : int
        Put the current estimate into the progress dict every this many steps (0: never).
    percentiles : (float, float)
        Input values mapped to 0 and 1 for the solver (per 2-D + t stack, from the whole stack).
    window : int or None
        Frames each temporal window keeps (default 16); ``None`` restores the whole stack at once.
        A window solves ``window + 2 * window_margin`` frames, which sets the memory use; stacks
        not longer than that are restored in one piece.
    window_overlap : int, optional
        Frames shared (and cross-faded) by neighbouring windows; default ``min(4, window // 4)``.
    window_margin : int, optional
        Frames solved beyond each side of a window; default temporal PSF length - 1 plus
        temporal subsample - 1, which puts every measurement of a kept frame into its window.
    tile_size : int, optional
        Evaluate the prior in overlapping tiles of this many pixels
        (:class:`~napari_svi.priors.TiledPrior`); the data-consistency solve stays on whole frames.
    memory_budget : int or str, optional
        Bytes (or ``"8GB"``) for one window's solver arrays; frames that do not fit are cut into
        overlapping spatial tiles, each a small inverse problem (:mod:`napari_svi.windows`).
    out : str, zarr group or array-like, optional
        Write the result window by window instead of returning it in memory: a ``.zarr`` path or
        zarr group (resumable: a restore interrupted and started again skips the finished windows
        and gives an identical result), or any writable float array of the result's shape.
    overwrite : bool
        Replace an existing ``out`` store that holds a restore with other parameters.
    threads : int, optional
        PyTorch CPU threads (set with ``torch.set_num_threads`` for this process and recorded in
        the metadata); default ``OMP_NUM_THREADS`` when set, else the cores this process may use
        (its CPU affinity and cgroup quota; :func:`napari_svi.threads.default_threads`).
    callback : callable, optional
        Receives ``{"stage", "step", "total", "estimate", "stack", "window", "windows"}`` at the
        start of every stage and after every sampler step (see :func:`iter_restore`); returning
        ``True`` cancels (raises :class:`RestoreCancelled`).

    Returns
    -------
    RestoreResult
        With ``out``, ``restored`` (and ``std``, ``samples``) are the written arrays (zarr arrays
        for a zarr output).

    Notes
    -----
    Measurement model ``y = A x + n``. Each step: ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``,
    then ``M`` CG steps on ``(I + gamma A^T A) x = x0 + gamma A^T y`` (or ``A^T A x = A^T y`` when
    noiseless), then DDIM re-noising with noise shared by all frames. Long stacks are solved in
    overlapping temporal windows with the same seed-derived noise, blended with raised-cosine
    weights (:mod:`napari_svi.windows`).

    Examples
    --------
    >>> from napari_svi import OperatorSpec, restore
    >>> result = restore(stack, OperatorSpec(temporal_psf="uniform:7"), steps=20)  # doctest: +SKIP
    """
    gen = iter_restore(data, operator, **kwargs)
    try:
        while True:
            info = next(gen)
            if callback is not None and callback(info) is True:
                gen.close()
                raise RestoreCancelled(f"restore cancelled after step {info['step']} of {info['total'] or '?'}"
                                       f" ({info['stage']})")
    except StopIteration as stop:
        return stop.value
