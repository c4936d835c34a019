"""``napari-svi train``: a tiny run end to end, resuming, Ctrl-C, input checks, loading the result."""

from __future__ import annotations

import csv
import json
import os
import signal

import numpy as np
import pytest
import tifffile
import torch

from napari_svi import cli_train
from napari_svi.cli import main
from napari_svi.priors import load_prior

TINY = ["--batch-size", "2", "--patch-size", "16", "--base-channels", "8", "--channel-mults", "1,2",
        "--blocks-per-level", "1", "--device", "cpu"]  # fmt: skip


@pytest.fixture
def image(tmp_path):
    """A small random 'microscopy' stack: 2 frames of 24 x 20 pixels, uint16."""
    rng = np.random.default_rng(0)
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, rng.integers(100, 4000, size=(2, 24, 20), dtype=np.uint16))
    return path


def losses(folder):
    with open(folder / "loss.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def trained(folder):
    return json.loads((folder / "config.json").read_text())["training"]


def test_train_three_steps_then_load_and_resume(image, tmp_path, capsys):
    out = tmp_path / "prior"
    assert main(["train", str(image), "-o", str(out), "--steps", "3", *TINY]) == 0
    assert {"config.json", "weights.safetensors", "checkpoint.pt", "loss.csv", "MODEL_CARD.md"} <= {
        p.name for p in out.iterdir()
    }
    assert losses(out) == [1, 2, 3] and trained(out)["steps_done"] == 3
    assert trained(out)["data"] == [str(image)]
    err = capsys.readouterr().err  # stderr is not a terminal here: whole progress lines, no bar
    assert "\r" not in err and "napari-svi train: step 3/3, loss " in err

    card = (out / "MODEL_CARD.md").read_text()
    for text in (str(image), "napari-svi train", "--steps 3", "steps done: 3 of 3", "final loss", torch.__version__,
                 f"{os.cpu_count()} logical cores"):  # fmt: skip
        assert text in card

    prior = load_prior(out)
    assert (prior.name, prior.channels, prior.size_multiple) == ("prior", 1, 2)
    x = torch.zeros(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.isfinite(prior.predict_noise(x, torch.tensor([5, 900]))).all()

    # a larger --steps continues the same run: steps 4 and 5 are appended
    assert main(["train", str(image), "-o", str(out), "--steps", "5", *TINY]) == 0
    assert losses(out) == [1, 2, 3, 4, 5] and trained(out)["steps_done"] == 5
    assert "steps done: 5 of 5" in (out / "MODEL_CARD.md").read_text()

    # other settings cannot resume; --no-resume starts afresh
    assert main(["train", str(image), "-o", str(out), "--steps", "2", *TINY, "--lr", "1e-3"]) == 2
    assert "other training settings" in capsys.readouterr().err
    assert main(["train", str(image), "-o", str(out), "--steps", "2", *TINY, "--no-resume"]) == 0
    assert losses(out) == [1, 2]


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(image, tmp_path, monkeypatch):
    out = tmp_path / "prior"
    original = cli_train._Progress.__call__

    def press_ctrl_c_at_step_2(self, info):
        if info["step"] == 2 and not self.stop:
            os.kill(os.getpid(), signal.SIGINT)  # goes through the handler the command installed
        return original(self, info)

    monkeypatch.setattr(cli_train._Progress, "__call__", press_ctrl_c_at_step_2)
    assert main(["train", str(image), "-o", str(out), "--steps", "6", *TINY]) == 130
    stopped_at = trained(out)["steps_done"]
    assert 2 <= stopped_at < 6 and losses(out) == list(range(1, stopped_at + 1))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    monkeypatch.setattr(cli_train._Progress, "__call__", original)
    assert main(["train", str(image), "-o", str(out), "--steps", "6", *TINY]) == 0
    assert losses(out) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((24, 24), np.nan, dtype=np.float32), "contains NaN or infinite values"),
        (np.ones((8, 30), dtype=np.uint16), r"frames are 8x30 pixels, smaller than the 16-pixel --patch-size"),
        (np.full((24, 24), 7, dtype=np.uint16), "is constant"),
    ],
    ids=["nan", "too-small", "constant"],
)
def test_bad_images_are_rejected_before_training(tmp_path, capsys, array, message):
    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, array)
    out = tmp_path / "prior"
    assert main(["train", str(bad), "-o", str(out), "--steps", "3", *TINY]) == 2
    err = capsys.readouterr().err
    assert "bad.tif" in err and message.replace("\\", "") in err.replace("\\", "")
    assert not out.exists()


def test_missing_and_unreadable_files(tmp_path, image, capsys):
    assert main(["train", str(image), str(tmp_path / "nope.tif"), "-o", str(tmp_path / "p"), *TINY]) == 2
    assert "not found: " in capsys.readouterr().err
    text = tmp_path / "notes.tif"
    text.write_text("not a tiff")
    assert main(["train", str(text), "-o", str(tmp_path / "p"), *TINY]) == 2
    assert "notes.tif is not a readable TIFF" in capsys.readouterr().err


def test_channels_of_a_multichannel_tiff_become_separate_images(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "two_channels.tif"
    tifffile.imwrite(path, rng.random((3, 2, 20, 20), dtype=np.float32), imagej=True, metadata={"axes": "TCYX"})
    images, sources = cli_train.read_training_images([str(path)], patch_size=16)
    assert [a.shape for a in images] == [(3, 20, 20), (3, 20, 20)]
    assert sources == [f"{path} (channel 0)", f"{path} (channel 1)"]


def test_time_limit_stops_with_a_resumable_checkpoint(image, tmp_path, monkeypatch, capsys):
    from napari_svi import training

    clock = iter(float(i) for i in range(10_000))  # every reading of the clock is one second later
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    out = tmp_path / "prior"
    assert main(["train", str(image), "-o", str(out), "--steps", "50", "--minutes", str(3.5 / 60), *TINY]) == 0
    done = trained(out)["steps_done"]
    assert 1 <= done < 50 and (out / "checkpoint.pt").exists()
    assert "--minutes reached at step" in capsys.readouterr().out
    assert trained(out)["machine"]["precision"] == "float32"  # the CPU never uses bfloat16 autocast
    assert main(["train", str(image), "-o", str(out), "--steps", "50", "--minutes", str(3.5 / 60), *TINY]) == 0
    assert trained(out)["steps_done"] > done and losses(out) == list(range(1, trained(out)["steps_done"] + 1))


def test_invalid_settings_are_clear_errors(image, tmp_path, capsys):
    assert main(["train", str(image), "-o", str(tmp_path / "p"), *TINY, "--minutes", "0"]) == 2
    assert "--minutes must be positive" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", str(image), "-o", str(tmp_path / "p"), *TINY, "--precision", "bfloat16"]) == 2
        assert "needs a CUDA device" in capsys.readouterr().err
    assert main(["train", str(image), "-o", str(tmp_path / "p"), *TINY, "--patch-size", "15"]) == 2
    assert "patch_size must be a multiple of 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", str(image), "-o", str(tmp_path / "p"), "--channel-mults", "1,x"])
    assert main(["train", str(image), "-o", str(tmp_path / "p"), *TINY, "--device", "gpu"]) == 2
    assert "device must be one of" in capsys.readouterr().err


@pytest.fixture
def trained_prior(image, tmp_path):
    out = tmp_path / "prior"
    assert main(["train", str(image), "-o", str(out), "--steps", "1", *TINY]) == 0
    return out


def test_corrupt_weights_name_the_file(trained_prior):
    weights = trained_prior / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"weights.safetensors is corrupt or not a safetensors file"):
        load_prior(trained_prior)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="weights.safetensors is missing"):
        load_prior(trained_prior)


def test_config_of_another_architecture_is_a_clear_error(trained_prior):
    config_path = trained_prior / "config.json"
    config = json.loads(config_path.read_text())

    config["architecture"] = "transformer"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json: architecture 'transformer' is not supported"):
        load_prior(trained_prior)

    config["architecture"] = "unet"
    config["unet"]["base_channels"] = 16  # the weights are 8 channels wide
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"weights.safetensors does not match the architecture in .*config.json: shape mismatch"):
        load_prior(trained_prior)

    config["unet"]["heads"] = 4
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: invalid prior configuration .*unknown UNet config keys: \['heads'\]"):
        load_prior(trained_prior)
