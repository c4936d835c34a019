"""Speed and memory: time per network evaluation and per restore versus frames and frame size.

Two sweeps per device: the number of frames ``T`` at a fixed frame size, and the frame size at a
fixed number of frames. For each point: one network evaluation of all ``T`` frames (the cost of one
NFE) and one whole :func:`napari_svi.restore.restore` (``steps`` NFE plus ``cg_steps`` CG
iterations per step). The prior is wrapped in :class:`~napari_svi.priors.tiling.TiledPrior` so that
at most ``max_pixels_per_batch`` pixels go through the network at once: time should grow linearly
with the number of pixels while the network's memory stays bounded (only the stack itself, a few
float32 copies of ``T x H x W``, grows). A linear fit of seconds versus frames and versus
megapixels per frame is reported with its R^2.

The data are the held-out nuclei time-lapse, mirrored in time and space to the size needed, blurred
by the operator (box of 7 frames by default).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..operators import OperatorSpec
from ..priors.base import DiffusionPrior
from .measure import measure

CPU_FRAMES = (8, 16, 32, 64, 128, 256)
CPU_SIZES = (64, 128, 256, 512, 1024)


def synthetic_stack(frames: int, size: int) -> np.ndarray:
    """The held-out nuclei time-lapse mirrored (numpy ``symmetric``) or cut to ``(frames, size, size)``, float32."""
    from ..datasets import load_heldout_timelapse

    data = load_heldout_timelapse().astype(np.float32)
    t, h, w = data.shape
    data = np.pad(data, ((0, max(0, frames - t)), (0, max(0, size - h)), (0, max(0, size - w))), mode="symmetric")
    return np.ascontiguousarray(data[:frames, :size, :size])


def fit_line(x, y) -> dict:
    """Least-squares line ``y = slope x + intercept`` and its coefficient of determination R^2."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def _timed(fn: Callable[[], object], device: torch.device, min_seconds: float = 0.5, max_repeats: int = 3):
    """The fastest of up to ``max_repeats`` calls (repeated only while calls take under ``min_seconds``)."""
    best = measure(fn, device)
    for _ in range(max_repeats - 1):
        if best.seconds >= min_seconds:
            break
        m = measure(fn, device, collect=False)
        if m.seconds < best.seconds:
            best = m
    return best


def run_speed(
    prior: DiffusionPrior,
    *,
    devices: tuple[str, ...] = ("cpu",),
    frames: tuple[int, ...] = CPU_FRAMES,
    sizes: tuple[int, ...] = CPU_SIZES,
    frames_size: int = 64,
    size_frames: int = 4,
    steps: int = 2,
    cg_steps: int = 5,
    max_pixels_per_batch: int = 2**18,
    tile_size: int | None = 256,
    operator: str = "uniform:7",
    seed: int = 0,
    progress: Callable[[str], object] | None = print,
) -> dict:
    """Run both sweeps on every device; returns ``{"settings", "records", "fits"}`` (JSON-able).

    Parameters
    ----------
    prior : DiffusionPrior
        The prior to time (moved to each device).
    devices : tuple of str
        ``"cpu"``, ``"cuda"``, ...
    frames, sizes : tuple of int
        Frame counts (at ``frames_size`` x ``frames_size`` pixels) and frame sizes in pixels (with
        ``size_frames`` frames).
    steps : int
        NFE per restore (few on the CPU to keep the sweep short: the network dominates, so a restore
        at 20 NFE costs about 20 / ``steps`` times as much).
    max_pixels_per_batch : int
        Largest number of pixels handed to the network in one call (bounds its memory, as long as one
        frame fits).
    tile_size : int or None
        If set, one more restore at the largest frame size is timed with the network run in tiles of
        this many pixels (overlap 32): what bounds memory for frames above ``max_pixels_per_batch``.
    operator : str
        Temporal PSF of the restores (symmetric boundary).

    Returns
    -------
    dict
        ``records``: ``{"device", "kind" ("network" | "restore"), "sweep" ("frames" | "size"), "frames",
        "size", "steps", "seconds", "peak_mb", "cuda_peak_mb"}``; ``fits``: ``{"device", "kind", "x",
        "unit", "slope", "intercept", "r2"}``.
    """
    from ..priors.loading import resolve_device
    from ..priors.tiling import TiledPrior
    from ..restore import restore

    spec = OperatorSpec(temporal_psf=operator, temporal_boundary="symmetric")
    records: list[dict] = []
    fits: list[dict] = []
    for dev_name in devices:
        dev = resolve_device(dev_name)
        tiled = TiledPrior(prior.to(dev).eval(), tile_size=None, max_pixels_per_batch=max_pixels_per_batch)

        def network(x, t, tiled=tiled):
            return tiled.predict_noise(x, t)

        def one(kind: str, sweep: str, n: int, size: int, dev=dev, tiled=tiled, dev_name=dev_name) -> dict:
            if kind == "restore-tiled":
                tiled = TiledPrior(tiled.prior, tile_size=tile_size, overlap=min(32, tile_size // 4),
                                   max_pixels_per_batch=max_pixels_per_batch)
                kind_run = "restore"
            else:
                kind_run = kind
            if kind_run == "network":
                gen = torch.Generator().manual_seed(seed)
                x = torch.randn((n, 1, size, size), generator=gen).to(dev)
                t = torch.full((n,), 500, dtype=torch.long, device=dev)
                m = _timed(lambda: network(x, t), dev)
                del x
            else:
                y = _degraded(n, size, spec)
                m = _timed(lambda: restore(y, spec, prior=tiled, steps=steps, cg_steps=cg_steps, noise_sigma=None,
                                           seed=seed, device=str(dev)), dev)
            m.value = None
            rec = {"device": dev_name, "kind": kind if kind != "restore-tiled" else f"restore, {tile_size} px tiles",
                   "sweep": sweep, "frames": n, "size": size,
                   "steps": 1 if kind == "network" else steps, "seconds": round(m.seconds, 4),
                   "peak_mb": round(m.peak_mb, 1),
                   "cuda_peak_mb": None if m.cuda_peak_mb is None else round(m.cuda_peak_mb, 1)}
            if progress:
                progress(f"{dev_name:6s} {kind:8s} {n:4d} frames x {size:4d}^2 px: {m.seconds:8.3f} s, "
                         f"peak {m.peak_mb:7.1f} MB" + ("" if m.cuda_peak_mb is None else f", GPU {m.cuda_peak_mb:.0f} MB"))
            return rec

        # warm-up: first calls pay for allocation, thread pools and (on CUDA) kernel selection
        one("network", "warmup", 2, frames_size)
        one("restore", "warmup", 2, frames_size)
        for kind in ("network", "restore"):
            sweep_f = [one(kind, "frames", n, frames_size) for n in frames]
            sweep_s = [one(kind, "size", size_frames, s) for s in sizes]
            records += sweep_f + sweep_s
            if len(sweep_f) >= 2:
                fits.append({"device": dev_name, "kind": kind, "x": f"frames ({frames_size}x{frames_size} px)",
                             "unit": "frame", **fit_line([r["frames"] for r in sweep_f], [r["seconds"] for r in sweep_f])})
            if len(sweep_s) >= 2:
                fits.append({"device": dev_name, "kind": kind, "x": f"megapixels per frame ({size_frames} frames)",
                             "unit": "megapixel per frame",
                             **fit_line([r["size"] ** 2 / 1e6 for r in sweep_s], [r["seconds"] for r in sweep_s])})
        if tile_size is not None and sizes and max(sizes) > tile_size:
            # tiles bound the network's memory for frames larger than max_pixels_per_batch, at some overlap cost
            records.append(one("restore-tiled", "size-tiled", size_frames, max(sizes)))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    settings = {"frames": list(frames), "sizes": list(sizes), "frames_size": frames_size, "size_frames": size_frames,
                "steps": steps, "cg_steps": cg_steps, "max_pixels_per_batch": max_pixels_per_batch, "tile_size": tile_size,
                "operator": spec.describe(), "seed": seed, "devices": list(devices)}
    return {"settings": settings, "prior": prior.name, "records": records, "fits": fits}


def _degraded(frames: int, size: int, spec: OperatorSpec) -> np.ndarray:
    from ..degrade import degrade

    return degrade(synthetic_stack(frames, size), spec)

