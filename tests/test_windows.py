"""Temporal windows and spatial tiles: exact window operators, blending weights, and no seams."""

import numpy as np
import pytest
import torch

from napari_svi.operators import OperatorSpec
from napari_svi.operators.temporal import temporal_matrix
from napari_svi.pieces import plan_restore
from napari_svi.windows import (
    blend_weights,
    default_margin,
    memory_bytes,
    plan_axis_tiles,
    plan_windows,
    spatial_margin,
    spread_starts,
    support,
    tile_for_budget,
)

KERNELS = {
    "box7": np.ones(7) / 7,
    "box4": np.ones(4) / 4,  # even: reaches one frame further back
    "gauss": np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2),
    "holes": np.array([0.2, 0.0, 0.6, 0.0, 0.2]),  # zero taps are no support
}


@pytest.mark.parametrize("kernel", KERNELS, ids=str)
@pytest.mark.parametrize("boundary", ["symmetric", "circular"])
@pytest.mark.parametrize("subsample", [1, 3])
def test_window_matrix_is_a_block_of_the_full_matrix(kernel, boundary, subsample):
    k = KERNELS[kernel] / KERNELS[kernel].sum()
    n = 41
    full = temporal_matrix(k, n, boundary, subsample)
    windows = plan_windows(n, k, boundary, subsample, window=8, overlap=2)
    assert len(windows) > 2
    for p in windows:
        block = temporal_matrix(k, n, boundary, subsample, measured=p.measured, solve=p.solve)
        np.testing.assert_allclose(block, full[p.measured][:, p.solve], atol=1e-15)
        outside = np.setdiff1d(np.arange(n), p.solve)
        assert not np.any(full[p.measured][:, outside]), "a used measurement reaches outside the window"
        # every measurement that touches a kept frame is used (margin = L - 1 + s - 1)
        touching = np.flatnonzero(full[:, p.keep[0] : p.keep[1]].any(axis=1))
        assert set(touching) <= set(p.measured)
        # unused measurements really do reach outside
        unused = np.setdiff1d(np.arange(full.shape[0]), p.measured)
        assert all(full[o, outside].any() for o in unused)


@pytest.mark.parametrize("n,window,overlap", [(41, 8, 2), (100, 16, 4), (30, 8, 0), (17, 4, 3)])
def test_windows_cover_every_frame_with_weights_summing_to_one(n, window, overlap):
    windows = plan_windows(n, np.ones(3) / 3, window=window, overlap=overlap)
    total = np.zeros(n)
    for p in windows:
        total[p.keep[0] : p.keep[1]] += p.weights
        assert p.keep[1] - p.keep[0] == window
        assert len(p.solve) <= window + 2 * default_margin(3)
        assert np.all(p.weights > 0)
        np.testing.assert_array_equal(p.solve[p.keep_in_solve], np.arange(*p.keep))
    np.testing.assert_allclose(total, 1.0)
    starts = [p.keep[0] for p in windows]
    assert starts == sorted(starts) and starts[0] == 0 and windows[-1].keep[1] == n
    # overlaps are at least the requested number of frames
    assert all(b.keep[0] <= a.keep[1] - overlap for a, b in zip(windows[:-1], windows[1:], strict=True))


def test_short_stack_is_one_window():
    (p,) = plan_windows(28, np.ones(7) / 7, window=16)  # 28 <= 16 + 2 * 6
    np.testing.assert_array_equal(p.solve, np.arange(28))
    np.testing.assert_array_equal(p.measured, np.arange(28))
    assert len(plan_windows(29, np.ones(7) / 7, window=16)) > 1
    assert len(plan_windows(500, None, window=None)) == 1


def test_ramps_and_starts():
    w = blend_weights([0, 6], 10, 16)
    np.testing.assert_allclose(w[0][6:] + w[1][:4], 1.0)
    assert np.all(np.diff(w[0][6:]) < 0) and np.all(np.diff(w[1][:4]) > 0)  # smooth cross-fade
    assert spread_starts(100, 32, 8, align=4) == sorted(spread_starts(100, 32, 8, align=4))
    assert all(s % 4 == 0 for s in spread_starts(100, 32, 8, align=4))
    with pytest.raises(ValueError, match="overlap"):
        spread_starts(100, 8, 8)


@pytest.mark.parametrize("psf_size,downsample", [(1, 1), (5, 1), (7, 2), (4, 3)])
def test_spatial_tiles_use_exactly_the_measurements_inside(psf_size, downsample):
    n = 96
    tiles = plan_axis_tiles(n, 30, psf_size=psf_size, downsample=downsample)
    cols = support(n, psf_size, "symmetric", downsample, n // downsample)
    total = np.zeros(n)
    for p in tiles:
        total[p.keep[0] : p.keep[1]] += p.weights
        assert p.solve[0] % downsample == 0 and (p.solve[-1] + 1) % downsample == 0
        lo, hi = p.solve[0], p.solve[-1] + 1
        inside = ((cols >= lo) & (cols < hi)).all(axis=1)
        np.testing.assert_array_equal(np.flatnonzero(inside), p.measured)
        touching = np.flatnonzero(((cols >= p.keep[0]) & (cols < p.keep[1])).any(axis=1))
        assert set(touching) <= set(p.measured), "the margin must cover every measurement of a kept pixel"
    np.testing.assert_allclose(total, 1.0)
    assert spatial_margin(psf_size, downsample) % downsample == 0


def test_single_piece_operator_equals_the_spec():
    spec = OperatorSpec(temporal_psf="uniform:5", temporal_subsample=2, spatial_psf="gaussian:1.0", downsample=2)
    t, h, w = 11, 16, 12
    (piece,) = plan_restore(spec, (6, 8, 6), t, window=None).pieces(0)
    op = piece.operator.to(dtype=torch.float64)
    ref = spec.build((t, 1, h, w), dtype=torch.float64)
    x = torch.rand(t, 1, h, w, dtype=torch.float64)
    torch.testing.assert_close(op.forward(x), ref.forward(x))
    frames, rs, cs = piece.measured_frames, piece.row_slice, piece.col_slice
    assert len(frames) == ref.out_shape[0] and (rs, cs) == (slice(0, 8), slice(0, 6))


def test_budget_and_bytes():
    assert memory_bytes("8GB") == 8 * 10**9 and memory_bytes("512 MiB") == 512 * 2**20 and memory_bytes(1000) == 1000
    assert memory_bytes(None) is None
    for bad in ("lots", -5, "0GB", True):
        with pytest.raises(ValueError, match="memory_budget"):
            memory_bytes(bad)
    assert tile_for_budget(16, 64, 64, None) is None
    assert tile_for_budget(16, 64, 64, 10**9) is None  # fits
    side = tile_for_budget(16, 4096, 4096, 2**30, multiple=8)
    assert side % 8 == 0 and 16 * 20 * 4 * side**2 <= 2**30
    with pytest.raises(ValueError, match="too small"):
        tile_for_budget(16, 4096, 4096, 1000)


# ------------------------------------------------------------------------- restores in windows and tiles


def _psnr(a, b, peak=255.0):
    return np.array([10 * np.log10(peak**2 / np.mean((x - y) ** 2)) for x, y in zip(a, b, strict=True)])


@pytest.fixture(scope="module")
def gaussian_prior():
    from napari_svi.priors.base import GaussianPrior
    from napari_svi.schedules import alphas_cumprod

    return GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))


@pytest.fixture(scope="module")
def nuclei():
    from napari_svi.datasets import load_heldout_timelapse

    x = load_heldout_timelapse()  # real fluorescence nuclei, 30 x 511 x 256 uint8
    return np.concatenate([x, x[::-1]])[:, 200:248, 100:148].astype(np.float32)  # 60 frames, 48 x 48


def test_no_seams_between_windows(nuclei, gaussian_prior):
    """Frames where windows meet restore as well as interior frames (within 0.5 dB).

    Real nuclei, box-7 temporal blur, Gaussian noise sigma 2 (of 255); the analytic Gaussian prior at
    20 steps (exact eps, seconds on a CPU): it knows nothing about time, so any seam would come from
    the windowing alone.
    """
    from napari_svi.degrade import degrade
    from napari_svi.restore import restore

    spec = OperatorSpec(temporal_psf="uniform:7")
    y = degrade(nuclei, spec, noise_sigma=2.0, seed=0)
    kw = dict(prior=gaussian_prior, steps=20, noise_sigma=2.0, device="cpu", start="noise")
    result = restore(y, spec, window=12, window_overlap=3, **kw)
    windows = plan_windows(len(nuclei), spec.temporal_kernel(), window=12, overlap=3)
    assert result.metadata["windows"] == len(windows) >= 4
    cover = np.zeros(len(nuclei), int)
    for p in windows:
        cover[p.keep[0] : p.keep[1]] += 1
    psnr = _psnr(result.restored, nuclei)
    edge = np.flatnonzero(cover > 1)  # frames where two windows are blended
    inner = np.flatnonzero(cover == 1)
    inner = inner[(inner >= 7) & (inner < len(nuclei) - 7)]  # away from the stack's own ends
    gap = psnr[inner].mean() - psnr[edge].mean()
    assert gap < 0.5, f"seam frames {psnr[edge].mean():.2f} dB vs interior {psnr[inner].mean():.2f} dB"
    # and no jump in the difference to the neighbouring frame where windows meet
    steps = np.abs(np.diff(result.restored, axis=0)).mean(axis=(1, 2))
    true_steps = np.abs(np.diff(nuclei, axis=0)).mean(axis=(1, 2))
    assert np.max(steps - true_steps) < 3 * np.median(np.abs(steps - true_steps)) + 2.0


def test_windows_agree_with_whole_stack_when_frames_are_independent(nuclei, gaussian_prior):
    # without temporal coupling every window sees the same seed-derived shared noise: with a fixed
    # gamma the windowed restore is the whole-stack restore
    from napari_svi.restore import restore

    y = nuclei[:20] + np.random.default_rng(0).normal(0, 3, nuclei[:20].shape).astype(np.float32)
    kw = dict(prior=gaussian_prior, steps=8, noise_sigma=3.0, device="cpu", start="noise")
    whole = restore(y, None, window=None, gamma=3.0, **kw).restored
    windowed = restore(y, None, window=6, window_overlap=2, gamma=3.0, **kw)
    assert windowed.metadata["windows"] > 2
    np.testing.assert_allclose(windowed.restored, whole, atol=1e-3)
    # gamma "auto" is set from each window's own residual, so windows differ slightly from the whole
    whole = restore(y, None, window=None, **kw).restored
    windowed = restore(y, None, window=6, window_overlap=2, **kw).restored
    assert np.abs(windowed - whole).max() < 0.01 * np.ptp(whole)


def test_spatial_tiles_under_a_memory_budget(nuclei, gaussian_prior):
    """Tiles fit the data as well as the whole frame does, also along the tile edges.

    The Gaussian prior leaves what the blur removed to chance, so the check is data consistency:
    ``|A x - y|`` near the noise level everywhere, in the bands around tile edges too (a margin
    that missed part of the PSF would leave a large residual there).
    """
    from napari_svi.degrade import degrade
    from napari_svi.restore import restore

    spec = OperatorSpec(spatial_psf="gaussian:1.2", downsample=2)
    gt = nuclei[:6]
    y = degrade(gt, spec, noise_sigma=2.0, seed=1)
    kw = dict(prior=gaussian_prior, steps=10, noise_sigma=2.0, device="cpu", window=None)
    whole = restore(y, spec, **kw)
    tiled = restore(y, spec, memory_budget=6 * 20 * 4 * 24 * 24, **kw)  # tiles of 24 x 24 of 48 x 48
    assert tiled.metadata["tiles"][0] > 1 and tiled.metadata["tiles"][1] > 1
    assert tiled.restored.shape == whole.restored.shape == gt.shape
    forward = spec.build((6, 1, 48, 48), dtype=torch.float64)

    def residual(x):
        return np.abs(forward.forward(torch.from_numpy(x.astype(np.float64))[:, None])[:, 0].numpy() - y)

    tiles = plan_axis_tiles(48, 24, psf_size=spec.spatial_kernel().shape[0], downsample=2)
    band = np.zeros(24, bool)  # measured pixels within 2 of a tile edge
    for p in tiles[1:]:
        band[p.keep[0] // 2 - 2 : p.keep[0] // 2 + 2] = True
    for p in tiles[:-1]:
        band[p.keep[1] // 2 - 2 : p.keep[1] // 2 + 2] = True
    r_whole, r_tiled = residual(whole.restored), residual(tiled.restored)
    assert r_tiled.mean() < 1.2 * r_whole.mean() < 1.2 * 1.5 * 2.0  # about the noise level (sigma 2)
    assert r_tiled[:, band].mean() < 1.3 * r_whole.mean()
    assert r_tiled[:, :, band].mean() < 1.3 * r_whole.mean()
