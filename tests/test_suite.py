"""The realistic quality suite: clips, the short-stack and photon-level tasks, CG + TV, the summary."""

import json

import numpy as np
import pytest

from napari_svi.benchmark.quality import QualitySettings, run_quality
from napari_svi.benchmark.suite import (
    SUITE_CLIPS,
    SUITE_TASKS,
    default_data_dir,
    drift_path,
    load_clip,
    pseudo_timelapse,
    summarise,
)
from napari_svi.cli import main


def test_drift_path_is_smooth_and_moves():
    path = drift_path(12)
    assert path.shape == (12, 2) and np.allclose(path[0], 0)
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert 0.2 < steps.min() and steps.max() < 1.5  # sub-pixel to about a pixel per frame: blur, not jumps


def test_pseudo_timelapse_follows_the_drift():
    rng = np.random.default_rng(0)
    still = np.zeros((80, 80), np.float32)
    still[40, 40] = 1.0
    from scipy import ndimage

    still = ndimage.gaussian_filter(still, 2.0) + 0.01 * rng.random((80, 80), dtype=np.float32)
    clip = pseudo_timelapse(still, 6, 48)
    assert clip.shape == (6, 48, 48) and clip.dtype == np.float32
    peaks = np.array([np.unravel_index(np.argmax(f), f.shape) for f in clip])
    # the structure moves against the camera path: its peak follows -path, rounded to pixels
    expect = np.array([24, 24]) - np.round(drift_path(6))
    assert np.abs(peaks - expect).max() <= 1
    with pytest.raises(ValueError, match="needs a still of at least"):
        pseudo_timelapse(still, 6, 78)


def test_every_suite_clip_loads_from_the_shipped_crops():
    assert {f for f, _ in SUITE_CLIPS.values() if f} <= {p.name for p in default_data_dir().iterdir()}
    for name in SUITE_CLIPS:
        truth, record = load_clip(name, 8, 64)
        assert truth.shape == (8, 64, 64) and np.isfinite(truth).all() and truth.std() > 0
        assert record["clip"] == name and record["structure"]
    with pytest.raises(ValueError, match="unknown suite clip"):
        load_clip("nope", 8, 64)


def test_suite_tasks_cover_the_realistic_degradations():
    tasks = SUITE_TASKS.values()
    assert all(t.temporal_boundary == "symmetric" and t.noisy for t in tasks)
    assert {t.peak_photons for t in tasks} == {50, 300}
    assert any(t.spatial_psf and t.spatial_psf.startswith("airy") for t in tasks)
    assert any(t.spatial_psf and t.spatial_psf.startswith("gaussian") for t in tasks)
    assert {t.downsample for t in tasks} >= {2, 4} and any(t.missing_fraction for t in tasks)
    assert any(t.temporal_subsample == 2 for t in tasks) and any(t.frames and t.frames <= 12 for t in tasks)


def test_short_stack_task_and_cg_tv_run():
    truth, _ = load_clip("mito", 12, 48)
    result = run_quality(truth, None, tasks=("box3-short8", "box5-low"), methods=("measurement", "cg+tv"),
                         settings=QualitySettings(), progress=None, registry=SUITE_TASKS)
    by = {(r["task"], r["method"]): r for r in result.records}
    assert by[("box3-short8", "cg+tv")]["psnr"] > by[("box3-short8", "measurement")]["psnr"] + 1.0
    details = result.details["tasks"]
    assert details["box3-short8"]["measurement_shape"][0] == 8  # only the first 8 frames
    assert details["box5-low"]["noise"]["peak_photons"] == 50
    assert details["box5-low"]["methods"]["cg+tv"]["oracle"] == "tv_weight"


def test_summarise_finds_the_best_classical_method_and_the_losses():
    recs = [{"clip": c, "task": "t", "method": m, "psnr": p}
            for c, m, p in [("a", "measurement", 20), ("a", "tv-admm", 25), ("a", "richardson-lucy", 24), ("a", "svi", 19),
                            ("b", "measurement", 20), ("b", "tv-admm", 23), ("b", "richardson-lucy", 26), ("b", "svi", 27)]]
    (entry,) = summarise(recs)
    assert entry["best_classical"] == "richardson-lucy"  # mean 25 against 24
    assert entry["svi_minus_best"] == pytest.approx(-2.0)
    assert entry["clips_svi_below_best"] == ["a"] and entry["clips_svi_below_measurement"] == ["a"]


def test_cli_suite_classical_only(tmp_path, capsys):
    out = tmp_path / "suite"
    assert main(["benchmark", "suite", "-o", str(out), "--clips", "walls", "--tasks", "box5", "--methods",
                 "measurement", "cg+tv", "--frames", "8", "--crop", "48", "--threads", "1"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in data["records"]} == {"measurement", "cg+tv"}
    assert data["clips"]["walls"]["source"] == "maize_clsm_heldout.tif"
    assert "| box5 |" in (out / "results.md").read_text()


def test_cli_suite_svi_posterior_mean_of_samples(tmp_path, tiny_prior_dir, capsys):
    assert main(["benchmark", "suite", "-o", str(tmp_path / "bad"), "--samples", "0", "--threads", "1"]) == 2
    assert "--samples must be >= 1, got 0" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    out = tmp_path / "suite"
    assert main(["benchmark", "suite", "-o", str(out), "--clips", "walls", "--tasks", "box5", "--methods", "svi",
                 "--frames", "8", "--crop", "32", "--threads", "1", "--prior", str(tiny_prior_dir),
                 "--samples", "2", "--steps", "2"]) == 0
    data = json.loads((out / "results.json").read_text())
    params = data["details"]["walls"]["box5"]["methods"]["svi"]
    assert params["samples"] == 2 and params["steps"] == 2
