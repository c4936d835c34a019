"""PSF builders: temporal kernels, exposure boxes, Gaussian/Airy/measured spatial PSFs and their errors."""

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import tifffile

from napari_svi.psf import (
    airy_psf,
    gaussian_psf,
    load_psf,
    spatial_psf,
    temporal_kernel,
    temporal_kernel_from_exposure,
)


# --------------------------------------------------------------------------------------------------
# temporal kernels
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [None, "none", "None", " NONE "])
def test_temporal_none(spec):
    assert temporal_kernel(spec) is None


@pytest.mark.parametrize("frames", [1, 2, 7, 13])
def test_temporal_uniform(frames):
    k = temporal_kernel(f"uniform:{frames}")
    assert k.shape == (frames,) and k.dtype == np.float64
    np.testing.assert_allclose(k, 1 / frames)
    assert math.isclose(k.sum(), 1.0)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_temporal_gaussian(sigma):
    k = temporal_kernel(f"gaussian:{sigma}")
    assert k.size == 2 * math.ceil(4 * sigma) + 1
    assert math.isclose(k.sum(), 1.0) and np.argmax(k) == k.size // 2
    np.testing.assert_allclose(k, k[::-1])
    x = np.arange(k.size) - k.size // 2
    np.testing.assert_allclose(k / k.max(), np.exp(-0.5 * (x / sigma) ** 2))


def test_temporal_array_is_normalised_and_copied():
    weights = np.array([1.0, 3.0])
    k = temporal_kernel(weights)
    np.testing.assert_allclose(k, [0.25, 0.75])
    assert weights[0] == 1.0
    np.testing.assert_allclose(temporal_kernel([2, 2]), [0.5, 0.5])


@pytest.mark.parametrize(
    ("name", "content"),
    [("k.txt", "1 2 1\n"), ("k.txt", "# weights\n1\n2\n1\n"), ("k.csv", "1, 2, 1"), ("k.CSV", "1,2;1")],
)
def test_temporal_text_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    np.testing.assert_allclose(temporal_kernel(str(path)), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(temporal_kernel(path), [0.25, 0.5, 0.25])


def test_temporal_npy_and_tif_files(tmp_path):
    np.save(tmp_path / "k.npy", np.array([1.0, 1.0, 2.0]))
    np.testing.assert_allclose(temporal_kernel(tmp_path / "k.npy"), [0.25, 0.25, 0.5])
    tifffile.imwrite(tmp_path / "k.tif", np.array([[1.0, 1.0, 2.0]], dtype=np.float32))  # (1, L): squeezed
    np.testing.assert_allclose(temporal_kernel(str(tmp_path / "k.tif")), [0.25, 0.25, 0.5])


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("uniform:0", "K >= 1"),
        ("uniform:2.5", "K >= 1"),
        ("uniform:", "K >= 1"),
        ("gaussian:0", "SIGMA > 0"),
        ("gaussian:-1", "SIGMA > 0"),
        ("gaussian:abc", "must be a number"),
        ("gaussian:nan", "finite"),
        ("gaussian:1e6", "more than 10001"),
        ("uniform:100000000", "more than 10001"),
        ("box:3", r"unknown specification 'box:3'; allowed: None or 'none', 'uniform:K'"),
        ("7", "unknown specification"),
        ([0.5, -0.5, 1.0], "negative"),
        ([0.0, 0.0, 0.0], "all zero"),
        ([0.5, np.nan], "NaN"),
        ([0.5, np.inf], "NaN or infinite"),
        (np.ones((3, 2)), "1-D"),
        (np.float64(3.0), "1-D"),
        ([], "empty"),
        ("missing_kernel.txt", "file not found"),
        ({"a": 1}, "cannot read"),
    ],
)
def test_temporal_errors_name_the_parameter(spec, match):
    with pytest.raises(ValueError, match=match) as err:
        temporal_kernel(spec)
    assert "temporal_psf" in str(err.value)


def test_temporal_bad_files(tmp_path):
    (tmp_path / "bad.txt").write_text("1 two 3")
    np.save(tmp_path / "k2d.npy", np.ones((2, 3)))
    for path, match in [(tmp_path / "bad.txt", "numbers only"), (tmp_path / "k2d.npy", "1-D")]:
        with pytest.raises(ValueError, match=match) as err:
            temporal_kernel(path)
        assert "temporal_psf" in str(err.value)


# --------------------------------------------------------------------------------------------------
# exposure -> temporal kernel
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exposure_ms", "interval_ms", "expected"),
    [
        (100, 100, [1.0]),
        (20, 100, [1.0]),  # exposure shorter than a frame interval: no blur at this frame rate
        (300, 100, [1 / 3, 1 / 3, 1 / 3]),
        (200, 100, [0.25, 0.5, 0.25]),
        (150, 100, [1 / 6, 2 / 3, 1 / 6]),
        (250, 100, [0.3, 0.4, 0.3]),
        (30.0, 10.0, [1 / 3] * 3),
        (50, 10, [0.2] * 5),
        (100.0000001, 100, [1.0]),  # rounding noise does not add empty end frames
    ],
)
def test_exposure_kernel(exposure_ms, interval_ms, expected):
    k = temporal_kernel_from_exposure(exposure_ms, interval_ms)
    np.testing.assert_allclose(k, expected, rtol=1e-6)
    assert k.size % 2 == 1 and math.isclose(k.sum(), 1.0)


@pytest.mark.parametrize(
    ("exposure_ms", "interval_ms", "name"),
    [
        (0, 100, "exposure_ms"),
        (-5, 100, "exposure_ms"),
        (float("nan"), 100, "exposure_ms"),
        (10, 0, "frame_interval_ms"),
        (10, float("inf"), "frame_interval_ms"),
        ("10", 5, "exposure_ms"),
    ],
)
def test_exposure_kernel_errors(exposure_ms, interval_ms, name):
    with pytest.raises(ValueError, match=name):
        temporal_kernel_from_exposure(exposure_ms, interval_ms)


# --------------------------------------------------------------------------------------------------
# spatial PSFs
# --------------------------------------------------------------------------------------------------
def test_gaussian_psf_matches_scipy_gaussian_filter():
    psf = gaussian_psf(1.0)
    assert psf.shape == (9, 9) and math.isclose(psf.sum(), 1.0)
    delta = np.zeros((9, 9))
    delta[4, 4] = 1
    np.testing.assert_allclose(psf, ndi.gaussian_filter(delta, 1.0, mode="constant", truncate=4.0), atol=1e-15)
    assert gaussian_psf(2.3, size=5).shape == (5, 5)
    assert gaussian_psf(0.2).shape == (3, 3)


@pytest.mark.parametrize(
    ("sigma", "size", "name"), [(0, None, "sigma_px"), (-1, None, "sigma_px"), (1, 4, "size"), (1, 0, "size")]
)
def test_gaussian_psf_errors(sigma, size, name):
    with pytest.raises(ValueError, match=name):
        gaussian_psf(sigma, size)


def test_airy_psf_shape_and_symmetry():
    psf = airy_psf(1.4, 520, 65)
    assert psf.shape == (21, 21) and psf.dtype == np.float64
    assert math.isclose(psf.sum(), 1.0) and np.argmax(psf) == psf.size // 2
    np.testing.assert_allclose(psf, psf[::-1], atol=1e-15)
    np.testing.assert_allclose(psf, psf.T, atol=1e-15)
    assert airy_psf(0.3, 600, 5000).shape == (3, 3)  # coarse pixels: still at least 3 x 3
    assert airy_psf(1.4, 520, 65, size=7).shape == (7, 7)


def _fwhm(profile, spacing):
    """Full width at half maximum of a symmetric, centred profile, by linear interpolation."""
    half = profile.max() / 2
    c = profile.size // 2
    right = profile[c:]
    i = int(np.argmax(right < half))
    x = (i - 1) + (right[i - 1] - half) / (right[i - 1] - right[i])
    return 2 * x * spacing


@pytest.mark.parametrize(("na", "wavelength_nm"), [(1.4, 520), (0.8, 650), (0.25, 450)])
def test_airy_fwhm_is_051_lambda_over_na(na, wavelength_nm):
    pixel_nm = wavelength_nm / na / 40  # fine sampling: 40 pixels per lambda / NA
    psf = airy_psf(na, wavelength_nm, pixel_nm, size=61, oversample=3)
    fwhm_nm = _fwhm(psf[30], pixel_nm)
    assert abs(fwhm_nm / (0.51 * wavelength_nm / na) - 1) < 0.05


def test_airy_first_dark_ring_at_061_lambda_over_na():
    na, wl = 1.0, 500
    pixel_nm = wl / na / 50
    profile = airy_psf(na, wl, pixel_nm, size=101, oversample=1)[50, 50:]
    first_min = np.argmin(profile[:45]) * pixel_nm
    assert abs(first_min / (0.61 * wl / na) - 1) < 0.05


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(na=0), "na"),
        (dict(na=1.8), "na"),
        (dict(wavelength_nm=150), "wavelength_nm"),
        (dict(wavelength_nm=2500), "wavelength_nm"),
        (dict(pixel_size_nm=0), "pixel_size_nm"),
        (dict(pixel_size_nm=float("nan")), "pixel_size_nm"),
        (dict(size=8), "size"),
        (dict(oversample=0), "oversample"),
        (dict(pixel_size_nm=0.01), "pixel_size_nm"),
    ],
)
def test_airy_errors(kwargs, name):
    args = dict(na=1.2, wavelength_nm=520, pixel_size_nm=100) | kwargs
    with pytest.raises(ValueError, match=name):
        airy_psf(**args)


def test_load_psf_any_size_normalised_not_recentred(tmp_path):
    measured = np.zeros((6, 8), dtype=np.uint16)
    measured[2, 5] = 30
    measured[3, 5] = 10
    tifffile.imwrite(tmp_path / "psf.tif", measured)
    psf = load_psf(tmp_path / "psf.tif")
    assert psf.shape == (6, 8) and psf.dtype == np.float64
    assert psf[2, 5] == 0.75 and psf[3, 5] == 0.25  # kept where it was (no centring, no background removal)
    tifffile.imwrite(tmp_path / "plane.tif", measured[None].astype(np.float32))
    np.testing.assert_allclose(load_psf(str(tmp_path / "plane.tif")), psf)
    np.save(tmp_path / "psf.npy", measured)
    np.testing.assert_allclose(spatial_psf(tmp_path / "psf.npy"), psf)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.ones((3, 5, 5), np.float32), r"2-D image .* with 3 planes"),
        (-np.ones((5, 5), np.float32), "negative"),
        (np.zeros((5, 5), np.float32), "all zero"),
        (np.full((5, 5), np.nan, np.float32), "NaN"),
    ],
)
def test_load_psf_errors(tmp_path, image, match):
    tifffile.imwrite(tmp_path / "psf.tif", image, photometric="minisblack")  # a stack of planes, not RGB
    with pytest.raises(ValueError, match=match) as err:
        load_psf(tmp_path / "psf.tif")
    assert "spatial_psf" in str(err.value)


def test_spatial_psf_specs():
    assert spatial_psf(None) is None and spatial_psf("none") is None
    np.testing.assert_allclose(spatial_psf("gaussian:1.5"), gaussian_psf(1.5))
    np.testing.assert_allclose(spatial_psf("airy:1.4,520,65"), airy_psf(1.4, 520, 65))
    np.testing.assert_allclose(spatial_psf("AIRY: 1.4, 520, 65"), airy_psf(1.4, 520, 65))
    np.testing.assert_allclose(spatial_psf([[1, 1], [2, 0]]), [[0.25, 0.25], [0.5, 0]])


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("gaussian:0", "SIGMA > 0"),
        ("airy:1.4,520", "three numbers"),
        ("airy:2.0,520,65", "na"),
        ("airy:1.4,x,65", "must be a number"),
        ("moffat:2", "unknown specification 'moffat:2'; allowed: None or 'none', 'gaussian:SIGMA'"),
        ("psf_missing.tif", "file not found"),
        (np.ones(5), "2-D"),
        (np.ones((2, 2, 2)), "2-D"),
        (-np.ones((3, 3)), "negative"),
        (np.zeros((3, 3)), "all zero"),
        (np.array([[np.nan, 1.0]]), "NaN"),
    ],
)
def test_spatial_psf_errors_name_the_parameter(spec, match):
    with pytest.raises(ValueError, match=match) as err:
        spatial_psf(spec)
    assert "spatial_psf" in str(err.value)


def test_named_specs_parse_once_for_the_core_and_the_widgets():
    from napari_svi.psf_spec import parse_spatial_spec, parse_temporal_spec

    assert parse_temporal_spec("uniform:7") == ("uniform", (7,))
    assert parse_temporal_spec(" Gaussian: 1.5") == ("gaussian", (1.5,))
    assert parse_temporal_spec("none") == ("none", ())
    assert parse_temporal_spec("kernel.txt") is None and parse_temporal_spec(np.ones(3)) is None
    assert parse_spatial_spec("airy:1.4, 520, 65") == ("airy", (1.4, 520.0, 65.0))
    assert parse_spatial_spec("gaussian:2") == ("gaussian", (2.0,))
    for bad, parse in (("uniform:0", parse_temporal_spec), ("gaussian:-1", parse_spatial_spec),
                       ("airy:1.4,520", parse_spatial_spec)):
        with pytest.raises(ValueError, match="psf"):
            parse(bad)
