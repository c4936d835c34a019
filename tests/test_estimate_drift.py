"""The rigid-drift model of the blind temporal estimate: the fit, the Gaussian refinement and the gate."""

import math

import numpy as np
import pytest
from scipy import ndimage

from napari_svi.benchmark.suite import drift_path, pseudo_timelapse
from napari_svi.estimate import DEFAULT_RULES, decide, estimate_blur
from napari_svi.estimate_drift import best_gaussian, fit_motion, motion_candidates, motion_choice, register_chain
from napari_svi.operators.temporal import temporal_matrix
from napari_svi.psf import temporal_kernel

FRAMES, CROP, NOISE = 16, 48, 0.01


def drifting(temporal: str | None, frames: int = FRAMES, seed: int = 0) -> np.ndarray:
    """A textured still drifting along the suite's path, blurred in time by ``temporal``, with noise, on [0, 1]."""
    rng = np.random.default_rng(seed)
    still = ndimage.gaussian_filter(rng.standard_normal((112, 112)), 1.5)
    still = (still - still.min()) / np.ptp(still)
    truth = pseudo_timelapse(still, frames, CROP).astype(np.float64)
    if temporal is not None:
        truth = np.tensordot(temporal_matrix(temporal_kernel(temporal), frames, "symmetric"), truth, axes=1)
    return truth + NOISE * rng.standard_normal(truth.shape)


@pytest.mark.parametrize("temporal", ["uniform:5", "gaussian:1.5", "none"])
def test_the_true_path_makes_the_true_candidate_most_likely(temporal):
    y = drifting(None if temporal == "none" else temporal)
    fit = fit_motion(y, ["none", "uniform:3", "uniform:5", "gaussian:0.7", "gaussian:1.5"], NOISE,
                     path=drift_path(FRAMES))
    assert min(fit.nll, key=fit.nll.get) == temporal, fit.nll
    assert 0.8 < fit.residual_ratio < 1.3  # the model explains the data down to its noise
    assert fit.static_ratio > 3 * fit.residual_ratio  # which a still scene does not
    assert sorted(fit.nll.values())[1] > 5  # and the next candidate is far behind


def test_registration_follows_the_drift_within_a_pixel():
    path = register_chain(drifting(None))
    true = drift_path(FRAMES)
    assert np.abs((path - path.mean(0)) - (true - true.mean(0))).max() < 1.0


def test_the_blind_fit_finds_a_box_on_a_drifting_stack():
    fit = fit_motion(drifting("uniform:5"), motion_candidates(5), NOISE)
    assert min(fit.nll, key=fit.nll.get) == "uniform:5", fit.nll
    assert fit.drift_px > 3


def test_a_still_stack_is_not_fitted():
    rng = np.random.default_rng(1)
    still = ndimage.gaussian_filter(rng.standard_normal((CROP, CROP)), 1.5)
    y = np.repeat(still[None], FRAMES, axis=0) + NOISE * rng.standard_normal((FRAMES, CROP, CROP))
    assert fit_motion(y, motion_candidates(None), NOISE) is None


def test_best_gaussian_refines_between_grid_points():
    nll = {f"gaussian:{s}": 40 * (math.log(s) - math.log(1.2)) ** 2 for s in (0.5, 0.7, 1.0, 1.4, 2.0)}
    sigma, value = best_gaussian({"none": 30.0, **nll})
    assert sigma == pytest.approx(1.2, rel=0.02) and value == pytest.approx(0.0, abs=1e-6)
    edge = {"gaussian:0.5": 0.0, "gaussian:0.7": 3.0, "gaussian:1": 9.0}
    assert best_gaussian(edge) == (0.5, 0.0)  # at the end of the grid: no extrapolation


def test_the_gate_needs_a_decisive_margin_and_a_residual_near_the_noise():
    motion = {"nll": {"none": 25.0, "uniform:4": 12.0, "gaussian:1": 0.0, "gaussian:1.4": 6.0, "gaussian:0.7": 6.0},
              "residual_ratio": 1.0, "static_ratio": 4.0, "drift_px": 5.0, "seconds": 1.0}
    spec, margin, interval = motion_choice(motion, 2.0, 1.5)
    assert spec.startswith("gaussian:") and 0.9 < float(spec.split(":")[1]) < 1.1 and margin == pytest.approx(12.0, abs=0.1)
    assert interval[0] <= 1 <= interval[1]
    assert motion_choice(motion, 13.0, 1.5) is None  # the box is only 12 behind
    assert motion_choice({**motion, "residual_ratio": 2.0}, 2.0, 1.5) is None  # not a rigid drift
    assert motion_choice(None, 2.0, 1.5) is None
    assert motion_choice(motion, 2.0, 1.5, gain_min=2.0) is not None
    assert motion_choice({**motion, "static_ratio": 1.5}, 2.0, 1.5, gain_min=2.0) is None  # frames barely change


def test_decide_takes_the_drift_models_answer_only_through_the_gate():
    est = estimate_blur(drifting("uniform:5", frames=24), motion=False)
    assert "motion" not in est.scores
    scores = {**est.scores, "motion": {"nll": {"none": 40.0, "uniform:5": 30.0, "gaussian:1.4": 0.0,
                                               "gaussian:1": 8.0, "gaussian:2": 8.0},
                                       "residual_ratio": 1.0, "static_ratio": 5.0, "drift_px": 6.0,
                                       "seconds": 1.0}}
    temporal, _, conf = decide(scores, DEFAULT_RULES)
    assert temporal.startswith("gaussian:") and conf["temporal_psf"]["method"] == "drift model"
    sigma, (lo, hi) = float(temporal.split(":")[1]), conf["temporal_psf"]["interval"]
    f = DEFAULT_RULES.motion_interval_factor  # a plausible range, not the single value of the likelihood margin
    assert lo == pytest.approx(sigma / f, abs=1e-3) and hi == pytest.approx(sigma * f, abs=1e-3) and lo < sigma < hi
    assert conf["temporal_psf"]["alternative"] == decide(est.scores, DEFAULT_RULES)[0]
    box = {**scores, "motion": {**scores["motion"], "nll": {**scores["motion"]["nll"], "uniform:5": -20.0}}}
    box_spec, _, box_conf = decide(box, DEFAULT_RULES)
    assert box_spec == "uniform:5" and box_conf["temporal_psf"]["interval"] == [4.0, 6.0]
    for key, value in (("residual_ratio", 5.0), ("static_ratio", 1.2)):  # no rigid drift, or a still scene
        temporal, _, conf = decide({**scores, "motion": {**scores["motion"], key: value}}, DEFAULT_RULES)
        assert temporal == decide(est.scores, DEFAULT_RULES)[0] and conf["temporal_psf"]["method"] == "spectrum"


@pytest.mark.slow
@pytest.mark.parametrize("clip, temporal, expected", [
    ("actin", None, lambda kind, v: kind == "none"),  # the spectrum alone: gaussian:0.65
    ("walls", "gaussian:1", lambda kind, v: kind == "gaussian" and abs(v - 1) <= 0.25),  # spectrum: uniform:3
])
def test_the_drift_model_answers_on_held_out_drifting_clips(clip, temporal, expected):
    from estimate_cases import measured
    from napari_svi.benchmark.suite import load_clip

    est = estimate_blur(measured(load_clip(clip, 24, 96)[0], temporal))
    kind, _, value = est.temporal_psf.partition(":")
    assert expected(kind, float(value or 0)), est.temporal_psf
    assert est.confidence["temporal_psf"]["method"] == "drift model"
    assert est.scores["motion"]["static_ratio"] > 2 * est.scores["motion"]["residual_ratio"]
