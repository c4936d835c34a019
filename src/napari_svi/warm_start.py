"""How each piece is solved: the sampler's warm start from a classical estimate, and the blend of the two.

- **Warm start.** Chung, Sim & Ye ("Come-Closer-Diffuse-Faster", CVPR 2022) show that a reverse
  diffusion started from a good estimate diffused forward to an intermediate timestep ``t0`` reaches
  the same quality in far fewer steps than one started from pure noise. The estimate is TV-regularised
  least squares with the piece's own operator, its weight chosen by a rule per forward model
  (:func:`tv_rule`: held-out entries, SURE or the discrepancy principle); the sampler then takes ``steps`` steps from
  ``t0`` down to 0 (:func:`napari_svi.schedules.partial_timesteps`). ``start="noise"`` is the paper's start.
- **Blend by held-out data** (``blend="cv"``). An image prior helps most where it knows the structure
  and can hurt where it does not (a prior trained on nuclei only beat TV on nuclei and lost on actin,
  mitochondria and cell walls; the bundled prior, fine-tuned on those too, takes weights of 0.14-0.47 on
  them in the realistic suite, but still 0 under a spatial blur). The restore is therefore
  ``x_tv + w_rl (x_rl - x_tv) + w (x_svi - x_tv)``, with Richardson-Lucy as a third estimate where
  the operator is nonnegative and keeps the frame size (not with downsampling), and the weights
  (``>= 0``, sum ``<= 1``, :mod:`napari_svi.blend`; per 64-px region of a larger frame,
  :class:`napari_svi.blend.RegionalBlend`) chosen by cross-validation: the piece is solved once more with
  :data:`HOLDOUT_FRACTION` of its measured entries held out, and the weights are the least-squares
  fit of the held-out entries (:func:`blend_weights`). The sampler's share is then refitted per band of
  temporal frequency (:data:`BAND_EDGES`, :func:`band_weights`): the measurement shows the slow part of a
  correction and hides the fast part a temporal PSF damps, so one weight is set by the part where the
  prior helps least. The same held-out entries stop Richardson-Lucy
  (:func:`napari_svi.classical.holdout_rl`: the iteration count that best predicts them, then as many
  iterations with all the data). With one sample the held-out run is also the result: its correction
  of its own TV start is added to the full classical estimate (:data:`REUSE_HELD_OUT`), so a piece
  costs one sampler run; with several samples, one more run than the samples.
- **Frames without data** (frame interpolation) are, in the result, the linear interpolation in time
  of the restored frames around them (:func:`napari_svi.sampler.fill_unseen` at weight
  :data:`napari_svi.sampler.INTERPOLATE`): the blend's weights are fitted on measured frames only and
  say nothing there.
Noiseless data give no noise level for the TV weight: such pieces start from noise and are not blended.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import torch

from . import blend as _blend
from .blend import BAND_EDGES, RegionalBlend, apply_band, band_weights, blend_weights, temporal_bands
from .classical import (
    discrepancy_tv,
    holdout_rl,
    holdout_tv,
    interpolated_problem,
    measured_entries,
    richardson_lucy,
    sure_tv,
    tv_admm,
)
from .operators.base import ComposedOperator
from .operators.spatial import Downsample, Mask, SpatialConvolution
from .operators.temporal import TemporalOperator
from .sampler import INTERPOLATE, fill_unseen, svi_steps, unseen_frames
from .validation import check_positive_int

START_KINDS = ("tv", "noise")
BLEND_KINDS = ("cv", "none")
DEFAULT_START, DEFAULT_BLEND = "tv", "cv"
#: The warm start's timestep (of 1000) and the steps a restore takes by default from there.
DEFAULT_START_T = 200
DEFAULT_WARM_STEPS = 5
#: Fraction of a piece's measured entries held out to choose the blend weight, and the seed of that draw.
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 7
#: TV-ADMM iterations of the full solve, from the held-out solve's estimate at the chosen weight.
TV_ITERATIONS = 30
#: One sample: the held-out run's correction of its TV start is the sampler's part of the result (no second run).
REUSE_HELD_OUT = True
#: Folds (of :data:`HOLDOUT_FRACTION` each) whose held-out errors choose the TV weight (rule "held-out").
TV_FOLDS = 3
#: How a piece's TV weight is chosen (:func:`tv_rule`).
TV_RULES = ("held-out", "sure", "discrepancy")
#: Recorded (``metadata["sampler_weight_zero"]``) when every piece's blend gave the sampler no weight.
SAMPLER_WEIGHT_ZERO = ("the held-out blend gave the diffusion sampler weight 0 in every piece: the result is the "
                       "classical estimate (TV / Richardson-Lucy), and the samples' spread (std, uncertainty) is zero "
                       "because the samples are not used, not because the result is certain")


def default_steps(start: str) -> int:
    """Steps of a restore that does not set them: :data:`DEFAULT_WARM_STEPS` from the warm start, 20 from noise."""
    return DEFAULT_WARM_STEPS if start == "tv" else 20


def check_start(start, start_t, steps, blend) -> None:
    """Refuse a start or blend that is not one of the kinds, or a ``start_t`` the steps do not fit in."""
    if start not in START_KINDS:
        raise ValueError(f"start must be one of {START_KINDS}, got {start!r}")
    if blend not in BLEND_KINDS:
        raise ValueError(f"blend must be one of {BLEND_KINDS}, got {blend!r}")
    check_positive_int(start_t, "start_t", minimum=1)
    if start_t > 999:
        raise ValueError(f"start_t must be a timestep in 1..999, got {start_t}")
    if start == "tv" and steps > start_t + 1:
        raise ValueError(f"steps ({steps}) must be at most start_t + 1 ({start_t + 1}) with start='tv'")


def tv_rule(operator) -> str:
    """How the TV weight of a piece with this forward model is chosen (:data:`TV_RULES`): by the
    discrepancy principle with a spatial PSF, by held-out entries with a temporal PSF (each entry then
    shares its voxels with others, so a held-out entry tests the denoising), else by SURE (every entry
    sees one voxel: noise, masks, missing frames)."""
    parts = _parts(operator)
    if any(isinstance(p, SpatialConvolution) for p in parts):
        return "discrepancy"
    blurs = any(isinstance(p, TemporalOperator) and bool(((np.abs(p.matrix) > 0).sum(axis=1) > 1).any())
                for p in parts)
    return "held-out" if blurs else "sure"


def _parts(operator) -> tuple:
    """The operators a forward model is composed of (itself when it is not a composition)."""
    return operator.operators if isinstance(operator, ComposedOperator) else (operator,)


def _downsamples(operator) -> bool:
    """Whether the forward model bins pixels (its measurement grid is coarser than the frame's)."""
    return any(isinstance(p, Downsample) for p in _parts(operator))


class PieceSolver:
    """Solves every piece (all its samples) the way ``start`` and ``blend`` say, and keeps a record."""

    def __init__(self, start: str, start_t: int, blend: str):
        self.start, self.start_t, self.blend = start, int(start_t), blend
        self.reuse_held_out = REUSE_HELD_OUT
        self.tv_weights: list[float] = []
        self.tv_rules: list[str] = []
        self.blend_weights: list[float] = []
        self.band_weights: list[list[float]] = []
        self.rl_weights: list[float] = []
        self.rl_iterations: list[int] = []
        self.region_weights: list[list[dict]] = []
        self.region_max: list[float | None] = []  # per blended piece, the largest regional sampler weight (None: not regional)
        self.from_noise = 0

    def runs(self, noise_sigma: float | None, samples: int) -> int:
        """Sampler runs per piece: the samples, and one held-out run when blending (that run is the sample
        itself when there is one sample, :meth:`reuse`)."""
        if self.reuse(noise_sigma, samples):
            return 1
        return samples + int(self._warm(noise_sigma) and self.blend == "cv")

    def reuse(self, noise_sigma: float | None, samples: int) -> bool:
        """Whether the held-out run also gives the result: blending, one sample, and :attr:`reuse_held_out`."""
        return self.reuse_held_out and samples == 1 and self._warm(noise_sigma) and self.blend == "cv"

    def _warm(self, noise_sigma) -> bool:
        return self.start == "tv" and bool(noise_sigma)

    def solve(self, prior, y: torch.Tensor, operator, noise_sigma: float | None, samples: int,
              kwargs: Callable[[int], dict]) -> Iterator[tuple[int, dict]]:
        """Yield ``(sample, info)`` after every sampler step of this piece; ``info["final"]`` marks each
        sample's estimate (``info["denoised"]``, blended); ``kwargs(s)`` are sample ``s``'s sampler settings."""
        if not self._warm(noise_sigma):
            self.from_noise += self.start == "tv"
            for s in range(samples):
                for info in svi_steps(prior, y, operator, **kwargs(s)):
                    yield s, {**info, "final": info["i"] + 1 == info["steps"]}
            return
        w_rl, w, band_w = 0.0, 1.0, None
        reuse = self.reuse(noise_sigma, samples)
        out = tuple(operator.out_shape)
        seen = (operator.observed(torch.ones_like(y)) != 0).all(dim=1).cpu().numpy()  # (T, H, W)
        # fold k holds out the entries drawn in [k f, (k + 1) f); the piece's own unobserved entries stay out too
        draw = np.random.default_rng(HOLDOUT_SEED).random(seen.shape)
        folds = []
        for k in range(TV_FOLDS):
            drawn = (draw >= k * HOLDOUT_FRACTION) & (draw < (k + 1) * HOLDOUT_FRACTION)
            folds.append((Mask(seen & ~drawn, out) @ operator, torch.from_numpy(seen & drawn)[:, None].to(y.device).expand(out)))
        del draw, drawn, seen  # float64 and bool per entry of the piece, not needed past the folds
        held_out, held = folds[0]  # the blend's held-out solve
        tv_h, x_tv = self._tv(y, operator, folds, noise_sigma)
        del folds  # the other folds served the TV weight only
        if self.blend == "cv":
            # with fewer pixels per frame than the stack (downsampling) the held-out block means cannot tell an
            # early-stopped, smooth Richardson-Lucy from detail: it took half the weight and cost 0.4 dB on sr4
            # (a Downsample part, not a padded input: frames padded to the network's multiple keep their RL)
            rl_h = None if _downsamples(operator) else holdout_rl(y, held_out, operator, held)
            for info in svi_steps(prior, y, held_out, start=tv_h, start_t=self.start_t, **kwargs(0)):
                if not (reuse and info["i"] + 1 == info["steps"]):  # the reused run's last step comes blended
                    yield 0, {**info, "final": False}
            others = [info["denoised"]] + ([] if rl_h is None else [rl_h[0]])
            weights = blend_weights(operator.observed(y), operator, held, tv_h, others)
            w, w_rl = weights[0], (weights[1] if rl_h is not None else 0.0)
            self.blend_weights.append(round(w, 4))
            if BAND_EDGES:
                bands = temporal_bands(tv_h.shape[0], device=y.device)
                base_h = tv_h if w_rl == 0 else tv_h + w_rl * (rl_h[0] - tv_h)
                band_w = band_weights(operator.observed(y), operator, held, base_h, others[0] - tv_h, bands, 1.0 - w_rl)
                self.band_weights.append([round(v, 4) for v in band_w])
            self.rl_weights.append(round(w_rl, 4))
            if rl_h is not None:
                self.rl_iterations.append(rl_h[1])
            regional = self._regional(operator, y, held, tv_h, others[0], rl_h, bands if BAND_EDGES else None, w_rl)
        else:
            regional = None
        if regional is not None:  # the weights as maps over the frame, one set fitted per region
            w = regional.weight_map("svi", y.device)  # Richardson-Lucy's share stays the piece's
            band_w = None if band_w is None else [regional.weight_map(b, y.device) for b in range(len(bands))]
        if self.blend == "cv":
            self.region_max.append(None if regional is None else max(float(v.max()) for v in (band_w or [w])))
        x_cl = x_tv
        if w_rl > 0:
            x_cl = x_tv + w_rl * (richardson_lucy(operator.observed(y), operator, rl_h[1]) - x_tv)
        unseen = unseen_frames(operator)

        def weighted(correction):
            if band_w is None:
                return w * correction
            used = [(wb, b) for wb, b in zip(band_w, bands, strict=True) if float(wb.max() if torch.is_tensor(wb) else wb) > 0]
            return sum(wb * apply_band(b, correction) for wb, b in used) if used else torch.zeros_like(correction)

        def blended(correction):
            if unseen is not None and self.tv_rules[-1] == "sure":
                # frames without data keep the TV estimate of the interpolated measurement, plus the
                # interpolation of the sampler's correction around them
                return x_cl + weighted(fill_unseen(correction, unseen.to(x_tv.device), INTERPOLATE))
            x = x_cl + weighted(correction)
            # frames without data: the interpolation of the restored frames
            return x if unseen is None else fill_unseen(x, unseen.to(x.device), INTERPOLATE)

        if reuse:  # the held-out run's correction of its own TV start, added to the full classical estimate
            yield 0, {**info, "denoised": blended(info["denoised"] - tv_h), "final": True}
            return
        for s in range(samples):
            for info in svi_steps(prior, y, operator, start=x_tv, start_t=self.start_t, **kwargs(s)):
                final = info["i"] + 1 == info["steps"]
                yield s, {**info, "final": final, **({"denoised": blended(info["denoised"] - x_tv)} if final else {})}

    def _regional(self, operator, y, held, tv_h, svi_h, rl_h, bands, w_rl) -> RegionalBlend | None:
        """Blend weights per :data:`napari_svi.blend.BLEND_REGION`-pixel region of a frame larger than one region
        (not with downsampling: the held-out block means do not sit on the frame's pixels), recorded."""
        region = _blend.BLEND_REGION
        if region is None or max(tuple(operator.out_shape)[-2:]) <= region or _downsamples(operator):
            return None
        out = RegionalBlend(operator.observed(y), operator, held, tv_h, svi_h, None if rl_h is None else rl_h[0],
                            bands, w_rl, region)
        self.region_weights.append(out.record())
        return out

    def _tv(self, y, operator, folds, noise_sigma) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The TV estimates without and with the held-out entries; the weight by :func:`tv_rule`, recorded.

        Measured on the realistic suite (benchmarks/results/suite), each rule against the others:
        - *held-out* (:func:`napari_svi.classical.holdout_tv`, then scaled to all the data): within 0.0-0.4 dB
          of the best fixed weight on box5, where the discrepancy principle smooths 2-4x too much;
        - *SURE* (:func:`napari_svi.classical.sure_tv`): within 0.1 dB of the best fixed weight on interp2, where
          held-out entries (an inpainting test) pick the smallest weight and the discrepancy principle loses 1-2 dB;
        - *discrepancy* (:func:`napari_svi.classical.discrepancy_tv`) with a spatial PSF: there the held-out
          entries cannot tell TV at the weight they pick from Richardson-Lucy (RL is 3 dB better on the actin
          clip), and the discrepancy principle's smoother TV lets the blend pick RL (with the held-out weight:
          -1.2 dB on box3+blur1.5, -0.5 dB on box3+airy).
        """
        rule = tv_rule(operator)
        held_out = folds[0][0]
        observed = operator.observed(y)
        if rule == "discrepancy":
            tv_h = discrepancy_tv(y, held_out, noise_sigma)[0] if self.blend == "cv" else None
            x_tv, weight, _ = discrepancy_tv(y, operator, noise_sigma)
        elif rule == "held-out":
            tv_h, weight_h = holdout_tv(y, folds, operator)
            # the same balance with all the data: the data term grows with the entries it sums
            weight = weight_h * measured_entries(operator, y) / max(measured_entries(held_out, y), 1.0)
            x_tv = tv_admm(observed, operator, weight, TV_ITERATIONS, x0=tv_h)
        else:  # with unseen frames, on the interpolated measurement (classical.interpolated_problem)
            interpolate = unseen_frames(operator) is not None
            y_p, op_p = interpolated_problem(y, operator) if interpolate else (y, operator)
            x_sure, weight = sure_tv(y_p, op_p, noise_sigma)
            x_tv = tv_admm(op_p.observed(y_p), op_p, weight, TV_ITERATIONS, x0=x_sure)
            tv_h = None
            if self.blend == "cv":
                y_h, op_h = interpolated_problem(y, held_out) if interpolate else (y, held_out)
                tv_h = tv_admm(op_h.observed(y_h), op_h, weight, TV_ITERATIONS, x0=x_sure)
        self.tv_weights.append(round(weight, 6))
        self.tv_rules.append(rule)
        return tv_h, x_tv

    def record(self) -> dict:
        """The setting, for the output's parameter record (the same before and after the work)."""
        if self.start == "noise":
            return {"kind": "noise", "blend": "none"}
        return {"kind": "tv", "start_t": self.start_t, "method": "TV-ADMM, weight by tv_rule: held-out entries, SURE or the discrepancy principle",
                "blend": self.blend, **({"holdout_fraction": HOLDOUT_FRACTION} if self.blend == "cv" else {})}

    def outcome(self) -> dict:
        """What the pieces used: TV weights, blend weights, and how many started from noise (noiseless)."""
        out = {}
        if self.tv_weights:
            out["start_tv_weight"] = self.tv_weights
            out["start_tv_rule"] = self.tv_rules
        if self.blend_weights:
            out["blend_weight"] = self.blend_weights
            if self.band_weights:
                out["blend_band_weights"] = self.band_weights
                out["blend_band_edges"] = list(BAND_EDGES)
            applied = [max(b) for b in self.band_weights] if self.band_weights else list(self.blend_weights)
            applied = [a if r is None else r for a, r in itertools.zip_longest(applied, self.region_max[: len(applied)])]
            if max(applied) == 0:
                out["sampler_weight_zero"] = SAMPLER_WEIGHT_ZERO
            out["blend_rl_weight"] = self.rl_weights
        if self.rl_iterations:
            out["blend_rl_iterations"] = self.rl_iterations
        if self.region_weights:
            out["blend_region_px"] = _blend.BLEND_REGION
            out["blend_region_weights"] = self.region_weights
        if self.from_noise:
            out["start_from_noise"] = f"{self.from_noise} noiseless piece(s): no noise level to set the TV weight"
        return out
