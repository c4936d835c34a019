"""The side-by-side speed run: alternation, ratios and report on reference callables; the worker process; git export."""

import json

import numpy as np
import pytest

from napari_svi.benchmark.metrics import psnr, truth_scale
from napari_svi.benchmark.reference import (
    ClipRun,
    compare,
    comparison_markdown,
    current_source,
    export_source,
    parse_options,
    repository_root,
    run_reference_comparison,
    source_folder,
    subprocess_runner,
)


def _truth(frames=8, size=16):
    rng = np.random.default_rng(0)
    return (rng.random((frames, size, size)) * 100 + 10).astype(np.float32)


def _runner(name, seconds, offset, calls, truth):
    times = iter(seconds)

    def run(y, spec):
        calls.append(name)
        return ClipRun(next(times), 100.0 if name == "reference" else 80.0, truth + offset, {"threads": 1})

    return run


def test_compare_alternates_and_reports_medians_and_ratios():
    truth = _truth()
    calls: list[str] = []
    runners = {"reference": _runner("reference", [2.0, 4.0, 3.0], 5.0, calls, truth),
               "current": _runner("current", [1.0, 1.0, 1.5], 2.0, calls, truth)}
    result = compare(runners, truth, truth, {}, repeats=3, progress=None)
    assert calls == ["reference", "current"] * 3  # A B A B A B: both codes see the same stretches of load
    ref, cur = result["summary"]["reference"], result["summary"]["current"]
    assert ref["seconds_median"] == 3.0 and cur["seconds_median"] == 1.0
    assert cur["frames_per_second"] == pytest.approx(8.0)
    ratio = result["ratio"]["current"]
    assert ratio["speedup_of_medians"] == pytest.approx(3.0)
    assert ratio["speedup_per_round"] == [2.0, 4.0, 2.0] and ratio["speedup_median_of_rounds"] == 2.0
    scale = truth_scale(truth)
    expected = psnr(scale.to_unit(truth), scale.to_unit(truth + 2.0)) - psnr(scale.to_unit(truth), scale.to_unit(truth + 5.0))
    assert ratio["psnr_difference_db"] == pytest.approx(expected, abs=2e-3) and expected > 0
    assert ratio["peak_mb_ratio"] == pytest.approx(0.8)
    text = comparison_markdown({**result, "machine": {"processor": "test CPU"}, "threads": 1, "repeats": 3})
    assert "3.00x faster" in text and "test CPU" in text and text.count("| current |") == 1 + 3


def test_peak_memory_is_compared_by_the_medians_of_the_rounds():
    """One noisy round does not decide the memory ratio: medians (and the largest, reported apart)."""
    truth = _truth()
    peaks = {"reference": iter([100.0, 300.0, 110.0]), "current": iter([120.0, 115.0, 400.0])}

    def runner(name):
        return lambda y, spec: ClipRun(1.0, next(peaks[name]), truth, {})

    result = compare({"reference": runner("reference"), "current": runner("current")}, truth, truth, {},
                     repeats=3, progress=None)
    assert result["summary"]["reference"]["peak_mb"] == 110.0 and result["summary"]["current"]["peak_mb"] == 120.0
    assert result["summary"]["current"]["peak_mb_max"] == 400.0
    ratio = result["ratio"]["current"]
    assert ratio["peak_mb_ratio"] == pytest.approx(120 / 110, abs=1e-3)
    assert ratio["peak_mb_ratio_of_max"] == pytest.approx(400 / 300, abs=1e-3)
    text = comparison_markdown({**result, "machine": {}, "threads": 1, "repeats": 3, "allocator": "mmap-1mb"})
    assert "| 120, 400 |" in text and "MALLOC_MMAP_THRESHOLD_" in text


def test_an_unknown_allocator_is_refused_before_any_run():
    with pytest.raises(ValueError, match="--allocator"):
        run_reference_comparison("HEAD", allocator="tcmalloc", progress=None)


def test_compare_rejects_a_result_of_the_wrong_shape():
    truth = _truth()

    def bad(y, spec):
        return ClipRun(1.0, 1.0, truth[:4], {})

    with pytest.raises(RuntimeError, match="restored shape"):
        compare({"reference": bad}, truth, truth, {}, repeats=1, progress=None)


def test_parse_options_reads_json_values_and_names_the_flag():
    assert parse_options(["steps=10", "eta=auto", "noise_sigma=null", "gamma=2.5"], "--x") == {
        "steps": 10, "eta": "auto", "noise_sigma": None, "gamma": 2.5}
    with pytest.raises(ValueError, match="--current-option"):
        parse_options(["steps"], "--current-option")


def test_worker_restores_with_the_code_of_a_source_folder(tiny_prior, real_clip):
    """The subprocess runner on a tiny clip with the current code (the release is run the same way)."""
    y = real_clip[:8, :16, :16].astype(np.float32)
    run = subprocess_runner(current_source(), threads=1, options={"steps": 1, "prior": str(tiny_prior)},
                            extra_env={"MALLOC_MMAP_THRESHOLD_": "1048576"})
    out = run(y, {"temporal_psf": "uniform:3"})
    assert out.restored.shape == y.shape and out.restored.dtype == np.float32 and np.isfinite(out.restored).all()
    assert out.seconds > 0 and out.peak_mb >= 0 and out.info["threads"] == 1
    assert out.info["file"].startswith(str(current_source()))
    with pytest.raises(RuntimeError, match="failed"):
        subprocess_runner(current_source(), threads=1, options={"steps": 0, "prior": str(tiny_prior)})(y, {})


def test_reference_from_git_and_from_folders(tmp_path):
    repo = repository_root()
    assert repo is not None and (repo / "src" / "napari_svi").is_dir()  # the tests run from the repository
    (tmp_path / "head").mkdir()
    src = export_source("HEAD", tmp_path / "head", repo)
    assert (src / "napari_svi" / "restore.py").is_file()
    assert source_folder(str(src), tmp_path)[0] == src and source_folder(str(src.parent), tmp_path)[0] == src
    with pytest.raises(ValueError, match="not a revision"):
        export_source("no-such-revision-13", tmp_path, repo)
    with pytest.raises(ValueError, match="no napari_svi package"):
        source_folder(str(tmp_path / "head" / "src" / "napari_svi" / "operators"), tmp_path)


def test_cli_side_by_side_tiny(tiny_prior, tmp_path):
    from napari_svi.cli import main

    opts = ["steps=1", f"prior={json.dumps(str(tiny_prior))}"]
    code = main(["benchmark", "speed", "-o", str(tmp_path), "--reference", str(current_source()), "--threads", "1",
                 "--clip-frames", "8", "--clip-size", "32", "--repeats", "1", "--no-sweep",
                 "--current-option", *opts, "--reference-option", *opts, "--prior", str(tiny_prior)])
    assert code == 0
    result = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["name"] for r in result["runs"]] == ["reference", "current"]
    assert result["shape"] == [8, 32, 32] and result["options"]["current"]["steps"] == 1
    assert result["ratio"]["current"]["psnr_difference_db"] == 0.0  # the same code, the same seed
    assert "cpu_cores_usable" in result["machine"] and "x faster" in (tmp_path / "comparison.md").read_text()
    assert not (tmp_path / "speed.json").exists()  # --no-sweep


def test_cli_rejects_a_bad_option_before_any_work(tmp_path):
    from napari_svi.cli import main

    assert main(["benchmark", "speed", "-o", str(tmp_path), "--current-option", "steps", "--no-sweep"]) != 0
    assert not (tmp_path / "comparison.json").exists()
