"""Trial: recognise the structure from the data, so that plain ``auto`` could use its reference spectrum.

With the structure named (``--spatial-psf auto:STRUCTURE``) the blind spatial PSF meets the 0.5 dB
target on the held-out clips; without it, it does not (``results/estimate/named/report.md``). This asks
whether the data can name the structure themselves. A small CNN (four 3x3 conv blocks, about 60 k
weights) learns to tell actin, mitochondria, nuclei and plant walls apart from 64-px patches of the
prior's training images, augmented with what a restore meets: a Gaussian blur of 0-2.5 px, a motion
blur of 2-7 px in any direction, Gaussian or Poisson-Gaussian noise, flips and transposes.

Trained on one half of those images (``--train top``: the top rows of each left half, and of the
nuclei time-lapse's training half) and tested on the other, never seen (``--test bottom``), as clips
degraded by ``estimate_blind.measure`` (12 frames of 96 px, the benchmark's temporal and spatial PSFs
and noises). A clip's answer is the class of the mean log-probability over 9 patches of 4 frames.

    OMP_NUM_THREADS=2 python benchmarks/estimate_recognition_trial.py --train top --test bottom
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimate_blind as eb  # noqa: E402

CLASSES = ("actin", "mitochondria", "nuclei", "walls")
STILLS = {"actin": "BPAE_actin.tif", "mitochondria": "BPAE_mito.tif", "nuclei": "BPAE_nuclei.tif", "walls": "maize_clsm.tif"}
PATCH = 64


def sources(part: str, shared: Path) -> dict[str, list[np.ndarray]]:
    """The prior's training images per class (left halves; the nuclei time-lapse's training half), cut to
    their ``top`` or ``bottom`` rows (or ``all``)."""
    import tifffile

    from napari_svi.datasets import HELD_OUT_FIRST_COLUMN, load_bio_sample

    def rows(a: np.ndarray) -> np.ndarray:
        h = a.shape[-2]
        return a[..., : h // 2, :] if part == "top" else a[..., h // 2 :, :] if part == "bottom" else a

    out = {}
    for name, file in STILLS.items():
        img = tifffile.imread(shared / file).astype(np.float32)
        out[name] = [rows(img[:, : img.shape[1] // 2])]
    out["nuclei"].append(rows(load_bio_sample("2D_timelapse.tif")[:, :, :HELD_OUT_FIRST_COLUMN].astype(np.float32)))
    return out


def normalised(z: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(z, [1, 99.5])
    return ((z - lo) / max(hi - lo, 1e-9)).astype(np.float32)


def _window(a: np.ndarray, size: int, rng: np.random.Generator, tries: int) -> np.ndarray:
    """The most structured of ``tries`` random windows (a frame of a time-lapse drawn first)."""
    if a.ndim == 3:
        a = a[rng.integers(len(a))]
    best = None
    for _ in range(tries):
        r, c = rng.integers(0, a.shape[0] - size), rng.integers(0, a.shape[1] - size)
        w = a[r : r + size, c : c + size]
        if best is None or w.var() > best.var():
            best = w
    return best


def training_patch(src: dict, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    k = int(rng.integers(len(CLASSES)))
    images = src[CLASSES[k]]
    w = _window(images[rng.integers(len(images))], PATCH + 8, rng, 3).astype(np.float64)
    w = w[::-1] if rng.random() < 0.5 else w
    w = w.T if rng.random() < 0.5 else w
    sigma = rng.uniform(0, 2.5)
    if sigma > 0.2:
        w = ndimage.gaussian_filter(w, sigma)
    if rng.random() < 0.5:
        n, angle, kernel = int(rng.integers(2, 8)), rng.uniform(0, np.pi), np.zeros((9, 9))
        for t in np.linspace(-(n - 1) / 2, (n - 1) / 2, n):
            kernel[int(round(4 + t * np.sin(angle))), int(round(4 + t * np.cos(angle)))] += 1
        w = ndimage.convolve(w, kernel / kernel.sum())
    w = w[4 : 4 + PATCH, 4 : 4 + PATCH]
    z = (w - w.min()) / max(np.percentile(w, 99.9) - w.min(), 1e-9)
    if rng.random() < 0.5:
        z = z + rng.uniform(0.005, 0.03) * rng.standard_normal(z.shape)
    else:
        photons = rng.uniform(100, 1000)
        z = rng.poisson(np.maximum(z, 0) * photons) / photons + 2 / photons * rng.standard_normal(z.shape)
    return normalised(z), k


def network():
    import torch

    def block(i, o):
        return [torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.GroupNorm(4, o), torch.nn.ReLU()]

    return torch.nn.Sequential(*block(1, 16), torch.nn.MaxPool2d(2), *block(16, 32), torch.nn.MaxPool2d(2),
                               *block(32, 48), torch.nn.MaxPool2d(2), *block(48, 64), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(64, len(CLASSES)))


def test_clips(src: dict, n: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """``n`` clips (12 x 96 x 96) of the test part, degraded as the blind benchmark degrades its clips."""
    from napari_svi.benchmark.suite import pseudo_timelapse

    rng, out = np.random.default_rng(seed), []
    for k in range(n):
        images = src[CLASSES[k % len(CLASSES)]]
        a = images[rng.integers(len(images))]
        if a.ndim == 3:
            t, r, c = rng.integers(0, len(a) - 12), rng.integers(0, a.shape[1] - 96), rng.integers(0, a.shape[2] - 96)
            truth = a[t : t + 12, r : r + 96, c : c + 96]
        else:
            truth = pseudo_timelapse(np.ascontiguousarray(_window(a, 128, rng, 6)), 12, 96)
        temporal, spatial = eb.TEMPORAL[rng.integers(len(eb.TEMPORAL))], eb.SPATIAL[rng.integers(len(eb.SPATIAL))]
        y, _ = eb.measure(truth, temporal, spatial, ("gauss", "pg300")[rng.integers(2)], seed=int(rng.integers(10**6)))
        out.append((y, k % len(CLASSES)))
    return out


def clip_answer(model, y: np.ndarray) -> int:
    import torch

    frames = np.unique(np.linspace(0, len(y) - 1, 4).round().astype(int))
    patches = [normalised(y[i, r : r + PATCH, c : c + PATCH].astype(np.float64)) for i in frames
               for r in range(0, y.shape[1] - PATCH + 1, 16) for c in range(0, y.shape[2] - PATCH + 1, 16)]
    with torch.no_grad():
        return int(torch.log_softmax(model(torch.from_numpy(np.stack(patches)[:, None])), 1).mean(0).argmax())


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", choices=("top", "bottom"), default="top")
    p.add_argument("--test", choices=("top", "bottom"), default="bottom")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--clips", type=int, default=80)
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng, src = np.random.default_rng(1), sources(args.train, Path(args.shared))
    clips = test_clips(sources(args.test, Path(args.shared)), args.clips, 7)
    model = network()
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=args.steps)
    start = time.perf_counter()
    print(f"train on the {args.train} halves, test on {len(clips)} clips of the {args.test} halves; "
          f"rows: true class, columns: answer ({', '.join(CLASSES)})")
    for step in range(1, args.steps + 1):
        xs, ys = zip(*(training_patch(src, rng) for _ in range(64)), strict=True)
        model.train()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(np.stack(xs)[:, None])), torch.tensor(ys),
                                                 label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == args.steps:
            model.eval()
            confusion = np.zeros((len(CLASSES),) * 2, dtype=int)
            for y, k in clips:
                confusion[k, clip_answer(model, y)] += 1
            print(f"step {step}: loss {loss.item():.3f}, clip accuracy {np.trace(confusion) / confusion.sum():.3f}, "
                  f"{time.perf_counter() - start:.0f} s, confusion {confusion.tolist()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
