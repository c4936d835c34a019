"""Benchmarks: metrics on known arrays, baselines on a tiny problem, report schema, the CLI end to end."""

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_svi.benchmark import baselines
from napari_svi.benchmark.measure import measure
from napari_svi.benchmark.metrics import psnr, ssim, stack_metrics, temporal_error, truth_scale
from napari_svi.benchmark.quality import METHODS, RECORD_KEYS, TASKS, QualitySettings, run_quality
from napari_svi.benchmark.report import check_records, write_quality_report
from napari_svi.operators import OperatorSpec

REPO = Path(__file__).resolve().parents[1]


def blobs(frames=12, size=32, seed=0):
    """Smooth synthetic time-lapse: Gaussian blobs drifting one pixel per frame, values in about [10, 200]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(6, size - 6, (4, 2))
    out = np.full((frames, size, size), 10.0)
    for t in range(frames):
        for cy, cx in centres:
            out[t] += 190 * np.exp(-((yy - cy - 0.5 * t) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
    return out.astype(np.float32)


# ---------------------------------------------------------------- metrics


def test_metrics_on_known_arrays():
    a = np.zeros((3, 16, 16))
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert psnr(a, a + 0.01) == pytest.approx(40.0)
    assert math.isinf(psnr(a, a))
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32))
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, rng.random((4, 32, 32))) < 0.1
    # a constant offset leaves frame-to-frame differences unchanged
    assert temporal_error(x, x + 0.3) == pytest.approx(0.0, abs=1e-12)
    # flicker +-d on alternate frames: every difference is off by 2d
    flicker = x + 0.05 * (-1.0) ** np.arange(4)[:, None, None]
    assert temporal_error(x, flicker) == pytest.approx(0.1)


def test_stack_metrics_use_the_truths_percentile_scale():
    truth = blobs() * 3 + 100  # other units: the scale follows the truth
    scale = truth_scale(truth)
    noisy = truth + 0.01 * scale.span * np.random.default_rng(1).standard_normal(truth.shape)
    m = stack_metrics(truth, noisy)
    assert set(m) == {"psnr", "ssim", "temporal_error"}
    assert m["psnr"] == pytest.approx(40.0, abs=0.1)
    with pytest.raises(ValueError, match="shape"):
        stack_metrics(truth, truth[:-1])


# ---------------------------------------------------------------- baselines


def test_gradient_adjoint():
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 6, 7, generator=rng, dtype=torch.float64)
    p = torch.randn(3, 5, 1, 6, 7, generator=rng, dtype=torch.float64)
    lhs = (baselines.gradient(x, 0.7) * p).sum()
    rhs = (x * baselines.gradient_adjoint(p, 0.7)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)


@pytest.mark.parametrize("shape", [(5, 1, 6, 7), (1, 1, 4, 3), (3, 2, 1, 5)])
@pytest.mark.parametrize("weight", [1.0, 0.7, 0.0])
def test_gradient_normal_is_the_adjoint_of_the_gradient_of_the_gradient(shape, weight):
    from napari_svi.classical import gradient_normal

    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = baselines.gradient_adjoint(baselines.gradient(x, weight), weight)
    torch.testing.assert_close(gradient_normal(x, weight), expected, rtol=0, atol=1e-12)
    assert float((x * gradient_normal(x, weight)).sum()) >= 0  # D^T D is positive semi-definite


def test_measurement_estimate_interpolates_time_and_space():
    truth = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 8, 8), np.float32)
    spec = OperatorSpec(temporal_subsample=2)
    est = baselines.measurement_estimate(truth[::2], spec, truth.shape)
    np.testing.assert_allclose(est, truth)  # linear in time: exact
    spec = OperatorSpec(downsample=2)
    est = baselines.measurement_estimate(np.ones((2, 4, 4)), spec, (2, 8, 8))
    assert est.shape == (2, 8, 8) and est.dtype == np.float32
    np.testing.assert_allclose(est, 1.0)


def test_log_search_finds_the_best_weight():
    best, score, tried = baselines.log_search(lambda v: -(math.log10(v) + 2.4) ** 2, 1.0, max_evals=10)
    assert best == pytest.approx(10**-2.5, rel=1e-6)
    assert len(tried) <= 12


@pytest.fixture(scope="module")
def classical_run():
    truth = blobs()
    settings = QualitySettings(rl_max_iter=60, tv_iter=30)
    return run_quality(truth, None, tasks=("temporal-box7",), methods=METHODS[:5], settings=settings, progress=None)


@pytest.mark.parametrize("method", ["cg", "cg-converged", "richardson-lucy", "tv-admm"])
def test_each_baseline_improves_on_the_measurement(classical_run, method):
    by = {r["method"]: r for r in classical_run.records}
    assert by[method]["psnr"] > by["measurement"]["psnr"] + 1.0
    assert by[method]["seconds"] >= 0 and by[method]["peak_mb"] >= 0
    params = classical_run.details["tasks"]["temporal-box7"]["methods"][method]
    if method in ("richardson-lucy", "tv-admm"):
        assert params["oracle"]  # the oracle choice is recorded


def test_richardson_lucy_is_skipped_where_frames_are_never_measured():
    result = run_quality(blobs(frames=6), None, tasks=("interp2",), methods=("measurement", "richardson-lucy"),
                         settings=QualitySettings(rl_max_iter=3), progress=None)
    assert [r["method"] for r in result.records] == ["measurement"]
    assert result.details["tasks"]["interp2"]["methods"]["richardson-lucy"] == {"applicable": False}


def test_measure_sees_torch_allocations():
    m = measure(lambda: torch.ones(10_000_000).sum())  # 40 MB that tracemalloc would not see
    assert m.peak_mb > 30
    assert m.seconds > 0


# ---------------------------------------------------------------- report


def test_task_and_method_names():
    assert list(TASKS) == ["temporal-box7", "temporal-box7-noisy", "temporal-gauss1", "temporal-box7+deblur2",
                           "temporal-box7+sr2", "temporal-box7+sr4", "temporal-box7+inpaint50", "interp2"]
    assert METHODS == ("measurement", "cg", "cg-converged", "richardson-lucy", "tv-admm", "cg+tv", "independent", "svi")


def test_report_files_and_schema(classical_run, tmp_path):
    written = write_quality_report(classical_run, tmp_path, header={"command": "test"})
    names = {p.name for p in written}
    assert {"results.json", "details.json", "results.md", "figure.png", "montage_temporal-box7.png"} <= names
    records = json.loads((tmp_path / "results.json").read_text())
    assert isinstance(records, list) and len(records) == 5
    for r in records:
        assert tuple(r) == RECORD_KEYS
        assert isinstance(r["psnr"], float) and isinstance(r["seconds"], float)
    check_records(records)
    md = (tmp_path / "results.md").read_text()
    assert "| task | measurement | cg | cg-converged | richardson-lucy | tv-admm |" in md
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="keys"):
        check_records([{**records[0], "extra": 1}])


# ---------------------------------------------------------------- CLI end to end with a tiny trained prior


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from napari_svi.priors.unet import UNetConfig
    from napari_svi.training import TrainConfig, train

    out = tmp_path_factory.mktemp("prior")
    config = TrainConfig(steps=2, batch_size=2, patch_size=16, warmup_steps=1, checkpoint_every=2,
                         unet=UNetConfig(base_channels=8, channel_mults=(1, 2)))
    return train([blobs(frames=4)], out, config)


def test_cli_quality_end_to_end(tiny_prior, tmp_path, capsys):
    from napari_svi.cli import main

    out = tmp_path / "report"
    code = main(["benchmark", "quality", "-o", str(out), "--frames", "8", "--crop", "32", "--tasks", "temporal-box7",
                 "interp2", "--steps", "2", "--prior", str(tiny_prior), "--device", "cpu", "--rl-max-iter", "5",
                 "--tv-iter", "3", "--max-pixels", "2048"])
    assert code == 0
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 2 * len(METHODS) - 1  # Richardson-Lucy does not apply to frame interpolation
    assert {r["method"] for r in records} == set(METHODS)
    details = json.loads((out / "details.json").read_text())
    assert details["data"]["shape"] == [8, 32, 32]
    assert details["prior"]["steps_done"] == 2 and details["prior"]["max_pixels_per_call"] == 2048
    assert (out / "figure.png").is_file() and (out / "montage_interp2.png").is_file()


def test_cli_speed_tiny(tiny_prior, tmp_path):
    from napari_svi.cli import main

    threads = torch.get_num_threads()
    try:
        code = main(["benchmark", "speed", "-o", str(tmp_path), "--prior", str(tiny_prior), "--device", "cpu",
                     "--frames", "2", "4", "--frames-size", "16", "--sizes", "16", "32", "--size-frames", "2",
                     "--steps", "1", "--tile-size", "16", "--threads", "1", "--reference", "none"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    result = json.loads((tmp_path / "speed.json").read_text())
    assert len(result["records"]) == 9
    assert result["records"][-1]["kind"] == "restore, 16 px tiles" and result["records"][-1]["size"] == 32
    assert {(f["kind"], f["unit"]) for f in result["fits"]} == {
        ("network", "frame"), ("restore", "frame"), ("network", "megapixel per frame"),
        ("restore", "megapixel per frame")}
    assert (tmp_path / "speed.png").is_file() and "Linear fits" in (tmp_path / "speed.md").read_text()


def test_gpu_check_dry_run_on_cpu(tiny_prior, tmp_path, capsys):
    from napari_svi.benchmark.gpu import main

    assert main(["--device", "cpu", "--dry-run", "--prior", str(tiny_prior), "--half", "bfloat16",
                 "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("GPU check"):].splitlines()
    assert any(line.startswith("bfloat16 vs float32 result") for line in table) and table[-1].startswith("(total")
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["agreement"]["tf32-on"]["relative_error"] == 0.0  # the CPU agrees with itself
    levers = result["levers"]
    assert not [name for name, rec in levers.items() if "error" in rec]
    batched = [rec for rec in levers.values() if rec.get("clips")]
    assert [rec["clips"] for rec in batched] == [2, 4] and [rec["frames"] for rec in batched] == [8, 16]
    # clips whose network calls share one batch get what one clip gets alone
    assert all(rec["max_abs_difference_from_float32"] < 1e-4 for rec in batched)
    assert (tmp_path / "profile.txt").read_text().count("aten::") >= 5


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")]).returncode == 0
