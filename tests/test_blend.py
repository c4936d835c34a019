"""The held-out blend per region of the frame (napari_svi.blend.RegionalBlend)."""

import pytest
import torch

import napari_svi.blend as blend
from napari_svi.blend import RegionalBlend, band_weights, blend_weights, temporal_bands
from napari_svi.operators.base import Identity
from napari_svi.priors.base import GaussianPrior
from napari_svi.schedules import alphas_cumprod
from napari_svi.warm_start import PieceSolver


def _case(shape, left_w, right_w, seed=0):
    """A measurement that the sampler's estimate predicts with weight ``left_w`` on the left half, ``right_w`` on the right."""
    g = torch.Generator().manual_seed(seed)
    base, svi = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    w = torch.full(shape[-2:], float(left_w))
    w[:, shape[-1] // 2 :] = right_w
    y = base + w * (svi - base) + 0.005 * torch.randn(shape, generator=g)
    held = torch.rand(shape, generator=g) < 0.3
    return y, base, svi, held


def test_one_region_fits_what_the_whole_piece_fits():
    shape = (6, 1, 24, 24)
    y, base, svi, held = _case(shape, 0.3, 0.7)
    op = Identity(shape)
    bands = temporal_bands(shape[0])
    regional = RegionalBlend(y, op, held, base, svi, None, bands, region=32)
    assert len(regional.regions) == 1
    (w,) = blend_weights(y, op, held, base, [svi])
    assert regional.regions[0][3] == pytest.approx(w, abs=1e-6)
    assert regional.regions[0][5] == pytest.approx(band_weights(y, op, held, base, svi - base, bands, 1.0), abs=1e-6)
    torch.testing.assert_close(regional.weight_map("svi"), torch.full(shape[-2:], w), atol=1e-6, rtol=0)


def test_regions_find_where_the_prior_helps():
    shape = (4, 1, 32, 128)
    y, base, svi, held = _case(shape, 1.0, 0.0)
    regional = RegionalBlend(y, Identity(shape), held, base, svi, None, None, region=32)
    weights = {(r["row"], r["col"]): r["w"] for r in regional.record()}
    assert weights[(0, 0)] == pytest.approx(1.0, abs=0.03) and weights[(0, 96)] == pytest.approx(0.0, abs=0.03)
    m = regional.weight_map("svi")
    assert m.shape == shape[-2:]
    assert float(m[:, :16].min()) > 0.95 and float(m[:, -16:].max()) < 0.05  # one region's weight at each edge
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0  # a partition of unity blends weights in [0, 1]


def test_regional_map_covers_the_padded_frame():
    from napari_svi.operators.base import Crop

    shape, padded = (3, 1, 40, 40), (3, 1, 48, 48)
    y, base, svi, held = _case(shape, 0.2, 0.9)
    op = Identity(shape) @ Crop(padded, shape)
    pad = torch.nn.functional.pad
    regional = RegionalBlend(y, op, held, pad(base, (0, 8, 0, 8)), pad(svi, (0, 8, 0, 8)), None, None, region=16)
    m = regional.weight_map("svi")
    assert m.shape == padded[-2:]
    torch.testing.assert_close(m[40:, :40], m[39:40, :40].expand(8, 40))  # padded rows: the edge's weights


def test_piece_solver_blends_per_region_of_a_frame_larger_than_one_and_records_it(monkeypatch):
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    shape = (4, 1, 32, 64)
    g = torch.Generator().manual_seed(2)
    truth = 0.5 + 0.2 * torch.rand(shape, generator=g)
    y = truth + 0.05 * torch.randn(shape, generator=g)

    def run(region):
        monkeypatch.setattr(blend, "BLEND_REGION", region)
        solver = PieceSolver("tv", 200, "cv")
        infos = list(solver.solve(prior, y, Identity(shape), 0.05, 1, lambda s: dict(steps=3, generator=torch.Generator().manual_seed(s))))
        return solver, infos[-1][1]["denoised"]

    whole, x_whole = run(None)
    assert "blend_region_weights" not in whole.outcome()
    regional, x_regional = run(16)
    out = regional.outcome()
    assert out["blend_region_px"] == 16 and len(out["blend_region_weights"]) == 1
    assert len(out["blend_region_weights"][0]) == 3 * 7  # rows 0, 8, 16; columns 0, 8, ..., 48
    assert not torch.equal(x_whole, x_regional)
    assert float((x_regional - truth).square().mean()) < float((y - truth).square().mean())  # it restores


def test_a_frame_padded_to_the_network_multiple_keeps_richardson_lucy_in_the_blend():
    from napari_svi.operators.base import Crop
    from napari_svi.operators.spatial import SpatialConvolution
    from napari_svi.psf import gaussian_psf

    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    shape, padded = (4, 1, 20, 20), (4, 1, 24, 24)
    g = torch.Generator().manual_seed(4)
    blur = SpatialConvolution(gaussian_psf(1.0), shape)
    y = blur.forward(0.5 + 0.3 * torch.rand(shape, generator=g)) + 0.02 * torch.randn(shape, generator=g)
    for op in (blur, blur @ Crop(padded, shape)):
        solver = PieceSolver("tv", 200, "cv")
        list(solver.solve(prior, y, op, 0.02, 1, lambda s: dict(steps=2, generator=torch.Generator().manual_seed(s))))
        assert len(solver.rl_iterations) == 1, op  # Richardson-Lucy was a candidate, padded or not
