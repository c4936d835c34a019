"""Blind PSF estimation: the spectral model, recovery of known blurs, the command, ``auto`` in restore."""

import json

import numpy as np
import pytest
import tifffile
from scipy.fft import dct

from estimate_cases import measured
from napari_svi.cli import main
from napari_svi.estimate import estimate_blur, resolve_auto
from napari_svi.estimate_fit import spatial_gain2, temporal_mixing
from napari_svi.io import read_stack, write_stack
from napari_svi.operators import OperatorSpec
from napari_svi.operators.temporal import temporal_matrix
from napari_svi.psf import temporal_kernel
from napari_svi.psf_spec import parse_spatial_spec, parse_temporal_spec


@pytest.fixture(scope="module")
def nuclei24():
    """24 x 96 x 96 of the held-out nuclei time-lapse (real cell motion), float32."""
    from napari_svi.benchmark.suite import load_clip

    return load_clip("nuclei", 24, 96)[0]


def temporal_gain2(kernel, frames):
    """The analytic squared DCT-II gains of a temporal kernel (centre ``L // 2``) with mirrored ends: exact for
    odd kernels; an even box taken as centred between two frames (its magnitude response alone)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    offsets = np.arange(kernel.size) - kernel.size // 2 + (0.5 if kernel.size % 2 == 0 else 0.0)
    gain = np.cos(np.pi * np.arange(frames)[:, None] * offsets[None, :] / frames) @ kernel
    return gain * gain


@pytest.mark.parametrize("spec", ["uniform:3", "uniform:5", "gaussian:1.5"])
def test_dct_diagonalises_the_symmetric_temporal_blur(spec):
    """The model's premise: with mirrored ends the DCT-II of a blurred stack is the gain times the DCT of the stack."""
    x = np.random.default_rng(0).random((20, 7))
    kernel = temporal_kernel(spec)
    y = temporal_matrix(kernel, 20, "symmetric") @ x
    gain = np.sqrt(temporal_gain2(kernel, 20))
    np.testing.assert_allclose(np.abs(dct(y, type=2, axis=0, norm="ortho")),
                               np.abs(gain[:, None] * dct(x, type=2, axis=0, norm="ortho")), atol=1e-10)


@pytest.mark.parametrize("spec", ["uniform:3", "gaussian:1.5"])
def test_the_mixing_of_a_symmetric_blur_is_its_squared_gains(spec):
    kernel = temporal_kernel(spec)
    mixing = temporal_mixing(kernel, 20)
    np.testing.assert_allclose(mixing, np.diag(temporal_gain2(kernel, 20)), atol=1e-12)


def test_an_even_box_mixes_frequencies_as_the_forward_model_does():
    """An even box sits half a frame off the grid: its power leaks into neighbouring DCT frequencies (the
    magnitude response alone misses it), and ``M @ P`` is the expected power of the blurred stack."""
    frames, kernel = 16, temporal_kernel("uniform:4")
    mixing = temporal_mixing(kernel, frames)
    assert np.abs(mixing - np.diag(np.diag(mixing))).max() > 0.02
    power = 1.0 / (1.0 + np.arange(frames)) ** 1.5  # the truth's power per DCT frequency
    rng = np.random.default_rng(0)
    coeffs = rng.standard_normal((frames, 20000)) * np.sqrt(power)[:, None]  # independent coefficients
    x = dct(coeffs, type=3, axis=0, norm="ortho")  # the inverse of the orthonormal DCT-II
    y = temporal_matrix(kernel, frames, "symmetric") @ x
    measured = np.mean(dct(y, type=2, axis=0, norm="ortho") ** 2, axis=1)
    np.testing.assert_allclose(measured, mixing @ power, rtol=0.06, atol=2e-4)
    assert not np.allclose(measured, temporal_gain2(kernel, frames) * power, rtol=0.06, atol=2e-4)


def test_a_box_zeroes_its_frequency_and_gaussians_decay():
    g = np.diag(temporal_mixing(temporal_kernel("uniform:3"), 24))
    assert g[16] < 1e-20 and g[0] == pytest.approx(1.0)  # 16 / 48 = 1/3 cycle per frame
    assert spatial_gain2(2.0, np.array([0.0, 0.1, 0.3]))[0] == 1.0
    assert np.all(np.diff(spatial_gain2(2.0, np.linspace(0, 0.5, 9))) < 0)


@pytest.mark.slow
@pytest.mark.parametrize("temporal, check", [
    ("uniform:7", lambda kind, v: kind == "uniform" and abs(v - 7) <= 1),
    ("uniform:3", lambda kind, v: kind == "uniform" and abs(v - 3) <= 1),
    ("gaussian:1.5", lambda kind, v: kind == "gaussian" and abs(v - 1.5) <= 0.25 * 1.5),
    (None, lambda kind, v: kind == "none"),
])
def test_recovers_a_known_temporal_blur_on_held_out_nuclei(nuclei24, temporal, check):
    est = estimate_blur(measured(nuclei24, temporal))
    kind, _, value = est.temporal_psf.partition(":")
    assert check(kind, float(value or 0)), est.temporal_psf
    assert est.seconds < 60
    lo, hi = est.confidence["temporal_psf"]["interval"] or (0, 0)
    if kind != "none":
        assert lo <= float(value) <= hi


@pytest.mark.slow
@pytest.mark.parametrize("clip, spatial", [("walls", None), ("nuclei", "gaussian:1")])
def test_recovers_an_even_box_on_held_out_clips(clip, spatial):
    """Even boxes were lost when modelled by their magnitude response (uniform:6 was taken for gaussian:1.9
    on the walls, for none on the nuclei with a spatial blur)."""
    from napari_svi.benchmark.suite import load_clip

    truth = load_clip(clip, 24, 96)[0]
    est = estimate_blur(measured(truth, "uniform:6", spatial))
    assert est.temporal_psf.startswith("uniform:") and abs(int(est.temporal_psf.split(":")[1]) - 6) <= 1


@pytest.mark.slow
def test_recovers_a_spatial_gaussian_beyond_the_native_blur_on_a_held_out_still():
    from napari_svi.benchmark.suite import load_clip

    truth = load_clip("mito", 24, 96)[0]  # held-out mitochondria, drifting
    est = estimate_blur(measured(truth, "uniform:7", "gaussian:2"))
    assert est.spatial_psf.startswith("gaussian:") and abs(float(est.spatial_psf.split(":")[1]) - 2) <= 0.5
    lo, hi = est.confidence["spatial_psf"]["interval"]
    assert lo <= 2 <= hi
    assert estimate_blur(measured(truth, "uniform:7")).spatial_psf == "none"


@pytest.mark.slow
def test_noise_is_the_projects_estimate_in_data_units(nuclei24):
    from napari_svi.intensity import measurement_scale
    from napari_svi.noise import stack_noise_sigma

    y = measured(nuclei24, "uniform:5", noise=0.02)
    est = estimate_blur(y)
    scale = measurement_scale(y)
    assert est.noise_sigma == pytest.approx(stack_noise_sigma(y, scale, "auto") * scale.span, rel=1e-5)
    true = 0.02 * float(np.percentile(nuclei24, 99.9))
    assert 0.7 * true < est.noise_sigma < 1.4 * true


@pytest.mark.slow
def test_a_known_psf_is_kept_and_the_other_estimated(nuclei24):
    y = measured(nuclei24, "uniform:5", "gaussian:1")
    est = estimate_blur(y, spatial_psf="gaussian:1")
    assert est.spatial_psf == "gaussian:1" and est.confidence["spatial_psf"] == {"kind": "given"}
    assert est.temporal_psf.startswith("uniform:") and abs(int(est.temporal_psf.split(":")[1]) - 5) <= 1


def test_bad_stacks_are_refused_before_any_work():
    with pytest.raises(ValueError, match="at least 6 frames"):
        estimate_blur(np.random.default_rng(0).random((4, 32, 32)))
    with pytest.raises(ValueError, match="16 x 16"):
        estimate_blur(np.random.default_rng(0).random((8, 8, 8)))
    with pytest.raises(ValueError, match="constant"):
        estimate_blur(np.ones((8, 32, 32), np.float32))
    bad = np.random.default_rng(0).random((8, 32, 32))
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimate_blur(bad)


def test_auto_is_refused_with_a_mask_or_downsampling():
    data = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="downsample"):
        resolve_auto(data, OperatorSpec(temporal_psf="auto", downsample=2))
    with pytest.raises(ValueError, match="mask"):
        resolve_auto(data, OperatorSpec(spatial_psf="auto", mask=np.ones((32, 32), bool)))
    spec = OperatorSpec(temporal_psf="uniform:3")
    assert resolve_auto(data, spec) == (spec, None)


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def measured_tif(tmp_path_factory, nuclei24):
    path = tmp_path_factory.mktemp("estimate") / "measured.tif"
    write_stack(path, measured(nuclei24, "uniform:5"), axes="TYX")
    return path


@pytest.mark.slow
def test_json_is_exactly_one_object_with_restores_spec_strings(measured_tif, capsys):
    assert main(["estimate", str(measured_tif), "--json"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out)  # the whole of standard output is one object
    assert out.strip().startswith("{") and out.count("\n") == 1
    assert set(record) == {"temporal_psf", "spatial_psf", "noise_sigma", "confidence"}
    assert parse_temporal_spec(record["temporal_psf"]) is not None
    assert parse_spatial_spec(record["spatial_psf"]) is not None
    assert isinstance(record["noise_sigma"], float) and record["noise_sigma"] > 0
    assert {"temporal_psf", "spatial_psf", "noise_sigma"} <= set(record["confidence"])
    assert record["confidence"]["temporal_psf"]["level"] in ("high", "medium", "low")
    OperatorSpec(temporal_psf=record["temporal_psf"], spatial_psf=record["spatial_psf"]).build((24, 1, 96, 96))
    assert main(["estimate", str(measured_tif)]) == 0
    text = capsys.readouterr().out
    assert "temporal PSF:" in text and f"--temporal-psf {record['temporal_psf']}" in text


@pytest.mark.parametrize("make, message", [
    (None, "not found"),
    (lambda p: p.write_bytes(b"not a tiff"), "cannot read"),
    (lambda p: tifffile.imwrite(p, np.zeros((32, 32, 3), np.uint8), photometric="rgb"), "colour"),
    (lambda p: tifffile.imwrite(p, np.full((8, 32, 32), np.nan, np.float32)), "NaN"),
    (lambda p: tifffile.imwrite(p, np.ones((8, 32, 32), np.float32)), "constant"),
    (lambda p: write_stack(p, np.random.default_rng(0).random((5, 32, 32)).astype(np.float32), axes="TYX"), "6 frames"),
])
def test_bad_input_gives_a_clear_message_and_no_traceback(tmp_path, make, message, capsys):
    path = tmp_path / "in.tif"
    if make is not None:
        make(path)
    assert main(["estimate", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith("napari-svi estimate: error:") and message in captured.err


# ---------------------------------------------------------------- restore with auto


def test_restore_auto_estimates_first_and_records_it(tiny_prior):
    from napari_svi.restore import iter_restore

    truth = np.random.default_rng(1).random((8, 32, 32)).astype(np.float32)
    y = measured(truth, "uniform:3")
    gen = iter_restore(y, OperatorSpec(temporal_psf="auto", spatial_psf="auto"), prior=tiny_prior, steps=2,
                       device="cpu", threads=1)
    stages = []
    try:
        while True:
            stages.append(next(gen)["stage"])
    except StopIteration as stop:
        result = stop.value
    assert stages[:3] == ["estimating blur", "estimating noise", "loading prior"]
    record = result.metadata["estimate"]
    assert record["requested"] == {"temporal_psf": "auto", "spatial_psf": "auto"}
    assert set(record) >= {"temporal_psf", "spatial_psf", "noise_sigma", "confidence"}
    used = result.metadata["operator"]
    for key in ("temporal_psf", "spatial_psf"):
        assert (used[key] or "none") == record[key]
    assert result.restored.shape == y.shape


def test_restore_command_with_auto_writes_the_estimate(tmp_path, tiny_prior, capsys):
    truth = np.random.default_rng(2).random((8, 32, 32)).astype(np.float32)
    src = tmp_path / "in.tif"
    write_stack(src, measured(truth, "uniform:3"), axes="TYX")
    out = tmp_path / "out.tif"
    assert main(["restore", str(src), "-o", str(out), "--temporal-psf", "auto", "--spatial-psf", "auto",
                 "--prior", tiny_prior, "--steps", "2", "--device", "cpu", "--threads", "1", "--quiet"]) == 0
    _, info = read_stack(out)
    est = info.metadata["estimate"]
    assert info.metadata["operator"]["temporal_psf"] in (None, est["temporal_psf"])
    assert est["requested"]["temporal_psf"] == "auto"
    assert main(["restore", str(src), "-o", str(tmp_path / "o2.tif"), "--temporal-psf", "auto", "--downsample", "2",
                 "--prior", tiny_prior, "--quiet"]) == 2
    assert "downsample" in capsys.readouterr().err
