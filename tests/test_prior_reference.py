"""A prior made by ``napari-svi train`` carries its training images' spectrum; plain ``auto`` measures against it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from estimate_cases import measured
from napari_svi.cli import main
from napari_svi.estimate import estimate_blur, resolve_auto
from napari_svi.estimate_reference import REFERENCE_FILE, TRAINED, prior_references
from napari_svi.io import write_stack
from napari_svi.operators import OperatorSpec


def sigma_of(spec: str) -> float:
    return float(spec.split(":")[1]) if spec.startswith("gaussian:") else 0.0


@pytest.fixture(scope="module")
def nuclei_prior(tmp_path_factory):
    """Two training steps of a tiny UNet on the nuclei time-lapse's training half (the frames a lab would give)."""
    from napari_svi.datasets import HELD_OUT_FIRST_COLUMN, load_bio_sample
    from napari_svi.priors.unet import UNetConfig
    from napari_svi.training import TrainConfig, train

    out = tmp_path_factory.mktemp("nuclei_prior")
    frames = load_bio_sample("2D_timelapse.tif")[::6, :, :HELD_OUT_FIRST_COLUMN]
    config = TrainConfig(steps=2, batch_size=2, patch_size=16, warmup_steps=1, checkpoint_every=2,
                         unet=UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4))
    train(list(frames), out, config, data_sources=["nuclei training half"])
    return out


@pytest.fixture(scope="module")
def nuclei_1px():
    """24 x 96 x 96 of the held-out nuclei (right half; the prior saw the left), a box of 5 frames and 1 px."""
    from napari_svi.benchmark.suite import load_clip

    return measured(load_clip("nuclei", 24, 96)[0], "uniform:5", "gaussian:1")


def test_training_writes_one_reference_of_its_images(nuclei_prior):
    table = json.loads((nuclei_prior / REFERENCE_FILE).read_text())
    assert table["made_by"] == "napari-svi train" and list(table["structures"]) == [TRAINED]
    (entry,) = table["structures"][TRAINED]
    assert "nuclei training half" in entry["source"] and len(entry["log_power"]) == len(table["rho"])
    assert np.all(np.diff(entry["log_power"][:8]) < 0)  # power falls with frequency, as images' does
    refs = prior_references(nuclei_prior)
    assert len(refs) == 1 and refs[0].name == f"prior {nuclei_prior.name}"
    # the default prior learnt four structures: no single reference, plain auto keeps the power law
    from napari_svi.priors.loading import DEFAULT_PRIOR_DIR

    assert prior_references("default") is None and prior_references(DEFAULT_PRIOR_DIR) is None
    assert prior_references(None) is None and prior_references(nuclei_prior / "config.json") is None


def test_plain_auto_measures_against_the_priors_training_images(nuclei_prior, nuclei_1px):
    spec, record = resolve_auto(nuclei_1px, OperatorSpec(temporal_psf="auto", spatial_psf="auto"), prior=str(nuclei_prior))
    conf = record["confidence"]["spatial_psf"]
    assert conf["method"] == "reference" and conf["reference"] == f"prior {nuclei_prior.name}"
    assert abs(sigma_of(record["spatial_psf"]) - 1) <= 0.25 and spec.spatial_psf == record["spatial_psf"]
    # the same data without the prior's reference: the power law, which is not asked to know the structure
    _, plain = resolve_auto(nuclei_1px, OperatorSpec(temporal_psf="auto", spatial_psf="auto"), prior="default")
    assert plain["confidence"]["spatial_psf"].get("method") != "reference"
    # a named structure wins over the prior's images
    _, named = resolve_auto(nuclei_1px, OperatorSpec(temporal_psf="auto", spatial_psf="auto:walls"), prior=str(nuclei_prior))
    assert named["confidence"]["spatial_psf"]["reference"] == "walls"


def test_estimate_prior_flag(tmp_path, nuclei_prior, nuclei_1px, capsys):
    src = tmp_path / "measured.tif"
    write_stack(src, nuclei_1px, axes="TYX")
    assert main(["estimate", str(src), "--prior", str(nuclei_prior), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["confidence"]["spatial_psf"]["method"] == "reference"
    assert record["spatial_psf"] == estimate_blur(nuclei_1px, structure=prior_references(nuclei_prior)).spatial_psf


def test_bad_prior_references_are_refused_plainly(tmp_path, nuclei_prior, capsys):
    src = tmp_path / "measured.tif"
    write_stack(src, np.random.default_rng(0).random((8, 40, 40)).astype(np.float32), axes="TYX")
    broken = tmp_path / "broken_prior"
    broken.mkdir()
    (broken / REFERENCE_FILE).write_text("{not json")
    cases = [(["--prior", "default"], "carries no reference"),
             (["--prior", str(tmp_path / "nothere")], "no such prior folder"),
             (["--prior", str(nuclei_prior), "--structure", "nuclei"], "not both"),
             (["--prior", str(broken)], "is not a reference table")]
    for flags, message in cases:
        assert main(["estimate", str(src), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    with pytest.raises(ValueError, match="references.json"):
        prior_references(broken)


def test_a_restore_with_the_lab_prior_records_its_reference(nuclei_prior, nuclei_1px):
    from napari_svi.restore import restore

    result = restore(nuclei_1px[:, :48, :48], OperatorSpec(temporal_psf="auto", spatial_psf="auto"), prior=str(nuclei_prior),
                     steps=2, device="cpu", threads=1)
    record = result.metadata["estimate"]
    assert record["requested"]["spatial_psf"] == "auto"
    assert record["confidence"]["spatial_psf"]["reference"] == f"prior {nuclei_prior.name}"
    assert (result.metadata["operator"]["spatial_psf"] or "none") == record["spatial_psf"]
