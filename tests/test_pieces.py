"""Pieces (temporal windows x spatial tiles) are exact sub-problems: tiles equal the whole frame,
masked-out entries of a measurement never matter, and gamma sees observed entries only."""

import numpy as np
import pytest
import torch

from napari_svi.operators import Identity, Mask, OperatorSpec
from napari_svi.priors.base import GaussianPrior
from napari_svi.restore import iter_restore, restore
from napari_svi.sampler import ResidualGamma, svi_steps
from napari_svi.schedules import alphas_cumprod


@pytest.fixture(scope="module")
def prior():
    return GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))


@pytest.fixture(scope="module")
def nuclei():
    from napari_svi.datasets import load_heldout_timelapse

    return load_heldout_timelapse()[:6, 200:264, 80:144].astype(np.float32)  # real nuclei, 6 x 64 x 64


def _psnr(x, ref, peak=255.0):
    return 10 * np.log10(peak**2 / np.mean((np.asarray(x, np.float64) - ref) ** 2))


def test_tiles_equal_the_whole_frame_for_an_identity_operator_and_a_pixelwise_prior(nuclei, prior):
    # one frame-aligned noise field per step, sliced per tile: with a pixel-wise prior and A = I
    # every pixel's sub-problem is the same in a tile as in the whole frame (from noise: the warm
    # start's TV estimate couples neighbouring pixels, so it is not a pixel-wise method)
    y = nuclei + np.random.default_rng(0).normal(0, 4, nuclei.shape).astype(np.float32)
    kw = dict(prior=prior, steps=8, noise_sigma=4.0, gamma=3.0, device="cpu", window=None, start="noise")
    whole = restore(y, None, **kw)
    tiled = restore(y, None, memory_budget=6 * 20 * 4 * 24 * 24, **kw)
    assert tiled.metadata["tiles"][0] > 2 and tiled.metadata["tiles"][1] > 2
    np.testing.assert_allclose(tiled.restored, whole.restored, atol=1e-3 * np.ptp(whole.restored))
    # and with several samples, each sample's tiles agree too
    kw["samples"] = 2
    np.testing.assert_allclose(restore(y, None, memory_budget=6 * 20 * 4 * 24 * 24, **kw).samples,
                               restore(y, None, **kw).samples, atol=1e-3 * np.ptp(whole.restored))


def test_independent_noise_is_frame_aligned_across_windows(nuclei, prior):
    # the ablation (per-frame noise) draws each frame's noise by its true frame index, so windows agree
    y = np.concatenate([nuclei, nuclei[::-1], nuclei])  # 18 frames
    kw = dict(prior=prior, steps=6, noise_sigma=4.0, gamma=3.0, device="cpu", batch_consistent=False, start="noise")
    whole = restore(y, None, window=None, **kw).restored
    windowed = restore(y, None, window=6, window_overlap=2, **kw)
    assert windowed.metadata["windows"] > 2
    np.testing.assert_allclose(windowed.restored, whole, atol=1e-3 * np.ptp(whole))


def test_gamma_on_tiles_uses_only_the_entries_a_tile_observes(nuclei, prior):
    # tile borders are masked out of each tile's measurement; the residual gamma rule must not count
    # them (before: gamma sat at its 1000 clamp on every tile at every step)
    from napari_svi.degrade import degrade

    spec = OperatorSpec(spatial_psf="gaussian:1.5")
    y = degrade(nuclei, spec, noise_sigma=3.0, seed=2)
    kw = dict(prior=prior, steps=6, noise_sigma=3.0, device="cpu", window=None, eta=0.15, start="noise")  # the release's

    def last_gammas(**extra):
        return [info["gamma"] for info in iter_restore(y, spec, **kw, **extra) if info["stage"] == "sampling" and info["i"] == kw["steps"] - 1]

    (whole,) = last_gammas()
    tiles = last_gammas(memory_budget=6 * 20 * 4 * 32 * 32)
    assert len(tiles) >= 4
    assert all(whole / 3 < g < whole * 3 for g in tiles), (whole, tiles)


def test_values_at_masked_out_pixels_do_not_matter(nuclei, prior):
    """A measurement file may hold anything where the mask says unobserved (0, the raw camera value,
    a saturated fill): the restore changes by at most 0.1 dB."""
    from napari_svi.degrade import degrade, random_mask

    mask = random_mask((6, 64, 64), 0.3, seed=1)
    spec = OperatorSpec(spatial_psf="gaussian:1.0", mask=mask)
    y = degrade(nuclei, spec, noise_sigma=3.0, seed=3)  # zero where unobserved
    raw = degrade(nuclei, OperatorSpec(spatial_psf="gaussian:1.0"), noise_sigma=3.0, seed=3)
    filled = np.where(mask, y, 4 * y.max())
    kw = dict(prior=prior, steps=10, device="cpu", window=None)
    results = [restore(m, spec, **kw) for m in (y, np.where(mask, y, raw), filled)]
    psnr = [_psnr(r.restored, nuclei) for r in results]
    assert max(psnr) - min(psnr) <= 0.1, psnr
    for r in results[1:]:  # the scale and the noise estimate come from observed pixels only
        np.testing.assert_allclose(r.metadata["intensity_scale"], results[0].metadata["intensity_scale"], rtol=1e-6)
        np.testing.assert_allclose(r.metadata["noise_sigma_used"], results[0].metadata["noise_sigma_used"], rtol=1e-6)


def test_sampler_ignores_the_data_at_entries_the_operator_does_not_observe(prior):
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.2 * torch.randn((4, 1, 16, 16), generator=g)
    observed = torch.rand((16, 16), generator=g) > 0.3
    op = Mask(observed, x.shape)
    y = op.forward(x + 0.02 * torch.randn(x.shape, generator=g))
    garbage = torch.where(observed, y, torch.full_like(y, 7.0))

    def run(data):
        steps = list(svi_steps(prior, data, op, steps=6, gamma=ResidualGamma(0.02),
                               generator=torch.Generator().manual_seed(1)))
        return [s["gamma"] for s in steps], steps[-1]["denoised"]

    (ga, xa), (gb, xb) = run(y), run(garbage)
    assert ga == pytest.approx(gb) and max(ga) < 1000
    torch.testing.assert_close(xa, xb)
    assert Identity(x.shape).observed(y) is not None


class SmoothingPrior(GaussianPrior):
    """A Gaussian prior whose denoised estimate is taken from a 5 x 5 local mean of x_t.

    Spatially mixing (what fills the padding reaches the frame's edge pixels), and, like a UNet,
    it accepts only frames whose sides are multiples of 8.
    """

    def __init__(self):
        super().__init__(0.0, 0.5, alphas_cumprod("linear"))
        self.size_multiple = 8
        self.shapes = []

    def predict_noise(self, x, t):
        assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0, x.shape
        self.shapes.append(tuple(x.shape))
        abar = self.alphas_cumprod.to(x.device)[t].to(x.dtype).reshape(-1, 1, 1, 1)
        local = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
        x0 = abar.sqrt() * self.std**2 / (abar * self.std**2 + 1 - abar) * local
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()


def test_frames_are_padded_to_the_network_multiple_one_way_with_or_without_network_tiles(nuclei):
    # padding to the network's size multiple happens in one place, the piece's operator (A @ Crop):
    # a frame that one network tile covers gives the restore without network tiles (before, the
    # tiled network padded by reflection instead, which a spatially mixing prior sees at the edges)
    y = nuclei[:, :13, :19] + np.random.default_rng(0).normal(0, 4, (6, 13, 19)).astype(np.float32)
    kw = dict(steps=4, noise_sigma=4.0, gamma=3.0, device="cpu", window=None)
    plain, in_tiles = SmoothingPrior(), SmoothingPrior()
    whole = restore(y, None, prior=plain, **kw)
    tiled = restore(y, None, prior=in_tiles, tile_size=24, **kw)  # one 16 x 24 network tile per frame
    assert set(plain.shapes) == set(in_tiles.shapes) == {(6, 1, 16, 24)}
    np.testing.assert_allclose(tiled.restored, whole.restored, rtol=1e-5, atol=1e-4 * np.ptp(whole.restored))
