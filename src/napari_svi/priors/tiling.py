"""Evaluate a prior on frames larger than memory allows: overlapping tiles and frame chunks.

:class:`TiledPrior` wraps any :class:`DiffusionPrior`. A frame is cut into tiles of
``tile_size`` pixels (a multiple of the network's ``size_multiple``) overlapping by at least
``overlap`` pixels; the tiles' eps predictions are blended with raised-cosine ramps across every
overlap, so neighbouring weights sum to one and no seam is visible (the starts and ramps of
:mod:`napari_svi.windows`, which also plans the restore's own windows and tiles). Tiles and frames share the
batch axis and go through the network in chunks of at most ``max_pixels_per_batch`` pixels. On
CUDA out-of-memory the chunk, then the tile, is halved and the call retried.

Tiling is exact for pixel-wise priors (e.g. the analytic Gaussian prior). For a UNet it is an
approximation: near a tile border the network sees less context, and GroupNorm statistics are
taken per tile rather than per frame.
"""

from __future__ import annotations

import math
import warnings

import torch

from ..validation import check_positive_int
from ..windows import blend_weights, spread_starts
from .base import DiffusionPrior

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TiledPrior(DiffusionPrior):
    """``prior`` evaluated in overlapping spatial tiles and frame chunks, under ``inference_mode``.

    Parameters
    ----------
    prior : DiffusionPrior
        The wrapped prior; its ``predict_noise`` sees tiles of shape (b, C, tile, tile).
    tile_size : int or None
        Tile height and width in pixels, a multiple of ``prior.size_multiple``; ``None`` runs
        whole frames until memory runs out.
    overlap : int
        Minimum overlap of neighbouring tiles in pixels (``0 <= overlap < tile_size``).
    max_pixels_per_batch : int or None
        Largest ``batch * height * width`` handed to the network in one call; ``None``: no limit.
    precision : {"float32", "bfloat16", "float16"}
        Autocast dtype of the network (mainly for CUDA); eps is returned as float32 either way.
    min_tile_size : int
        Out-of-memory retries give up below this tile size.
    channels_last : bool or None
        Run the network on channels-last tensors; ``None`` (default): on CUDA and on the CPU, not on
        other devices (Apple's MPS: unmeasured). On this project's 2-core CPU, quiet, it was 1.15x to
        1.27x of the contiguous layout at 1 and 2 threads (2026-12-03), eps within 1.3e-5; under heavy
        load earlier it ranged 0.7x to 1.15x (``benchmarks/results/speed/levers.md``).

    The wrapper's ``size_multiple`` is the network's, and the wrapper pads nothing: a frame side
    that one tile covers (every side when ``tile_size`` is None) must be a multiple of it. A side
    longer than the tile needs no padding (the tiles' starts spread over it). A restore pads every
    piece to the multiple in one place, the piece's operator (:class:`~napari_svi.pieces.Plan`,
    ``A @ Crop``), so a frame is padded the same way whether or not the network runs in tiles.
    """

    def __init__(
        self,
        prior: DiffusionPrior,
        tile_size: int | None = None,
        overlap: int = 32,
        max_pixels_per_batch: int | None = None,
        *,
        precision: str = "float32",
        min_tile_size: int = 64,
        channels_last: bool | None = None,
    ):
        m = prior.size_multiple
        if tile_size is not None and check_positive_int(tile_size, "tile_size") % m:
            raise ValueError(f"tile_size must be a positive multiple of {m} (the network's size multiple), got {tile_size!r}")
        if check_positive_int(overlap, "overlap", minimum=0) >= (tile_size or math.inf):
            raise ValueError(f"overlap must be an integer in [0, tile_size), got {overlap!r} for tile_size {tile_size}")
        if max_pixels_per_batch is not None:
            check_positive_int(max_pixels_per_batch, "max_pixels_per_batch")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        super().__init__(
            prior, prior.alphas_cumprod, channels=prior.channels, size_multiple=m, name=prior.name, info=prior.info
        )
        self.tile_size = None if tile_size is None else int(tile_size)
        self.overlap = int(overlap)
        self.max_pixels_per_batch = None if max_pixels_per_batch is None else int(max_pixels_per_batch)
        self.precision = precision
        self.min_tile_size = max(int(min_tile_size), m)
        if channels_last not in (None, True, False):
            raise ValueError(f"channels_last must be None (on CUDA and the CPU), True or False, got {channels_last!r}")
        self.channels_last = channels_last
        self._channels_last = False
        self._last_call: tuple[int, int] = (0, 0)  # (frames, pixels per frame) of the latest network call

    @property
    def prior(self) -> DiffusionPrior:
        return self.network  # type: ignore[return-value]

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps for ``x`` (B, C, H, W) at timesteps ``t`` (B,) or a scalar; float32, shape of ``x``."""
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        t = t.expand(x.shape[0]) if t.numel() == 1 else t
        if self._use_channels_last(x) and not self._channels_last:
            self.prior.to(memory_format=torch.channels_last)  # outside inference mode: params stay normal tensors
            self._channels_last = True
        while True:
            try:
                with torch.inference_mode():
                    eps = self._predict(x, t)
                return eps.clone()  # a normal tensor: callers may update it in place
            except torch.cuda.OutOfMemoryError:
                pass
            # outside the handler, so the failed attempt's activations are already freed
            if x.device.type == "cuda":
                torch.cuda.empty_cache()
            self._shrink(*x.shape[-2:])

    def _shrink(self, height: int, width: int) -> None:
        """Halve the chunk; once a chunk is a single tile, halve the tile; give up below the minimum."""
        frames, pixels = self._last_call
        m = self.prior.size_multiple
        if frames > 1:
            self.max_pixels_per_batch = max(1, frames * pixels // 2)
            what = f"at most {self.max_pixels_per_batch} pixels per network call"
        else:
            current = self.tile_size or _ceil_to(max(height, width), m)
            tile = (current // 2) // m * m
            if tile < self.min_tile_size:
                raise RuntimeError(
                    f"out of GPU memory even for one {current}x{current} tile per network call "
                    f"(minimum tile size {self.min_tile_size}); free GPU memory or run on the CPU"
                )
            self.tile_size = tile
            self.overlap = min(self.overlap, tile // 4)
            what = f"{tile}x{tile} tiles overlapping by {self.overlap} pixels"
        warnings.warn(f"out of GPU memory: retrying with {what}", RuntimeWarning, stacklevel=3)

    def _predict(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        m = self.prior.size_multiple
        tile = self.tile_size
        th, tw = (h, w) if tile is None else (min(tile, h), min(tile, w))
        if th % m or tw % m:
            raise ValueError(
                f"frames of {h} x {w} pixels: a side that one tile covers must be a multiple of {m} (the network's "
                f"size multiple); pad the frames to it first (a restore pads every piece: napari_svi.pieces)"
            )
        ys, xs = spread_starts(h, th, self.overlap), spread_starts(w, tw, self.overlap)
        if len(ys) == len(xs) == 1:
            return self._run(x, t).float()
        wy, wx = (
            [torch.from_numpy(v).to(device=x.device, dtype=torch.float32) for v in blend_weights(starts, size, n)]
            for starts, size, n in ((ys, th, h), (xs, tw, w))
        )
        positions = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
        tiles = torch.cat([x[..., ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for i, j in positions])
        eps = self._run(tiles, t.repeat(len(positions)))
        out = torch.zeros((b, c, h, w), dtype=torch.float32, device=x.device)
        total = torch.zeros((h, w), dtype=torch.float32, device=x.device)
        for k, (i, j) in enumerate(positions):
            weight = wy[i][:, None] * wx[j][None, :]
            out[..., ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += eps[k * b : (k + 1) * b] * weight
            total[ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += weight
        return out / total

    def _run(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network on ``x`` (N, C, h, w) in chunks of at most ``max_pixels_per_batch`` pixels."""
        n, pixels = x.shape[0], x.shape[-2] * x.shape[-1]
        per = n if self.max_pixels_per_batch is None else max(1, min(n, self.max_pixels_per_batch // pixels))
        self._last_call = (per, pixels)
        return torch.cat([self._network(x[i : i + per], t[i : i + per]) for i in range(0, n, per)])

    def _use_channels_last(self, x: torch.Tensor) -> bool:
        return x.device.type in ("cuda", "cpu") if self.channels_last is None else self.channels_last

    def _network(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self._use_channels_last(x):
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        if dtype == torch.float32:
            return self.prior.predict_noise(x, t).float()
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            eps = self.prior.predict_noise(x, t)
        return eps.float()


def _ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


__all__ = ["PRECISIONS", "TiledPrior"]
