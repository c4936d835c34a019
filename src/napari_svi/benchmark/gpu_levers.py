"""GPU levers measured by the GPU check (:mod:`.gpu`): CUDA graphs, half precision, batching, compile, a profile.

Every stage restores the check's 16 x 256 x 256 clip (or K of them) with the defaults at 20 NFE and
reports seconds, frames per second (frames restored / wall seconds), peak GPU memory, PSNR against
the truth and the largest difference from the plain float32 restore. A stage that fails records its
error and the next one runs; stages are skipped once the time budget is spent. On a CPU (the dry
run) the same code runs: graphs fall through to plain calls, batching runs in threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import torch


def _restore(y, spec, prior, device, steps, **kw):
    from ..restore import restore

    return restore(y, spec, prior=prior, steps=steps, noise_sigma="auto", seed=0, device=str(device), **kw).restored


def _tiled(prior):
    from ..priors.tiling import TiledPrior

    return TiledPrior(prior, tile_size=None)


class Levers:
    """The clip, its truth and the float32 reference; :meth:`stage` times one variant and keeps its row."""

    def __init__(self, prior, device, y, truth, spec, steps, reference: np.ndarray, log: Callable[[str], object]):
        from .metrics import truth_scale

        self.prior, self.device, self.y, self.truth, self.spec, self.steps = prior, device, y, truth, spec, steps
        self.scale = truth_scale(truth)
        self.reference01 = self.scale.to_unit(reference)
        self.log = log
        self.rows: list[tuple[str, str]] = []
        self.records: dict[str, dict] = {}

    def score(self, restored: np.ndarray) -> tuple[float, float]:
        from .metrics import psnr

        x01 = self.scale.to_unit(restored)
        diff = None if self.reference01 is None else float(np.max(np.abs(x01 - self.reference01)))
        return psnr(self.scale.to_unit(self.truth), x01), diff

    def stage(self, name: str, fn: Callable[[], list[np.ndarray]], frames: int, warmup: Callable[[], object] | None,
              extra: dict | None = None) -> dict | None:
        """Time ``fn`` (returns the restored clips) after ``warmup``; record fps, memory, PSNR, difference."""
        from .measure import measure

        try:
            t0 = time.perf_counter()
            if warmup is not None:
                warmup()
            setup_s = time.perf_counter() - t0
            m = measure(fn, self.device)
            scores = [self.score(r) for r in m.value]
            rec = {"seconds": m.seconds, "frames": frames, "frames_per_second": frames / m.seconds,
                   "peak_gpu_mb": m.cuda_peak_mb, "peak_host_mb": m.peak_mb, "warmup_s": setup_s,
                   "psnr_db": min(s[0] for s in scores),
                   "max_abs_difference_from_float32": None if scores[0][1] is None else max(s[1] for s in scores),
                   **(extra or {})}
            gpu = "" if rec["peak_gpu_mb"] is None else f", GPU {rec['peak_gpu_mb']:.0f} MB"
            diff = rec["max_abs_difference_from_float32"]
            text = (f"{rec['seconds']:.3f} s, {rec['frames_per_second']:.1f} frames/s{gpu}, PSNR {rec['psnr_db']:.2f} dB"
                    + ("" if diff is None else f", max diff from float32 {diff:.1e}") + f" (warm-up {setup_s:.1f} s)")
        except Exception as err:  # noqa: BLE001 - one failed lever must not stop the check
            rec, text = {"error": f"{type(err).__name__}: {err}"[:500]}, f"FAILED: {type(err).__name__}: {err}"[:200]
        self.records[name] = rec
        self.rows.append((name, text))
        self.log(f"gpu_check: {name}: {text}")
        return rec

    # ------------------------------------------------------------------ the levers

    def graphs(self, precisions=("float32", "float16", "bfloat16")) -> None:
        """One CUDA graph per network call shape, in each precision (autocast inside the graph)."""
        from ..priors.graphs import CUDAGraphPrior

        n = self.y.shape[0]
        for precision in precisions:
            graphed = CUDAGraphPrior(self.prior, precision=precision)
            wrapped = _tiled(graphed)
            self.stage(f"restore {self._size()}, {self.steps} NFE, CUDA graphs, {precision}",
                       lambda w=wrapped: [_restore(self.y, self.spec, w, self.device, self.steps)], n,
                       lambda w=wrapped: _restore(self.y, self.spec, w, self.device, 2),
                       {"graphs_captured": graphed.captures})

    def batched(self, clips=(2, 4, 8), precision: str = "float16", graphs: bool = True) -> None:
        """K clips restored side by side in threads, their network calls gathered into one batch."""
        from ..priors.batching import BatchedPrior
        from ..priors.graphs import CUDAGraphPrior

        inner = CUDAGraphPrior(self.prior, precision=precision) if graphs else self.prior
        for k in clips:
            def run(k=k, steps=self.steps):
                shared = BatchedPrior(_tiled(inner), participants=k)
                out: list = [None] * k
                errors: list[BaseException] = []

                def one(i):
                    try:
                        with shared.participant():
                            out[i] = _restore(self.y, self.spec, _tiled(shared), self.device, steps)
                    except BaseException as err:  # noqa: BLE001 - re-raised in the caller
                        errors.append(err)

                threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                if errors:
                    raise errors[0]
                return out

            self.stage(f"{k} clips x {self._size()} side by side, one batch, {precision}"
                       + (", CUDA graphs" if graphs else ""), run, k * self.y.shape[0],
                       lambda run=run: run(steps=2), {"clips": k, "precision": precision, "graphs": graphs})

    def long_stack(self, frames: int = 64, precision: str = "float16") -> None:
        """A longer stack in one piece (``window=None``: all frames in each network call) and in default windows."""
        from ..degrade import degrade
        from ..priors.graphs import CUDAGraphPrior
        from .speed import synthetic_stack

        truth = synthetic_stack(frames, self.y.shape[-1])
        y = degrade(truth, self.spec, noise_sigma=0.01 * float(np.percentile(truth, 99.9)), poisson_peak=200.0, seed=0)
        from .metrics import truth_scale

        keep = (self.truth, self.reference01, self.scale)
        # PSNR against this stack's truth; no float32 reference to compare with
        self.truth, self.reference01, self.scale = truth, None, truth_scale(truth)
        try:
            for window in (None, 16):
                wrapped = _tiled(CUDAGraphPrior(self.prior, precision=precision))
                self.stage(f"{frames} x {self._size(y)} stack, window {window or 'none (one piece)'}, {precision}",
                           lambda w=wrapped, win=window: [_restore(y, self.spec, w, self.device, self.steps, window=win)],
                           frames, lambda w=wrapped, win=window: _restore(y, self.spec, w, self.device, 2, window=win),
                           {"window": window})
        finally:
            self.truth, self.reference01, self.scale = keep

    def compiled(self, mode: str = "reduce-overhead") -> None:
        """``torch.compile`` of the network (compile time is the warm-up)."""
        from ..priors.base import DiffusionPrior

        net = torch.compile(self.prior.network, mode=mode)
        prior = DiffusionPrior(net, self.prior.alphas_cumprod, channels=self.prior.channels,
                               size_multiple=self.prior.size_multiple, name=self.prior.name, info=self.prior.info)
        wrapped = _tiled(prior)
        self.stage(f"restore {self._size()}, {self.steps} NFE, torch.compile({mode})",
                   lambda: [_restore(self.y, self.spec, wrapped, self.device, self.steps)], self.y.shape[0],
                   lambda: _restore(self.y, self.spec, wrapped, self.device, 2), {"mode": mode})

    def profile(self, steps: int = 2, rows: int = 15) -> str:
        """``torch.profiler`` table of a short restore: where device and host time go (launch-bound or not)."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        wrapped = _tiled(self.prior)
        _restore(self.y, self.spec, wrapped, self.device, 1)
        with profile(activities=activities) as prof:
            _restore(self.y, self.spec, wrapped, self.device, steps)
        averages = prof.key_averages()
        keys = ("device_time_total", "cuda_time_total") if self.device.type == "cuda" else ()
        for key in (*keys, "cpu_time_total"):  # the device column's name changed across torch versions
            try:
                return f"sorted by {key}\n" + averages.table(sort_by=key, row_limit=rows)
            except (AttributeError, KeyError, ValueError):
                continue
        return averages.table(row_limit=rows)

    def _size(self, y=None) -> str:
        y = self.y if y is None else y
        return f"{y.shape[0]}x{y.shape[1]}x{y.shape[2]}"


__all__ = ["Levers"]
