"""The sampler, tested for real with an analytic Gaussian prior whose exact eps is known."""

import math

import numpy as np
import pytest
import torch

from napari_svi.noise import auto_gamma, gamma_record
from napari_svi.operators.base import Identity
from napari_svi.operators.spatial import Mask
from napari_svi.operators.temporal import TemporalOperator, temporal_matrix
from napari_svi.priors.base import GaussianPrior
from napari_svi.sampler import (
    ResidualGamma,
    SamplingCancelled,
    _noise,
    operator_statistics,
    svi_sample,
    svi_steps,
)
from napari_svi.schedules import alphas_cumprod, partial_timesteps, sampling_timesteps


class RecordingPrior(GaussianPrior):
    """Gaussian prior that records every batch the sampler shows it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def predict_noise(self, x, t):
        self.seen.append(x.detach().clone())
        return super().predict_noise(x, t)


@pytest.fixture(params=["linear", "cosine"])
def abar(request):
    return alphas_cumprod(request.param)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_timesteps_of_the_paper():
    assert sampling_timesteps(20) == list(range(950, -1, -50))
    assert sampling_timesteps(1) == [0]
    assert len(sampling_timesteps(7)) == 7
    with pytest.raises(ValueError, match="steps"):
        sampling_timesteps(0)


def test_gaussian_prior_eps_is_exact():
    # E[x0 | x_t] of N(mu, s^2): check against Monte Carlo regression of x0 on x_t
    a = alphas_cumprod("linear")
    prior = GaussianPrior(0.3, 0.5, a)
    t = 400
    rng = torch.Generator().manual_seed(0)
    x0 = 0.3 + 0.5 * torch.randn(200000, generator=rng, dtype=torch.float64)
    eps = torch.randn(200000, generator=rng, dtype=torch.float64)
    xt = a[t].sqrt() * x0 + (1 - a[t]).sqrt() * eps
    pred = prior.predict_noise(xt.reshape(-1, 1, 1, 1), torch.full((200000,), t)).reshape(-1)
    # the optimal predictor minimises the MSE: its error equals the posterior variance of eps
    mse = float(((pred - eps) ** 2).mean())
    post_var = 1 - (1 - a[t]) / (a[t] * 0.25 + 1 - a[t])
    assert mse == pytest.approx(float(post_var), rel=0.02)


@pytest.mark.parametrize("consistent", [True, False])
def test_start_and_step_noise_shared_across_frames(consistent):
    z = _noise((5, 1, 4, 4), consistent, _gen(), "cpu", torch.float32)
    same = all(torch.equal(z[0], z[k]) for k in range(5))
    assert same is consistent
    # behaviour: without data (no CG), identical noise keeps every frame on one sampling path
    prior = RecordingPrior(0.0, 0.5, alphas_cumprod("linear"))
    y = torch.zeros(5, 1, 4, 4)
    out = svi_sample(prior, y, Identity((5, 1, 4, 4)), steps=6, eta=0.8, cg_steps=0, batch_consistent=consistent, generator=_gen())
    for x in prior.seen:  # x_T and every re-noised state
        assert all(torch.equal(x[0], x[k]) for k in range(5)) is consistent
    assert all(torch.equal(out[0], out[k]) for k in range(5)) is consistent


def test_seeded_and_deterministic(abar):
    prior = GaussianPrior(0.0, 0.5, abar)
    y = torch.rand(4, 1, 6, 6)
    op = Identity(y.shape)
    a = svi_sample(prior, y, op, steps=5, generator=_gen(3), gamma=5.0)
    b = svi_sample(prior, y, op, steps=5, generator=_gen(3), gamma=5.0)
    c = svi_sample(prior, y, op, steps=5, generator=_gen(4), gamma=5.0)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_noiseless_invertible_blur_is_inverted():
    # [0.25, 0.5, 0.25] circular over 5 frames is invertible: the posterior is a point, A^-1 y
    t, h, w = 5, 4, 4
    m = temporal_matrix(np.array([0.25, 0.5, 0.25]), t, "circular")
    op = TemporalOperator(m, (t, 1, h, w))
    rng = np.random.default_rng(0)
    x_true = torch.from_numpy(rng.uniform(0.2, 0.8, size=(t, 1, h, w))).float()
    y = op.forward(x_true)
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    x = svi_sample(prior, y, op, steps=20, cg_steps=5, generator=_gen())
    assert float((x - x_true).abs().max()) < 2e-3


def test_inpainting_samples_the_gaussian_posterior():
    # Noiseless inpainting with an independent Gaussian prior: observed pixels are known exactly,
    # missing ones follow the prior N(0.5, 0.25^2) on the [0, 1] scale. Mean and spread of the
    # samples must match that posterior.
    t, h, w = 3, 8, 8
    abar = alphas_cumprod("linear")
    prior = GaussianPrior(0.0, 0.5, abar)  # [-1, 1] units: N(0, 0.5^2) == [0, 1] units: N(0.5, 0.25^2)
    mask = np.zeros((h, w), dtype=bool)
    mask[::2] = True
    op = Mask(mask, (t, 1, h, w))
    y = op.forward(torch.full((t, 1, h, w), 0.9))
    draws = torch.stack([
        svi_sample(prior, y, op, steps=20, eta=0.15, cg_steps=5, generator=_gen(s)) for s in range(48)
    ])
    observed = draws[..., torch.from_numpy(mask)]
    missing = draws[:, 0, 0][..., ~torch.from_numpy(mask)]  # frames are identical here (shared noise)
    assert float((observed - 0.9).abs().max()) < 1e-4
    n = missing.numel()
    assert float(missing.mean()) == pytest.approx(0.5, abs=4 * 0.25 / math.sqrt(n))
    assert float(missing.std()) == pytest.approx(0.25, rel=0.15)


def test_noisy_form_pulls_towards_data_by_gamma():
    # denoising (A = I): one proximal step has the closed form (x0 + gamma y) / (1 + gamma)
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    y = torch.full((2, 1, 4, 4), 0.8)
    op = Identity(y.shape)
    strong = svi_sample(prior, y, op, steps=10, gamma=1000.0, generator=_gen())
    weak = svi_sample(prior, y, op, steps=10, gamma=0.01, generator=_gen())
    assert float((strong - 0.8).abs().max()) < 0.01
    assert float((weak - 0.8).abs().mean()) > float((strong - 0.8).abs().mean())


def test_callback_progress_and_cancel():
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    y = torch.rand(2, 1, 4, 4)
    op = Identity(y.shape)
    seen = []
    svi_sample(prior, y, op, steps=4, gamma=2.0, callback=lambda d: seen.append((d["i"], d["t"], d["denoised"].shape)))
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    assert seen[-1][1] == 0 and seen[0][2] == (2, 1, 4, 4)
    with pytest.raises(SamplingCancelled):
        svi_sample(prior, y, op, steps=10, gamma=2.0, callback=lambda d: d["i"] == 2)
    assert len(list(svi_steps(prior, y, op, steps=3, gamma=2.0))) == 3


def test_residual_gamma_rule():
    rule = ResidualGamma(0.01)
    m = 1000.0
    assert rule(5 * m * 0.01**2, m, m) == pytest.approx(4.0)  # (||r||^2 - m sigma^2) / (sigma^2 tr)
    assert rule(5 * m * 0.01**2, m, m / 7) == pytest.approx(28.0)  # a box of 7 hides 6/7 of white error
    assert rule(m * 0.01**2, m, m) == rule.low == 0.05  # residual at the noise level: trust the prior, never switch data off
    assert rule(0.5 * m, m, m) == rule.high == 1000.0
    assert ResidualGamma(0.01, scale=2.0)(5e-4 * m, m, m) == pytest.approx(8.0)
    assert rule(1e-3 * m, m, m) > ResidualGamma(0.02)(1e-3 * m, m, m)  # less noise, more trust in the data
    with pytest.raises(ValueError, match="noise_sigma"):
        ResidualGamma(0.0)
    assert math.isinf(auto_gamma(0.0)) and math.isinf(auto_gamma(None))
    assert auto_gamma(0.02) == ResidualGamma(0.02)
    assert gamma_record(auto_gamma(0.02))["rule"] == "residual"
    assert gamma_record(math.inf) == "inf" and gamma_record(3) == 3.0


def test_operator_statistics_count_measurements_and_estimate_the_trace():
    shape = (16, 1, 8, 8)
    box = TemporalOperator(temporal_matrix(np.ones(7) / 7, 16, "circular"), shape)
    m, tr = operator_statistics(box, "cpu")
    assert m == 16 * 64 and tr == pytest.approx(m / 7, rel=0.05)  # each measurement: 7 weights of 1/7
    mask = torch.ones((16, 8, 8))
    mask[:, :4] = 0
    m, tr = operator_statistics(Mask(mask, shape), "cpu")
    assert m == 8 * 64 and tr == pytest.approx(m)  # masked entries are not measurements


def test_residual_gamma_is_the_map_weight_for_a_gaussian_prior():
    """Gaussian prior of std s0 (on [-1, 1]) and y = x + noise: at the first step the denoised
    estimate is about the prior mean, its error variance (s0/2)^2 on [0, 1], so the rule must give
    the MAP weight (s0/2)^2 / sigma^2; later estimates are better, so gamma falls."""
    s0, sigma = 0.4, 0.02
    prior = GaussianPrior(0.0, s0, alphas_cumprod("linear"))
    g = torch.Generator().manual_seed(0)
    x = 0.5 + s0 / 2 * torch.randn((8, 1, 32, 32), generator=g)
    y = x + sigma * torch.randn(x.shape, generator=g)
    gammas = [d["gamma"] for d in svi_steps(prior, y, Identity(x.shape), steps=10, gamma=ResidualGamma(sigma),
                                            generator=_gen())]
    assert gammas[0] == pytest.approx((s0 / 2) ** 2 / sigma**2, rel=0.1)
    assert gammas[-1] < gammas[0] / 5
    assert all(0.05 <= v <= 1000 for v in gammas)


def test_bad_settings():
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    y = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="eta"):
        svi_sample(prior, y, Identity(y.shape), eta=1.5)
    with pytest.raises(ValueError, match="cg_steps"):
        svi_sample(prior, y, Identity(y.shape), cg_steps=-1)


def test_noise_hook_replaces_the_generator():
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    y = torch.rand(3, 1, 4, 4)
    op = Identity(y.shape)
    fields = [torch.randn(1, 1, 4, 4, generator=_gen(k)) for k in range(5)]
    a = svi_sample(prior, y, op, steps=4, gamma=3.0, noise=lambda k: fields[k])
    b = svi_sample(prior, y, op, steps=4, gamma=3.0, noise=lambda k: fields[k], generator=_gen(99))
    c = svi_sample(prior, y, op, steps=4, gamma=3.0, noise=lambda k: fields[k] * 0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_frames_without_data_are_interpolated_from_measured_neighbours():
    # frame interpolation: every second frame measured, no temporal blur. CG alone never touches
    # the missing frames; the fill step pulls them towards the linear interpolation.
    from napari_svi.sampler import unseen_frames

    t, h, w = 5, 4, 4
    op = TemporalOperator(temporal_matrix(np.array([1.0]), t, "symmetric", subsample=2), (t, 1, h, w))
    assert unseen_frames(op).tolist() == [False, True, False, True, False]
    ramp = torch.linspace(0.2, 0.8, t, dtype=torch.float32).reshape(t, 1, 1, 1).expand(t, 1, h, w)
    y = op.forward(ramp.contiguous())
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    x = svi_sample(prior, y, op, steps=20, generator=_gen())
    without = svi_sample(prior, y, op, steps=20, generator=_gen(), fill_weight=0.0)
    err = float((x - ramp).abs()[1::2].mean())
    assert err < 0.05  # the prior's own share (1 / (1 + fill_weight)) is what remains
    assert err < 0.5 * float((without - ramp).abs()[1::2].mean())
    assert float((x - ramp).abs()[0::2].max()) < 1e-3  # measured frames match their data


def test_regions_overlap_by_half_sum_and_expand_smoothly():
    from napari_svi.sampler import Regions

    regions = Regions((2, 1, 40, 40), (2, 1, 20, 20), region=20)  # 2x downsampling: 10-px windows in y
    assert (regions.b, regions.rows, regions.cols) == (10, [0, 5, 10], [0, 5, 10])  # overlapping by half
    a = torch.ones(2, 1, 20, 20)
    assert torch.equal(regions.sums(a), torch.full((3, 3), 200.0, dtype=torch.float64))
    a[..., 12:, :] = 0.0  # rows 12-19 hold nothing: the windows starting at rows 0, 5 and 10 see 10, 7 and 2 rows
    assert torch.equal(regions.sums(a)[:, 0], torch.tensor([200.0, 140.0, 40.0], dtype=torch.float64))
    w = regions.expand(torch.tensor([[1.0, 10.0, 100.0]] * 3))
    assert w.shape == (1, 1, 20, 20)
    assert w[0, 0, 5, 0] == pytest.approx(1.0) and w[0, 0, 5, -1] == pytest.approx(100.0)
    assert torch.all(w[0, 0, 5, 1:] >= w[0, 0, 5, :-1] - 1e-4)  # no step at a window edge: monotone in between
    centre = regions.expand(torch.tensor([[1.0, 1.0, 1.0], [1.0, 100.0, 1.0], [1.0, 1.0, 1.0]]))
    assert float(centre[0, 0, 10, 10]) > 50.0 and float(centre[0, 0, 0, 0]) == pytest.approx(1.0)  # a centre window of its own
    single = Regions((1, 1, 30, 30), (1, 1, 30, 30), region=64)  # smaller than one window: one gamma
    assert (single.nr, single.nc) == (1, 1) and float(single.sums(torch.ones(1, 1, 30, 30))) == 900.0


def test_regional_gamma_weighs_the_worse_half_more():
    from napari_svi.noise import ResidualGamma
    from napari_svi.operators import OperatorSpec
    from napari_svi.sampler import Regions, regional_statistics

    op = OperatorSpec(spatial_psf="gaussian:1").build((4, 1, 32, 64))
    regions = Regions(op.in_shape, op.out_shape, region=32)
    measured, trace = regional_statistics(op, regions, "cpu")
    assert measured.shape == (1, 3) and torch.allclose(measured, torch.full((1, 3), 4 * 32 * 32.0, dtype=torch.float64))
    residual = torch.zeros(op.out_shape)
    residual[..., :32] = 0.1  # the left half of the estimate is far off, the right half fits
    residual[..., 32:] = 0.01
    g = ResidualGamma(0.01, region=32).regional(regions.sums(residual.square()), measured, trace)
    assert g[0, 0] > 10 * g[0, 2]  # the middle window (columns 16-47) sees half of each


def test_relative_variance_follows_the_brightness_under_poisson_noise():
    from napari_svi.noise import relative_variance

    rng = np.random.default_rng(0)
    clean = np.broadcast_to(np.linspace(0.05, 0.85, 64), (4, 1, 64, 64))  # brightness ramps across the columns
    y = torch.as_tensor(rng.poisson(clean * 200) / 200.0)  # Poisson: variance proportional to brightness
    seen = torch.ones(y.shape, dtype=torch.bool)
    seen[0, 0, :8] = False  # unmeasured entries carry no noise
    rel = relative_variance(y, seen)
    assert float(rel[seen].mean()) == pytest.approx(1.0) and float(rel[~seen].abs().max()) == 0.0
    ratio = float(rel[..., 56:].mean() / rel[..., :8].mean())
    truth = float(clean[0, 0, 0, 56:].mean() / clean[0, 0, 0, :8].mean())  # 9.7
    assert 0.7 * truth < ratio < 1.3 * truth
    flat = relative_variance(torch.as_tensor(rng.normal(0.05, 0.01, (4, 1, 64, 64)) + clean), torch.ones(4, 1, 64, 64, dtype=torch.bool))
    assert float(flat.max()) < 1.3 and float(flat.min()) > 0.7  # Gaussian noise on the same ramp: about the same everywhere


def test_regional_gamma_reads_poisson_noise_in_bright_regions_as_noise():
    from napari_svi.noise import ResidualGamma, relative_variance
    from napari_svi.sampler import Regions, regional_statistics

    rng = np.random.default_rng(1)
    clean = np.full((4, 1, 32, 64), 0.05)
    clean[..., 32:] = 0.85  # the right half is bright
    y = torch.as_tensor(rng.poisson(clean * 200) / 200.0, dtype=torch.float32)
    op = Identity(tuple(y.shape))
    regions = Regions(op.in_shape, op.out_shape, region=32)
    measured, trace = regional_statistics(op, regions, "cpu")
    residual = regions.sums((y - torch.as_tensor(clean, dtype=torch.float32)).square())  # a perfect denoiser: noise only
    sigma = float((y - torch.as_tensor(clean)).square().mean().sqrt())  # the stack's RMS noise
    rule = ResidualGamma(sigma, region=32)
    share = regions.sums(relative_variance(y, torch.ones(y.shape, dtype=torch.bool)))
    assert float(rule.regional(residual, measured, trace)[0, 2]) > 10 * rule.low  # one sigma: the bright half looks badly denoised
    assert float(rule.regional(residual, measured, trace, share).max()) < 5 * rule.low  # its own noise: no error left to weigh


def test_partial_timesteps_run_from_the_warm_start_to_zero():
    assert partial_timesteps(5, 200) == [200, 150, 100, 50, 0]
    assert partial_timesteps(1, 300) == [300]
    assert partial_timesteps(10, 3) == [3, 2, 1, 0]  # no timestep twice
    for bad in (-1, 1000, 2.0):
        with pytest.raises(ValueError, match="start"):
            partial_timesteps(5, bad)


def test_warm_start_is_diffused_from_the_start_and_takes_the_given_steps():
    a = alphas_cumprod("linear")
    prior = RecordingPrior(0.0, 0.5, a)
    shape = (3, 1, 4, 4)
    start = torch.full(shape, 0.8)
    infos = list(svi_steps(prior, torch.zeros(shape), Identity(shape), steps=4, eta=0.0, cg_steps=0,
                           start=start, start_t=300, generator=_gen()))
    assert [i["t"] for i in infos] == [300, 200, 100, 0] and infos[-1]["steps"] == 4
    # the first state the network sees is the start diffused to t = 300 with the first noise draw
    z = _noise(shape, True, _gen(), "cpu", torch.float32)
    expected = math.sqrt(float(a[300])) * (2 * start - 1) + math.sqrt(1 - float(a[300])) * z
    assert torch.allclose(prior.seen[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="start and start_t"):
        next(svi_steps(prior, torch.zeros(shape), Identity(shape), steps=4, start=start))
    with pytest.raises(ValueError, match="input shape"):
        next(svi_steps(prior, torch.zeros(shape), Identity(shape), steps=4, start=start[:2], start_t=300))


def test_a_warm_start_near_the_truth_beats_a_cold_start_in_few_steps():
    # noisy inpainting of a Gaussian-prior stack: from a start close to the truth, 3 steps from
    # t = 100 land nearer the truth than 3 steps from pure noise
    a = alphas_cumprod("linear")
    prior = GaussianPrior(0.0, 0.5, a)  # on the [-1, 1] scale: mean 0.5, sd 0.25 on [0, 1]
    shape = (4, 1, 8, 8)
    truth = 0.5 + 0.25 * torch.randn(shape, generator=_gen(3))
    keep = (torch.rand(8, 8, generator=_gen(4)) > 0.5).numpy()
    op = Mask(keep, shape)
    y = op.forward(truth)
    near = truth + 0.02 * torch.randn(shape, generator=_gen(5))
    cold = svi_sample(prior, y, op, steps=3, eta=0.0, generator=_gen())
    warm = svi_sample(prior, y, op, steps=3, eta=0.0, start=near, start_t=100, generator=_gen())
    assert float((warm - truth).square().mean()) < 0.5 * float((cold - truth).square().mean())
