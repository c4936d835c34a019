"""The data-consistency check of a restoration: chi2 of the residual against the noise level."""

import numpy as np
import pytest
import torch

from napari_svi.consistency import CHI2_HIGH, CHI2_LOW, residual_chi2, verdict
from napari_svi.operators import OperatorSpec


def _problem(seed=0, sigma=0.02):
    rng = np.random.default_rng(seed)
    x = rng.random((8, 1, 24, 24)).astype(np.float32)
    op = OperatorSpec(temporal_psf="uniform:3", spatial_psf="gaussian:1").build((8, 1, 24, 24))
    y = op.forward(torch.from_numpy(x)).numpy() + rng.normal(0, sigma, op.out_shape).astype(np.float32)
    return x, op, y, sigma


def test_truth_is_consistent_and_the_measurement_noise_is_counted():
    x, op, y, sigma = _problem()
    chi2 = residual_chi2(y, op, x, sigma)
    assert chi2 == pytest.approx(1.0, abs=0.1)
    assert verdict(chi2)["consistent"] and "message" not in verdict(chi2)


def test_wrong_result_and_overfit_are_flagged():
    x, op, y, sigma = _problem()
    wrong = residual_chi2(y, op, np.zeros_like(x), sigma)
    assert wrong > CHI2_HIGH and not verdict(wrong)["consistent"] and "does not explain" in verdict(wrong)["message"]
    # a noise level set ten times too high makes the truth look like an over-fit
    overfit = residual_chi2(y, op, x, 10 * sigma)
    assert overfit < CHI2_LOW and "fits the noise" in verdict(overfit)["message"]


def test_only_observed_entries_count():
    x, op, y, sigma = _problem()
    y_bad = y.copy()
    observed = np.ones(op.out_shape, bool)
    observed[:, :, :12] = False
    y_bad[:, :, :12] = 1e3  # garbage where nothing is observed
    assert residual_chi2(y_bad, op, x, sigma, observed) == pytest.approx(residual_chi2(y, op, x, sigma, observed))
    with pytest.raises(ValueError, match="no observed"):
        residual_chi2(y, op, x, sigma, np.zeros(op.out_shape, bool))
    with pytest.raises(ValueError, match="noise_sigma01"):
        residual_chi2(y, op, x, 0.0)


def test_restore_records_the_check_and_flags_a_wrong_noise_level(real_clip):
    from napari_svi import restore
    from napari_svi.degrade import degrade
    from napari_svi.priors.base import GaussianPrior
    from napari_svi.schedules import alphas_cumprod

    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    spec = OperatorSpec(temporal_psf="uniform:3")
    y = degrade(real_clip.astype(np.float32), spec, noise_sigma=3.0, seed=0)
    good = restore(y, spec, prior=prior, noise_sigma=3.0, steps=4, device="cpu").metadata["consistency"]
    assert len(good) == 1 and good[0]["chi2"] > 0
    # claiming ten times less noise than there is: no estimate can match the data that closely
    wrong = restore(y, spec, prior=prior, noise_sigma=0.3, steps=4, device="cpu").metadata["consistency"][0]
    assert wrong["chi2"] > CHI2_HIGH and not wrong["consistent"] and "does not explain" in wrong["message"]
    noiseless = restore(y, spec, prior=prior, noise_sigma=None, steps=2, device="cpu").metadata["consistency"][0]
    assert noiseless["consistent"] is None


def test_cli_warns_when_the_result_does_not_explain_the_data(tmp_path, tiny_prior_dir, real_clip, capsys):
    import tifffile

    from napari_svi.cli import main
    from napari_svi.degrade import degrade

    y = degrade(real_clip.astype(np.float32), OperatorSpec(temporal_psf="uniform:3"), noise_sigma=3.0, seed=0)
    tifffile.imwrite(tmp_path / "m.tif", y)
    out = tmp_path / "r.tif"
    # claiming almost no noise: the residual is many times the stated level
    assert main(["restore", str(tmp_path / "m.tif"), "-o", str(out), "--temporal-psf", "uniform:3", "--noise-sigma",
                 "0.05", "--prior", str(tiny_prior_dir), "--steps", "2", "--quiet", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "warning (stack 0)" in err and "does not explain the measurement" in err
    from napari_svi.io import read_stack

    _, info = read_stack(out)
    assert info.metadata["consistency"][0]["consistent"] is False
