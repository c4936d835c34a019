"""The spatial blur measured against a reference structure: bundled references, the user's own, bad ones."""

import json

import numpy as np
import pytest
import tifffile

from estimate_cases import measured
from napari_svi.cli import main
from napari_svi.estimate import estimate_blur
from napari_svi.estimate_fit import RING_COUNT
from napari_svi.estimate_reference import STRUCTURES, bundled_references, resolve_reference
from napari_svi.io import write_stack
from napari_svi.psf_spec import auto_structure, is_auto


def sigma_of(spec: str) -> float:
    return 0.0 if spec == "none" else float(spec.split(":")[1])


def test_every_named_structure_has_a_bundled_reference():
    table = bundled_references()
    assert set(table) == set(STRUCTURES.values())
    for name in STRUCTURES:
        refs = resolve_reference(name.upper())  # names in any case
        assert refs and all(r.name == STRUCTURES[name] for r in refs)
        for r in refs:
            assert r.rho.shape == r.log_power.shape == (RING_COUNT,) and np.all(np.isfinite(r.log_power))
            assert r.log_power[0] > r.log_power[-1] + 3  # sharp images still have far more coarse than fine power
            assert "left half" in r.source or "training half" in r.source  # the prior's training data only
    assert len(table["nuclei"]) == 2


def test_auto_structure_spec_strings():
    assert auto_structure("auto:nuclei") == "nuclei" and auto_structure(" AUTO: walls ") == "walls"
    assert auto_structure("auto:/data/sharp.tif") == "/data/sharp.tif"
    assert auto_structure("auto") is None and auto_structure("gaussian:1") is None and auto_structure(None) is None
    assert is_auto("auto:actin") and is_auto("Auto") and not is_auto("gaussian:1")


@pytest.fixture(scope="module")
def nuclei24():
    """24 x 96 x 96 of the held-out nuclei time-lapse (right half; the references are the left half)."""
    from napari_svi.benchmark.suite import load_clip

    return load_clip("nuclei", 24, 96)[0]


@pytest.mark.slow
def test_a_1px_blur_of_smooth_nuclei_is_found_against_their_reference(nuclei24):
    y = measured(nuclei24, "uniform:5", "gaussian:1")
    est = estimate_blur(y, structure="nuclei")
    conf = est.confidence["spatial_psf"]
    assert conf["method"] == "reference" and conf["reference"] == "nuclei"
    assert est.spatial_psf.startswith("gaussian:") and abs(sigma_of(est.spatial_psf) - 1) <= 0.25
    assert conf["interval"][0] <= sigma_of(est.spatial_psf) <= conf["interval"][1]
    assert est.temporal_psf.startswith("uniform:") and abs(int(est.temporal_psf.split(":")[1]) - 5) <= 1
    # the same through the restore spec string, and the 2 px case
    assert estimate_blur(y, spatial_psf="auto:Nuclei").spatial_psf == est.spatial_psf
    est2 = estimate_blur(measured(nuclei24, "uniform:5", "gaussian:2"), structure="nuclei")
    assert abs(sigma_of(est2.spatial_psf) - 2) <= 0.5
    # a spatial PSF the user gives is kept: no reference fit
    given = estimate_blur(y, spatial_psf="gaussian:1", structure="nuclei")
    assert given.spatial_psf == "gaussian:1" and given.confidence["spatial_psf"] == {"kind": "given"}


@pytest.mark.slow
def test_the_users_own_sharp_images_are_a_reference(tmp_path):
    from napari_svi.benchmark.suite import load_clip

    truth = load_clip("mito", 24, 96)[0]
    sharp = tmp_path / "sharp.tif"
    tifffile.imwrite(sharp, truth[::3])  # sharp frames of the same structure, as a lab would have
    path_est = estimate_blur(measured(truth, "uniform:7", "gaussian:1", seed=1), structure=str(sharp))
    assert path_est.confidence["spatial_psf"]["reference_source"] == str(sharp)
    assert abs(sigma_of(path_est.spatial_psf) - 1) <= 0.25
    none_est = estimate_blur(measured(truth, "uniform:7", seed=1), structure=truth[::3])
    assert none_est.spatial_psf == "none" and none_est.confidence["spatial_psf"]["reference"] == "given"


def bad_tif(kind):
    def make(path):
        if kind == "corrupt":
            path.write_bytes(b"not a tiff")
        elif kind == "rgb":
            tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
        elif kind == "small":
            tifffile.imwrite(path, np.random.default_rng(0).random((16, 16)).astype(np.float32))
        elif kind == "constant":
            tifffile.imwrite(path, np.ones((2, 64, 64), np.float32))
        elif kind == "nan":
            tifffile.imwrite(path, np.full((64, 64), np.nan, np.float32))
    return make


@pytest.mark.parametrize("structure, make, message", [
    ("bacteria", None, "neither a structure the default prior learnt (actin, mitochondria, nuclei, walls)"),
    ("missing.tif", None, "does not exist"),
    ("ref.tif", bad_tif("corrupt"), "cannot read the reference TIFF"),
    ("ref.tif", bad_tif("rgb"), "colour"),
    ("ref.tif", bad_tif("small"), "at least 32 x 32"),
    ("ref.tif", bad_tif("constant"), "constant"),
    ("ref.tif", bad_tif("nan"), "NaN"),
])
def test_a_bad_structure_is_refused_with_what_is_allowed(tmp_path, structure, make, message):
    if make is not None:
        make(tmp_path / structure)
    arg = structure if make is None and structure == "bacteria" else str(tmp_path / structure)
    with pytest.raises(ValueError, match="structure") as err:
        resolve_reference(arg)
    assert message in str(err.value)


def test_bad_structures_reach_the_user_as_messages_before_any_work(tmp_path, capsys):
    src = tmp_path / "in.tif"
    write_stack(src, np.random.default_rng(0).random((8, 32, 32)).astype(np.float32), axes="TYX")
    assert main(["estimate", str(src), "--structure", "bacteria", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err and "bacteria" in captured.err
    # the structure is checked before the input is read: a missing input is not what is reported
    assert main(["estimate", str(tmp_path / "absent.tif"), "--structure", "bacteria"]) == 2
    assert "bacteria" in capsys.readouterr().err
    out = tmp_path / "out.tif"
    for flag, spec, message in (("--spatial-psf", "auto:bacteria", "bacteria"),
                                ("--temporal-psf", "auto:nuclei", "for the spatial PSF")):
        assert main(["restore", str(src), "-o", str(out), flag, spec, "--device", "cpu", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_estimate_structure_json_and_text(tmp_path, nuclei24, capsys):
    src = tmp_path / "measured.tif"
    write_stack(src, measured(nuclei24, "uniform:5", "gaussian:1"), axes="TYX")
    assert main(["estimate", str(src), "--structure", "nuclei", "--json"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out)
    assert out.count("\n") == 1 and set(record) == {"temporal_psf", "spatial_psf", "noise_sigma", "confidence"}
    spatial = record["confidence"]["spatial_psf"]
    assert spatial["method"] == "reference" and spatial["level"] in ("high", "medium", "low")
    assert abs(sigma_of(record["spatial_psf"]) - 1) <= 0.25
    assert main(["estimate", str(src), "--structure", "nuclei"]) == 0
    text = capsys.readouterr().out
    assert "against the nuclei reference" in text and f"--spatial-psf {record['spatial_psf']}" in text


def test_restore_records_the_requested_structure(tmp_path, tiny_prior):
    from napari_svi.operators import OperatorSpec
    from napari_svi.restore import restore

    truth = np.random.default_rng(3).random((8, 48, 48)).astype(np.float32)
    result = restore(measured(truth, "uniform:3"), OperatorSpec(temporal_psf="auto", spatial_psf="auto:walls"),
                     prior=tiny_prior, steps=2, device="cpu", threads=1)
    record = result.metadata["estimate"]
    assert record["requested"]["spatial_psf"] == "auto:walls"
    assert record["confidence"]["spatial_psf"]["method"] == "reference"
    assert (result.metadata["operator"]["spatial_psf"] or "none") == record["spatial_psf"]
