"""The warm start from a TV estimate, the blend by held-out data, and the discrepancy-principle TV."""

import math

import numpy as np
import pytest
import torch

from napari_svi.blend import apply_band, band_weights, blend_weights, temporal_bands
from napari_svi.classical import discrepancy_tv, measurement_start
from napari_svi.operators.base import Identity
from napari_svi.operators.spatial import Mask
from napari_svi.priors.base import GaussianPrior
from napari_svi.restore import restore
from napari_svi.schedules import alphas_cumprod
from napari_svi.warm_start import DEFAULT_START_T, PieceSolver, check_start


def _smooth_stack(shape=(4, 1, 32, 32), seed=0):
    yy, xx = np.mgrid[: shape[2], : shape[3]]
    frames = [0.5 + 0.3 * np.sin(xx / 5.0 + k / 3) * np.cos(yy / 7.0) for k in range(shape[0])]
    return torch.tensor(np.stack(frames)[:, None], dtype=torch.float32)


def test_blend_weight_recovers_the_mix_that_predicts_the_held_out_data():
    shape = (3, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    x_tv, x_svi = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    op = Identity(shape)
    held = torch.rand(shape, generator=g) < 0.3
    for w in (0.0, 0.3, 0.8, 1.0):
        y = x_tv + w * (x_svi - x_tv) + 0.01 * torch.randn(shape, generator=g)
        assert blend_weights(y, op, held, x_tv, [x_svi]) == pytest.approx([w], abs=0.03)
    y = x_tv + 2.0 * (x_svi - x_tv)  # beyond the SVI estimate: clipped to [0, 1]
    assert blend_weights(y, op, held, x_tv, [x_svi]) == [1.0]
    assert blend_weights(y, op, held, x_tv, [x_tv]) == [0.0]  # identical estimates: nothing to choose


def test_temporal_bands_split_a_stack_into_parts_that_sum_back():
    bands = temporal_bands(10)
    assert len(bands) == 3  # the mean; 0 < f <= 0.1 cycles per frame (DCT 1-2 of 10 frames); the rest
    torch.testing.assert_close(sum(bands), torch.eye(10), atol=1e-5, rtol=0)
    for i, a in enumerate(bands):
        torch.testing.assert_close(a @ a, a, atol=1e-5, rtol=0)  # projections
        for b in bands[i + 1:]:
            assert float((a @ b).abs().max()) < 1e-5  # onto orthogonal bands
    x = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1).expand(10, 1, 2, 2)
    torch.testing.assert_close(apply_band(bands[0], x), x.mean(dim=0, keepdim=True).expand_as(x))
    assert len(temporal_bands(1)) == 1 and len(temporal_bands(3)) == 2  # short stacks: no empty band


def test_band_weights_find_per_band_mixes_a_temporal_blur_hides_from_one_weight():
    from napari_svi.operators import OperatorSpec

    shape = (16, 1, 24, 24)
    g = torch.Generator().manual_seed(3)
    base, correction = torch.rand(shape, generator=g), torch.randn(shape, generator=g)
    bands = temporal_bands(16)
    truth_w = [0.0, 0.5, 1.0]  # the correction is right only where it changes fast
    x = base + sum(w * apply_band(b, correction) for w, b in zip(truth_w, bands, strict=True))
    op = OperatorSpec(temporal_psf="uniform:7", temporal_boundary="symmetric").build(shape)
    y = op.forward(x)
    held = torch.rand(tuple(op.out_shape), generator=g) < 0.1
    assert band_weights(y, op, held, base, correction, bands, 1.0) == pytest.approx(truth_w, abs=0.02)
    # one weight for the whole correction is set by the slow part the blur keeps, far from the fast part's 1
    (one,) = blend_weights(y, op, held, base, [base + correction])
    assert one < 0.5
    assert max(band_weights(y, op, held, base, correction, bands, 0.4)) <= 0.4  # the Richardson-Lucy share


def test_discrepancy_tv_leaves_the_noise_energy_in_the_residual():
    truth = _smooth_stack()
    sigma = 0.05
    y = truth + sigma * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1))
    x, weight, chi2 = discrepancy_tv(y, Identity(truth.shape), sigma)
    assert 0.7 < chi2 <= 1.0 and weight > 1e-4
    assert float((x - truth).square().mean()) < 0.5 * sigma**2  # it denoises
    with pytest.raises(ValueError, match="noise_sigma"):
        discrepancy_tv(y, Identity(truth.shape), 0.0)


def test_measurement_start_fills_unobserved_pixels_with_the_mean():
    shape = (2, 1, 8, 8)
    keep = np.ones((8, 8), bool)
    keep[2:4, 2:4] = False
    op = Mask(keep, shape)
    y = op.forward(torch.full(shape, 0.7))
    x = measurement_start(y, op)
    assert torch.allclose(x, torch.full(shape, 0.7))


def test_piece_solver_runs_a_held_out_solve_first_and_blends_every_sample():
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    truth = _smooth_stack()
    op = Identity(truth.shape)
    y = truth + 0.05 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(2))
    solver = PieceSolver("tv", 200, "cv")
    assert solver.runs(0.05, 2) == 3 and solver.runs(None, 2) == 2
    infos = list(solver.solve(prior, y, op, 0.05, 2, lambda s: dict(steps=4, generator=torch.Generator().manual_seed(s))))
    assert len(infos) == 3 * 4
    finals = [(s, i) for s, i in infos if i["final"]]
    assert [s for s, _ in finals] == [0, 1]
    assert not any(i["final"] for _, i in infos[:4])  # the held-out solve is not a result
    assert len(solver.blend_weights) == 1 and 0.0 <= solver.blend_weights[0] <= 1.0
    assert set(solver.outcome()) - {"sampler_weight_zero"} == {"start_tv_weight", "start_tv_rule", "blend_weight",
                                                               "blend_rl_weight", "blend_rl_iterations",
                                                               "blend_band_weights", "blend_band_edges"}
    assert len(solver.band_weights) == 1 and len(solver.band_weights[0]) == len(temporal_bands(truth.shape[0]))
    assert solver.outcome()["start_tv_rule"] == ["sure"]  # an identity operator: every entry sees one voxel
    assert 1 <= solver.outcome()["blend_rl_iterations"][0] <= 200
    assert solver.record()["kind"] == "tv" and solver.record()["start_t"] == 200
    assert ("sampler_weight_zero" in solver.outcome()) == (max(solver.band_weights[0]) == 0)
    solver.blend_weights, solver.band_weights = [0.3, 0.3], [[0.0, 0.0], [0.0, 0.0]]  # the band weights are applied
    assert "weight 0 in every piece" in solver.outcome()["sampler_weight_zero"]
    solver.band_weights = [[0.0, 0.0], [0.0, 0.3]]
    assert "sampler_weight_zero" not in solver.outcome()
    one = PieceSolver("tv", 200, "cv")  # one sample: the held-out run is also the result
    assert one.runs(0.05, 1) == 1 and one.reuse(0.05, 1) and not one.reuse(0.05, 2) and not one.reuse(None, 1)
    infos = list(one.solve(prior, y, op, 0.05, 1, lambda s: dict(steps=4, generator=torch.Generator().manual_seed(s))))
    assert [i["final"] for _, i in infos] == [False, False, False, True] and len(one.blend_weights) == 1
    x = infos[-1][1]["denoised"]
    assert float((x - truth).square().mean()) < float((y - truth).square().mean())  # it restores
    one.reuse_held_out = False
    assert one.runs(0.05, 1) == 2
    noiseless = PieceSolver("tv", 200, "cv")
    assert len(list(noiseless.solve(prior, y, op, None, 1, lambda s: dict(steps=3)))) == 3
    assert "start_from_noise" in noiseless.outcome()


@pytest.mark.parametrize("kwargs, match", [
    (dict(start="warm"), "start must be one of"),
    (dict(blend="mean"), "blend must be one of"),
    (dict(start_t=0), "start_t"),
    (dict(start_t=1000), "start_t"),
    (dict(start_t=3, steps=10), "at most start_t"),
])
def test_bad_start_settings_are_refused(kwargs, match):
    settings = dict(start="tv", start_t=200, steps=5, blend="cv") | kwargs
    with pytest.raises(ValueError, match=match):
        check_start(settings["start"], settings["start_t"], settings["steps"], settings["blend"])


def test_restore_records_the_start_and_the_blend():
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    truth = _smooth_stack((5, 1, 32, 32))[:, 0].numpy() * 200
    y = truth + np.random.default_rng(3).normal(0, 8, truth.shape).astype(np.float32)
    result = restore(y, None, prior=prior, device="cpu", window=None)
    meta = result.metadata
    assert meta["steps"] == 5 and meta["start"]["kind"] == "tv" and meta["start"]["blend"] == "cv"
    assert len(meta["blend_weight"]) == 1 and 0 <= meta["blend_weight"][0] <= 1
    assert len(meta["start_tv_weight"]) == 1
    paper = restore(y, None, prior=prior, device="cpu", window=None, start="noise", blend="none")
    assert paper.metadata["steps"] == 20 and paper.metadata["start"] == {"kind": "noise", "blend": "none"}
    assert "blend_weight" not in paper.metadata
    # the blended restore is no worse than the TV start or the paper's start on this smooth clip
    err = lambda r: float(np.mean((r.restored - truth) ** 2))  # noqa: E731
    assert err(result) < 0.5 * 8**2 and math.isfinite(err(paper))
    with pytest.raises(ValueError, match="start must be one of"):
        restore(y, None, prior=prior, device="cpu", start="warm")


def test_cli_flag_defaults_match_the_library():
    import argparse

    from napari_svi.cli_flags import add_sampler_flags

    p = argparse.ArgumentParser()
    add_sampler_flags(p)
    args = p.parse_args([])
    assert (args.start, args.start_t, args.blend, args.steps) == ("tv", DEFAULT_START_T, "cv", None)


def test_measurement_start_interpolates_frames_no_measurement_reaches():
    from napari_svi.operators import OperatorSpec

    spec = OperatorSpec(temporal_subsample=2)
    op = spec.build((5, 1, 4, 4))
    truth = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1).expand(5, 1, 4, 4).contiguous()
    x = measurement_start(op.forward(truth), op)
    torch.testing.assert_close(x, truth)  # frames 1 and 3 are the means of their neighbours


def test_frames_without_data_are_restored_from_the_interpolated_measurement():
    from napari_svi.operators import OperatorSpec

    truth = _smooth_stack((5, 1, 16, 16))
    op = OperatorSpec(temporal_subsample=2).build(tuple(truth.shape))
    y = op.forward(truth) + 0.05 * torch.randn(op.out_shape, generator=torch.Generator().manual_seed(3))
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    solver = PieceSolver("tv", 200, "cv")
    x = [i["denoised"] for _, i in solver.solve(prior, y, op, 0.05, 1, lambda s: dict(steps=3)) if i["final"]][0]
    assert solver.tv_rules == ["sure"]
    interpolated = measurement_start(y, op)  # the noisy measurement, unseen frames linearly interpolated
    for k in (1, 3):  # frames without data: denoised, not a copy of the interpolated noise
        assert float((x[k] - truth[k]).square().mean()) < 0.5 * float((interpolated[k] - truth[k]).square().mean())
    assert float((x[0] - x[2]).abs().max()) > 0  # not a constant stack


def test_blend_weights_of_two_estimates_stay_in_the_simplex():
    shape = (3, 1, 16, 16)
    g = torch.Generator().manual_seed(4)
    base, a, b = (torch.rand(shape, generator=g) for _ in range(3))
    op, held = Identity(shape), torch.rand(shape, generator=g) < 0.4
    y = base + 0.2 * (a - base) + 0.5 * (b - base)
    assert blend_weights(y, op, held, base, [a, b]) == pytest.approx([0.2, 0.5], abs=1e-4)
    w = blend_weights(base + 1.5 * (a - base) + 1.5 * (b - base), op, held, base, [a, b])
    assert min(w) >= 0 and sum(w) <= 1 + 1e-9 and sum(w) == pytest.approx(1.0, abs=1e-6)


def test_holdout_rl_stops_where_the_held_out_entries_are_predicted_best_and_refuses_signed_operators():
    from napari_svi.classical import holdout_rl, richardson_lucy
    from napari_svi.operators.spatial import SpatialConvolution
    from napari_svi.psf import gaussian_psf

    truth = _smooth_stack()
    op = SpatialConvolution(gaussian_psf(1.5), truth.shape)
    sigma = 0.05
    y = op.forward(truth) + sigma * torch.randn(truth.shape, generator=torch.Generator().manual_seed(5))
    drawn = np.random.default_rng(1).random((truth.shape[0], *truth.shape[2:])) < 0.1
    fit = Mask(~drawn, tuple(op.out_shape)) @ op
    held = torch.from_numpy(drawn)[:, None].expand(op.out_shape)
    x, n = holdout_rl(y, fit, op, held, max_iter=200)
    assert 1 < n < 200  # the noise is fitted long before 200 iterations
    errors = {k: float((op.forward(richardson_lucy(fit.observed(y), fit, k))[held] - y[held]).square().sum())
              for k in (1, n, 200)}
    assert errors[n] <= min(errors[1], errors[200])
    assert torch.allclose(x, richardson_lucy(fit.observed(y), fit, n))
    signed = SpatialConvolution(np.array([[0.0, -0.5, 0.0], [-0.5, 3.0, -0.5], [0.0, -0.5, 0.0]]), truth.shape)
    assert holdout_rl(y, fit, signed, held) is None


def _tv_error_curve(y, op, truth, weights):
    from napari_svi.classical import tv_admm

    return {w: float((tv_admm(op.observed(y), op, w, 60) - truth).square().mean()) for w in weights}


def test_sure_tv_picks_a_weight_near_the_best_one_for_denoising():
    from napari_svi.classical import sure_tv, tv_admm

    truth = _smooth_stack()
    sigma = 0.08
    op = Identity(truth.shape)
    y = truth + sigma * torch.randn(truth.shape, generator=torch.Generator().manual_seed(4))
    x, weight = sure_tv(y, op, sigma)
    grid = [1e-3 * 1.5**k for k in range(12)]
    errors = _tv_error_curve(y, op, truth, grid)
    err = float((tv_admm(y, op, weight, 60, x0=x) - truth).square().mean())
    assert err <= 1.2 * min(errors.values())  # close to the best weight of the grid ...
    assert err < 0.7 * max(errors[grid[0]], errors[grid[-1]])  # ... and far from the worse end
    assert err < 0.5 * sigma**2


def test_holdout_tv_picks_a_weight_near_the_best_one_under_a_temporal_blur():
    from napari_svi.classical import holdout_tv, tv_admm
    from napari_svi.operators.temporal import TemporalOperator, temporal_matrix

    truth = _smooth_stack((8, 1, 24, 24))
    op = TemporalOperator(temporal_matrix(np.ones(5) / 5, 8, boundary="symmetric"), truth.shape)
    sigma = 0.03
    y = op.forward(truth) + sigma * torch.randn(op.out_shape, generator=torch.Generator().manual_seed(6))
    drawn = np.random.default_rng(1).random((8, 24, 24)) < 0.1
    fit = Mask(~drawn, tuple(op.out_shape)) @ op
    held = torch.from_numpy(drawn)[:, None].expand(op.out_shape)
    x, weight = holdout_tv(y, [(fit, held)], op)
    grid = [1e-4 * 1.5**k for k in range(16)]
    errors = _tv_error_curve(y, op, truth, grid)
    err = float((tv_admm(y, op, weight / 0.9, 60, x0=x) - truth).square().mean())
    assert err <= 1.5 * min(errors.values()) and err < 0.5 * max(errors[grid[0]], errors[grid[-1]])
    # three folds: the sweep on the first, then the best weight, its neighbours and their parabola on all
    draw = np.random.default_rng(2).random((8, 24, 24))
    folds = []
    for k in range(3):
        drawn = (draw >= 0.1 * k) & (draw < 0.1 * (k + 1))
        folds.append((Mask(~drawn, tuple(op.out_shape)) @ op, torch.from_numpy(drawn)[:, None].expand(op.out_shape)))
    x3, weight3 = holdout_tv(y, folds, op)
    assert x3.shape == truth.shape and 1e-4 <= weight3 <= 0.2
    err3 = float((tv_admm(y, op, weight3 / 0.9, 60, x0=x3) - truth).square().mean())
    assert err3 <= 1.5 * min(errors.values())


def test_tv_rule_follows_the_forward_model():
    from napari_svi import OperatorSpec
    from napari_svi.warm_start import tv_rule

    shape = (6, 1, 16, 16)
    assert tv_rule(OperatorSpec().build(shape)) == "sure"
    assert tv_rule(OperatorSpec(temporal_subsample=2).build(shape)) == "sure"
    assert tv_rule(OperatorSpec(temporal_psf="uniform:3").build(shape)) == "held-out"
    assert tv_rule(OperatorSpec(temporal_psf="uniform:3", downsample=2).build(shape)) == "held-out"
    assert tv_rule(OperatorSpec(temporal_psf="uniform:3", spatial_psf="gaussian:1.5").build(shape)) == "discrepancy"
    assert tv_rule(OperatorSpec(spatial_psf="gaussian:1").build(shape)) == "discrepancy"


def test_masked_pixels_start_from_their_neighbours_and_unseen_frames_are_interpolated():
    from napari_svi import OperatorSpec
    from napari_svi.classical import interpolated_problem

    shape = (1, 1, 12, 12)
    ramp = torch.arange(12, dtype=torch.float32).repeat(12, 1)[None, None]  # x = column index
    keep = np.ones((12, 12), bool)
    keep[4:8, 4:8] = False
    op = Mask(keep, shape)
    x = measurement_start(op.forward(ramp), op)
    hole = x[0, 0, 4:8, 4:8]
    assert torch.allclose(hole.mean(dim=0), ramp[0, 0, 0, 4:8], atol=1.0)  # the hole follows the ramp, not its mean
    assert float(hole[:, 0].mean()) < float(hole[:, -1].mean())
    truth = _smooth_stack((5, 1, 16, 16))
    spec_op = OperatorSpec(temporal_subsample=2).build(truth.shape)
    y = spec_op.forward(truth)
    start, pseudo = interpolated_problem(y, spec_op)
    assert pseudo.in_shape == truth.shape and bool(torch.as_tensor(pseudo.mask).all())  # every voxel holds a value
    assert torch.allclose(start[1], (truth[0] + truth[2]) / 2, atol=1e-6) and torch.allclose(start[2], truth[2])
