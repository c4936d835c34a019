"""``restore``: the one entry point that the widget, the command line and scripts call.

It checks every argument before any heavy work, maps intensities to [0, 1] by percentiles (per
2-D + t stack, from the whole stack's observed pixels), and runs the batch-consistent sampler
(:mod:`napari_svi.sampler`) on each piece of each 2-D + t stack: temporal windows and, under a
memory budget, spatial tiles (:mod:`napari_svi.pieces`). Window estimates are blended into the
output as they finish (:mod:`napari_svi.sinks`): an in-memory array, any writable array, or a
zarr group that makes the restore resumable. The estimate is mapped back to the input's units as
float32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from ._version import __version__
from .consistency import residual_chi2, verdict
from .estimate import resolve_auto
from .intensity import DEFAULT_PERCENTILES, measurement_scale
from .lazy import RECORD_KEY, as_lazy
from .noise import GAMMA_REGION, auto_eta, auto_gamma, gamma_record, stack_noise_sigma
from .operators import OperatorSpec
from .pieces import NoiseField, Plan, plan_restore
from .priors.base import DiffusionPrior
from .psf_spec import is_auto
from .restore_settings import check_settings, restoration_prior
from .sinks import MemorySink, WindowWriter, json_record, open_output, release_memory
from .threads import set_torch_threads, usable_cores
from .validation import check_stack, move_time_axis, normalize_axis
from .warm_start import DEFAULT_BLEND, DEFAULT_START, DEFAULT_START_T, PieceSolver, default_steps
from .windows import DEFAULT_WINDOW, check_windowing

#: Default weight of the pull of unmeasured frames towards the interpolation of measured ones.
DEFAULT_FILL_UNSEEN = 4.0



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


#: The stages :func:`iter_restore` reports, in order; every yield has ``"stage"``, one of these.
#: "window" starts each temporal window (before its first step), "sampling" follows each step;
#: "estimating blur" comes first, and only, when a PSF is ``"auto"`` (:func:`napari_svi.estimate.resolve_auto`).
STAGES = ("estimating blur", "estimating noise", "loading prior", "planning windows", "window", "sampling")


def _stage(name: str, windows: int | None = None) -> dict:
    """The progress report at the start of a stage other than sampling (no step done yet)."""
    return {"stage": name, "step": 0, "total": None, "estimate": None, "stack": None, "window": None, "windows": windows}


#: Pixels per network call on the CPU. Chunks of about this size are about twice as fast as one large batch
#: (16 x 128 x 128). 49152 (three 128 x 128 frames) instead of 65536: a default restore's live peak 170 ->
#: 156 MB above its start, the release's 154 MB (benchmarks/results/speed/memory_2026-12-03; in-process,
#: one run each: time 19.5-21.0 s -> 20.9-21.1 s); 32768 gave 124 MB but about 10 % more time.
CPU_PIXELS_PER_CALL = 49152


class _Restoration:
    """Everything a restore needs, set up and checked before the first step (see :func:`iter_restore`)."""

    def setup(self, data, operator, *, prior, time_axis, steps, eta, cg_steps, noise_sigma, gamma, seed, samples,
              device, batch_consistent, true_frames, preview_every, percentiles, window, window_overlap,
              window_margin, tile_size, memory_budget, fill_unseen, out, overwrite, threads, start, start_t, blend):
        """Check everything cheap, then set up stage by stage, yielding a report at the start of each."""
        from .priors.loading import resolve_device
        from .priors.tiling import TiledPrior

        spec = operator if operator is not None else OperatorSpec()
        if not isinstance(spec, OperatorSpec):
            raise ValueError(f"operator must be an OperatorSpec or None, got {type(spec).__name__}")
        arr = check_stack(as_lazy(data), time_axis=time_axis, name="data")
        given_steps, steps = steps, default_steps(start) if steps is None else steps
        check_settings(steps, eta, cg_steps, samples, seed, noise_sigma, gamma, preview_every, fill_unseen, tile_size,
                       start, start_t, blend)
        window, window_overlap, budget = check_windowing(window, window_overlap, window_margin, memory_budget)
        n_threads = set_torch_threads(threads)
        self.estimate = None
        if is_auto(spec.temporal_psf) or is_auto(spec.spatial_psf):  # estimated from the data, before the prior
            yield _stage("estimating blur")
            spec, self.estimate = resolve_auto(arr, spec, time_axis, prior)
        self.stacks, self.restore_axes = move_time_axis(arr, time_axis)
        n_stacks, t_m, h_m, w_m = self.stacks.shape
        spec.validate((t_m, h_m, w_m), true_frames)
        self.device = resolve_device(device)
        # intensity scale and noise level of every stack, from its observed pixels (strided for lazy input);
        # before the prior loads, so that constant data or a bad noise level are refused first
        yield _stage("estimating noise")
        mask = spec.mask_array()
        self.scales = [measurement_scale(st if hasattr(st, "compute") else np.asarray(st), percentiles, name="data",
                                         mask=mask) for st in self.stacks]
        sigmas = [stack_noise_sigma(st, sc, noise_sigma, mask) for st, sc in zip(self.stacks, self.scales, strict=True)]
        if given_steps is None and not any(sigmas):  # noiseless: no warm start (see WarmStart), the paper's steps
            steps = default_steps("noise")
        self.steps = steps
        yield _stage("loading prior")
        prior_obj = restoration_prior(prior, self.device, tile_size)
        yield _stage("planning windows")
        self.plan: Plan = plan_restore(spec, (t_m, h_m, w_m), true_frames, window=window, overlap=window_overlap,
                                       margin=window_margin, memory_budget=budget, size_multiple=prior_obj.size_multiple)
        if not isinstance(prior_obj, TiledPrior):
            # Frames go through the network in chunks (CPU_PIXELS_PER_CALL); on CUDA the wrapper adds the
            # retry on out-of-memory. Frames are independent images, so chunking does not change eps.
            prior_obj = TiledPrior(prior_obj, max_pixels_per_batch=CPU_PIXELS_PER_CALL if self.device.type == "cpu" else None)
        self.prior = prior_obj
        self.spec, self.sigmas, self.solver = spec, sigmas, PieceSolver(start, start_t, blend)
        self.etas = [auto_eta(sg) if eta == "auto" else float(eta) for sg in sigmas]
        self.gammas = [auto_gamma(sg) if gamma == "piece" else auto_gamma(sg, region=GAMMA_REGION) if gamma in ("auto", "regional")
                       else float(gamma) for sg in sigmas]
        t, (h, w) = self.plan.n_frames, self.plan.frame_shape
        out_shape = list(arr.shape)
        ax = normalize_axis(time_axis, arr.ndim)
        out_shape[ax], out_shape[-2], out_shape[-1] = t, h, w
        lead_shape = tuple(n for i, n in enumerate(arr.shape[:-2]) if i != ax)
        self.metadata = {
            "napari_svi_version": __version__,
            "method": "SVI (Kwon & Ye, ICLR 2025): batch-consistent DDIM + CG data consistency",
            "prior": prior_obj.name, "operator": spec.to_dict(), "time_axis": int(time_axis), "steps": steps,
            "eta": self.etas, "eta_setting": eta if eta == "auto" else float(eta), "cg_steps": cg_steps,
            "noise_sigma": noise_sigma if noise_sigma in (None, "auto") else float(noise_sigma),
            "noise_sigma_used": [None if sg is None else sg * sc.span for sg, sc in zip(sigmas, self.scales, strict=True)],
            "gamma": [gamma_record(g) for g in self.gammas], "seed": seed, "samples": samples,
            "batch_consistent": bool(batch_consistent), "fill_unseen": float(fill_unseen), "device": str(self.device),
            "intensity_scale": [[sc.low, sc.high] for sc in self.scales], "percentiles": list(percentiles),
            "input_shape": list(arr.shape), "window": window, "window_overlap": window_overlap,
            "window_margin": self.plan.margin, "windows": len(self.plan.windows), "tiles": self.plan.tiles,
            "tile_size": tile_size, "memory_budget": budget, "threads": n_threads, "cpu_cores_usable": usable_cores(),
            "start": self.solver.record(),
            **({"estimate": self.estimate} if self.estimate else {}),
        }
        windows = self.plan.windows
        self.sink, self.out = open_output(
            out, tuple(out_shape), time_axis=ax, lead_shape=lead_shape, samples=samples, frame_shape=(h, w),
            record=self.metadata, pending_frames=max(p.keep[1] - p.keep[0] for p in windows), overwrite=overwrite,
        )
        if self.sink is None:
            self.sink = MemorySink(samples, n_stacks, t, (h, w))
        self.writer = WindowWriter(self.sink, windows, n_stacks)
        self.todo = [(k, i) for k in range(n_stacks) for i in range(len(windows)) if not self.writer.is_done(k, i)]
        self.total = sum(self.plan.pieces_per_window * self.solver.runs(sigmas[k], samples) * steps for k, _ in self.todo)
        self.samples = samples

    def preview(self, k: int, sample: int, piece, x01) -> np.ndarray | None:
        """The current estimate in the input's units and axes, with this piece's solution in place."""
        if not isinstance(self.sink, MemorySink) or self.plan.tiled:
            return None
        current = self.sink.values[sample].copy()
        current[k, slice(*piece.frames.keep)] = self.scales[k].from_unit(piece.kept(x01))
        return self.restore_axes(current)

    def check(self, k: int, estimate: np.ndarray) -> dict:
        """Stack ``k``'s result against its measurement (:mod:`~napari_svi.consistency`): is the data
        residual about the noise level? Noiseless restores are not checked."""
        sigma = self.sigmas[k]
        if not sigma:
            return {"chi2": None, "consistent": None, "note": "noiseless: not checked"}
        y01 = self.scales[k].to_unit(np.asarray(self.stacks[k]))[:, None]
        x01 = self.scales[k].to_unit(estimate)[:, None]
        op = self.spec.build(x01.shape, dtype=torch.float32)
        mask = self.plan.mask
        observed = None if mask is None else np.broadcast_to(
            (np.asarray(mask) != 0).reshape((-1, 1, *np.shape(mask)[-2:])), y01.shape)
        return verdict(residual_chi2(y01, op, x01, sigma, observed))

    def result(self, seconds: float) -> RestoreResult:
        self.metadata.update(seconds=round(seconds, 2), **self.solver.outcome())
        samples, metadata = self.samples, self.metadata
        if isinstance(self.sink, MemorySink):
            values = self.sink.values
            mean = values.mean(axis=0) if samples > 1 else values[0]
            metadata["consistency"] = [self.check(k, mean[k]) for k in range(values.shape[1])]
            restored = self.restore_axes(mean)
            std = self.restore_axes(values.std(axis=0)) if samples > 1 else None
            all_samples = np.stack([self.restore_axes(o) for o in values]) if samples > 1 else None
            return RestoreResult(restored=restored, std=std, samples=all_samples, metadata=metadata)
        if hasattr(self.out, "array_keys"):
            self.out.attrs[RECORD_KEY] = json_record(metadata)
            return RestoreResult(restored=self.out["restored"], std=self.out["std"] if samples > 1 else None,
                                 samples=self.out["samples"] if samples > 1 else None, metadata=metadata)
        return RestoreResult(restored=self.out, metadata=metadata)


def iter_restore(
    data, operator: OperatorSpec | None = None, *, prior: str | DiffusionPrior = "default", time_axis: int = 0,
    steps: int | None = None, eta: float | str = "auto", cg_steps: int = 5, noise_sigma: float | str | None = "auto",
    gamma: float | str = "auto", seed: int = 0, samples: int = 1, device: str = "auto", batch_consistent: bool = True,
    true_frames: int | None = None, preview_every: int = 0, percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    window: int | None = DEFAULT_WINDOW, window_overlap: int | None = None, window_margin: int | None = None,
    tile_size: int | None = None, memory_budget: int | str | None = None, fill_unseen: float = DEFAULT_FILL_UNSEEN,
    out=None, overwrite: bool = False, threads: int | None = None, start: str = DEFAULT_START,
    start_t: int = DEFAULT_START_T, blend: str = DEFAULT_BLEND,
) -> Generator[dict, None, RestoreResult]:
    """Restore a time-lapse step by step; a generator that returns a :class:`RestoreResult`.

    The settings are validated before the first yield, which comes before any heavy work; the data's
    intensity scale and noise level are checked before the prior loads. Each yield is ``{"stage",
    "step", "total", "estimate", "stack", "window", "windows"}``: ``stage`` goes through
    :data:`STAGES` in order, one yield at the start of each set-up stage (``step`` 0, ``total``
    None); then for every temporal window of every stack one yield ``"window"`` before its first
    step, and one ``"sampling"`` after each sampler step (with ``"i"``, the step within the piece,
    and ``"gamma"``), with ``estimate`` the current estimate (input units, true-stack shape) every
    ``preview_every`` steps and ``None`` otherwise (always ``None`` when writing to ``out`` or cutting
    frames into tiles). Closing the generator cancels the restore. See :func:`restore` for the
    parameters.
    """
    t_start = time.perf_counter()
    job = _Restoration()
    yield from job.setup(
        data, operator, prior=prior, time_axis=time_axis, steps=steps, eta=eta, cg_steps=cg_steps,
        noise_sigma=noise_sigma, gamma=gamma, seed=seed, samples=samples, device=device,
        batch_consistent=batch_consistent, true_frames=true_frames, preview_every=preview_every,
        percentiles=percentiles, window=window, window_overlap=window_overlap, window_margin=window_margin,
        tile_size=tile_size, memory_budget=memory_budget, fill_unseen=fill_unseen, out=out, overwrite=overwrite,
        threads=threads, start=start, start_t=start_t, blend=blend,
    )
    done, n_windows = 0, len(job.plan.windows)
    for k, wi in job.todo:
        yield {"stage": "window", "step": done, "total": job.total, "estimate": None, "stack": k, "window": wi,
               "windows": n_windows}
        a, b = job.plan.windows[wi].keep
        buffer = np.zeros((samples, b - a, *job.plan.frame_shape), dtype=np.float32)
        for piece in job.plan.pieces(wi, job.device):
            y = piece.measurement(job.stacks[k], job.scales[k], job.device)
            settings = lambda s, k=k, piece=piece: dict(steps=job.steps, eta=job.etas[k], cg_steps=cg_steps, gamma=job.gammas[k],  # noqa: E731
                                      batch_consistent=batch_consistent, fill_weight=fill_unseen,
                                      noise=piece.noise(NoiseField(seed + s, batch_consistent)))
            for s, info in job.solver.solve(job.prior, y, piece.operator, job.sigmas[k], samples, settings):
                done += 1
                if info["final"]:
                    piece.blend_into(buffer[s], info["denoised"])
                preview = not info["final"] and preview_every and done % preview_every == 0
                yield {"stage": "sampling", "step": done, "total": job.total, "stack": k, "window": wi, "windows": n_windows,
                       "estimate": job.preview(k, s, piece, info["denoised"]) if preview else None,
                       "i": info["i"], "gamma": info["gamma"]}
        job.writer.add(k, wi, job.scales[k].from_unit(buffer))
        del buffer
        release_memory()
    return job.result(time.perf_counter() - t_start)


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
    steps : int, optional
        Denoising steps (network evaluations per frame); default 5 from the warm start
        (``start="tv"``), 20 from noise (the paper's).
    eta : float or "auto"
        DDIM stochasticity in [0, 1]; 0.15 in the paper (noiseless data). ``"auto"``: 1 for noisy
        data, 0.15 for noiseless (:func:`~napari_svi.noise.auto_eta`).
    cg_steps : int
        Conjugate-gradient iterations after every step; 5 in the paper.
    noise_sigma : float, "auto" or None
        Standard deviation of the measurement noise in the data's units (for Poisson noise, its root
        mean square over the pixels); ``"auto"`` estimates it (:func:`~napari_svi.noise.estimate_noise_sigma`),
        ``None`` assumes noiseless data (solves the normal equations).
    gamma : float, "auto" or "piece"
        Data-consistency weight of the noisy CG form; ``"auto"`` sets it at every step from the
        noise level and the residual of the denoised estimate (:class:`~napari_svi.noise.ResidualGamma`),
        one per window of 64 x 64 pixels (overlapping by half, smoothly blended; each window's noise
        variance follows its brightness, :func:`~napari_svi.noise.relative_variance`); ``"piece"`` one
        for each piece (the rule before 2026-12-06); ``"regional"`` is ``"auto"``.
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
        overlapping spatial tiles, each a small inverse problem (:mod:`napari_svi.pieces`).
    fill_unseen : float
        For frames that no measurement reaches (frame interpolation, a frame masked out): weight of
        the pull towards the linear interpolation of the nearest measured frames after every step
        (:func:`napari_svi.sampler.fill_unseen`); 0 leaves them to the prior alone. Default 4.
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
    start : str
        ``"tv"`` (default): start each piece from its TV estimate (weight by
        :func:`napari_svi.warm_start.tv_rule`) diffused to timestep ``start_t`` (:mod:`napari_svi.warm_start`); noiseless data
        start from noise. ``"noise"``: pure noise at the last timestep (the paper).
    start_t : int
        Timestep of the warm start, 1..999 (default 200); the steps run from there to 0.
    blend : str
        ``"cv"`` (default, with ``start="tv"`` and noisy data): the result is ``x_tv + w (x_svi - x_tv)``
        with ``w`` in [0, 1] chosen per piece on 10 % held-out measurements, one ``w`` per band of
        temporal frequency (:func:`napari_svi.blend.band_weights`) and, in frames larger than 64 px,
        per 64-px region (:class:`napari_svi.blend.RegionalBlend`; with one sample the held-out
        run is the result, with several one more sampler run per piece); ``"none"``: the sampler's
        result as it is.
    callback : callable, optional
        Receives ``{"step", "total", "estimate", "stack", "window", "windows", "i", "gamma"}`` after
        every step (``i``: the step within the current piece; ``gamma``: its data-consistency
        weight); returning ``True`` cancels (raises :class:`RestoreCancelled`).

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
    overlapping temporal windows (and large frames in spatial tiles) that draw their noise from
    one frame-aligned field of the seed, blended with raised-cosine weights (:mod:`napari_svi.pieces`).

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
