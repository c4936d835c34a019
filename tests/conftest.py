"""Shared fixtures: a tiny trained prior folder (trained here, in seconds) and a small real clip."""

import os

import numpy as np
import pytest
import torch

# CI has 2 cores; tests stay predictable and leave one for Xvfb/Qt. restore() and the CLI take
# their default threads from OMP_NUM_THREADS, so it is set too (also for worker processes).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_prior_dir(tmp_path_factory):
    """A real prior folder (config.json + weights.safetensors) of a 2-level UNet, 3 training steps."""
    from napari_svi.priors.unet import UNetConfig
    from napari_svi.training import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_prior")
    rng = np.random.default_rng(0)
    images = [rng.random((4, 32, 32)).astype(np.float32)]
    cfg = TrainConfig(steps=3, batch_size=2, patch_size=16, warmup_steps=1, checkpoint_every=3,
                      unet=UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4))
    train(images, out, cfg)
    return out


@pytest.fixture(scope="session")
def real_clip():
    """8 x 32 x 32 crop of the held-out real nuclei time-lapse, uint8 as shipped."""
    from napari_svi.datasets import load_heldout_timelapse

    return np.ascontiguousarray(load_heldout_timelapse()[:8, 200:232, 100:132])


# ---------------------------------------------------------------- the GUI tests' prior and stack
# (test_batch and test_benchmark define their own tiny_prior, which takes precedence there)


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory):
    """A real prior folder from two training steps of a very small UNet on held-out frames (seconds)."""
    from napari_svi.datasets import load_heldout_timelapse
    from napari_svi.priors.unet import UNetConfig
    from napari_svi.training import TrainConfig, train

    frames = load_heldout_timelapse()[:4, 200:264, :64]
    config = TrainConfig(
        steps=2,
        batch_size=2,
        patch_size=16,
        warmup_steps=1,
        unet=UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4),
    )
    return str(train([frames], tmp_path_factory.mktemp("prior") / "tiny", config, device="cpu"))


@pytest.fixture
def stack():
    """A small real measurement: 6 frames of 16 x 16 from the held-out time-lapse, float32."""
    from napari_svi.datasets import load_heldout_timelapse

    return load_heldout_timelapse()[:6, 230:246, 100:116].astype(np.float32)
