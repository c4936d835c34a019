"""The checks and the prior of a restore, set up before any heavy work (see :mod:`napari_svi.restore`)."""

from __future__ import annotations

import math

from .noise import check_noise_sigma
from .priors.base import DiffusionPrior
from .validation import check_positive_int
from .warm_start import check_start


def check_settings(steps, eta, cg_steps, samples, seed, noise_sigma, gamma, preview_every, fill_unseen, tile_size,
                   start, start_t, blend) -> None:
    """Refuse any setting of :func:`~napari_svi.restore.restore` outside its range, naming it."""
    check_positive_int(steps, "steps")
    check_positive_int(cg_steps, "cg_steps", minimum=0)
    check_positive_int(samples, "samples")
    check_positive_int(seed, "seed", minimum=0)
    check_positive_int(preview_every, "preview_every", minimum=0)
    if tile_size is not None:
        check_positive_int(tile_size, "tile_size", minimum=8)
    if not (eta == "auto" or (isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0.0 <= eta <= 1.0)):
        raise ValueError(f"eta must be 'auto' or a number in [0, 1], got {eta!r}")
    check_noise_sigma(noise_sigma)
    if not (gamma in ("auto", "piece", "regional") or (isinstance(gamma, (int, float)) and gamma > 0)):
        raise ValueError(f"gamma must be 'auto', 'piece' or a positive number (inf = noiseless form), got {gamma!r}")
    if isinstance(fill_unseen, bool) or not (isinstance(fill_unseen, (int, float)) and math.isfinite(fill_unseen)
                                             and fill_unseen >= 0):
        raise ValueError(f"fill_unseen must be a number >= 0 (0: off), got {fill_unseen!r}")
    check_start(start, start_t, steps, blend)


def restoration_prior(prior, device, tile_size: int | None) -> DiffusionPrior:
    """The prior on ``device``, evaluated in network tiles (``tile_size``) and frame chunks."""
    from .priors.loading import load_prior
    from .priors.tiling import TiledPrior

    prior_obj = prior if isinstance(prior, DiffusionPrior) else load_prior(prior, device, channels=1)
    prior_obj = prior_obj.to(device).eval()
    if prior_obj.channels != 1:
        raise ValueError(f"the prior expects {prior_obj.channels} channels; load it with channels=1 to adapt it")
    if tile_size is not None and not isinstance(prior_obj, TiledPrior):
        if tile_size % prior_obj.size_multiple:
            raise ValueError(f"tile_size must be a multiple of {prior_obj.size_multiple} (the prior's size multiple), got {tile_size}")
        prior_obj = TiledPrior(prior_obj, tile_size=tile_size, overlap=min(32, tile_size // 4))
    return prior_obj
