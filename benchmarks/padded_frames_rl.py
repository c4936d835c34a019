"""Frames padded to the network's size multiple: Richardson-Lucy as a blend candidate, before and after the fix.

Until 2026-12-04 the held-out blend treated any piece whose padded input was larger than its measurement
as downsampled and left Richardson-Lucy out. ``before`` replays that rule; ``now`` is the default
(a ``Downsample`` part only). The suite's drifting held-out crops of actin, walls and mito, 8 frames,
cut to 117 x 117 px (the prior pads to 120), box 3 + Gaussian 1.5 px, noise 0.01 of the range.

    OMP_NUM_THREADS=2 python benchmarks/padded_frames_rl.py
"""

import numpy as np
import torch

import napari_svi.warm_start as ws
from napari_svi import OperatorSpec, degrade, restore
from napari_svi.benchmark.metrics import psnr
from napari_svi.benchmark.suite import load_clip
from napari_svi.priors.loading import load_prior

torch.set_num_threads(2)
prior = load_prior("default", "cpu", channels=1)
print('size multiple', prior.size_multiple)
new = ws._downsamples


def old(op):
    return tuple(op.out_shape)[-2:] != tuple(op.in_shape)[-2:]



for clip in ('actin', 'walls', 'mito'):
    clean = load_clip(clip, 8, 128)[0][:, :117, :117].astype(np.float32)
    peak = float(clean.max() - clean.min())
    spec = OperatorSpec(temporal_psf="uniform:3", spatial_psf="gaussian:1.5")
    y = degrade(clean, spec, noise_sigma=0.01 * peak, seed=0)
    row = []
    for name, f in (('before', old), ('now', new)):
        ws._downsamples = f
        r = restore(y, spec, prior=prior, seed=0, device="cpu", window=None)
        row.append(f"{name} {psnr(clean / peak, r.restored / peak):.2f} dB (rl weight {r.metadata.get('blend_rl_weight')})")
    print(clip, '117 x 117, box 3 + gaussian 1.5:', ' | '.join(row), flush=True)
