"""Train a noise-prediction UNet prior on a lab's own still images (DDPM loss, Ho et al. 2020).

Images are 2-D frames or stacks of frames; each stack is normalised by percentiles as in
``restore``, scaled to [-1, 1], and random patches with flips and 90-degree rotations are drawn.
AdamW, an exponential moving average (EMA) of the weights (the EMA weights are what is saved),
uniform timesteps of a 1000-step linear or cosine schedule, seeded. ``checkpoint.pt`` in the
output folder holds everything needed to resume; ``loss.csv`` logs the loss; ``references.json`` holds
the ring spectrum of the training images, which a blind estimate with this prior measures a spatial blur
against (:mod:`napari_svi.estimate_reference`).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .estimate_reference import write_training_reference
from .intensity import percentile_scale
from .priors.unet import UNet, UNetConfig, count_parameters
from .schedules import SCHEDULES, alphas_cumprod

PRIOR_FORMAT = "napari-svi-prior"
PRIOR_FORMAT_VERSION = 1


@dataclass
class TrainConfig:
    """Training settings; stored in the prior's ``config.json`` under ``"training"``."""

    steps: int = 4000
    batch_size: int = 16
    patch_size: int = 64
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    warmup_steps: int = 200
    schedule: str = "linear"
    seed: int = 0
    checkpoint_every: int = 250
    percentiles: tuple[float, float] = (0.1, 99.9)
    intensity_augment: bool = False
    unet: UNetConfig = field(default_factory=UNetConfig)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("steps", "batch_size", "patch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.patch_size % self.unet.size_multiple:
            raise ValueError(f"patch_size must be a multiple of {self.unet.size_multiple}, got {self.patch_size}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "unet"}
        d["percentiles"] = list(self.percentiles)
        return d


def prepare_frames(images: Sequence[np.ndarray], percentiles=(0.1, 99.9), min_size: int = 8) -> list[np.ndarray]:
    """Normalise each image or stack to [-1, 1] float32 frames of shape (H, W) (channel-less)."""
    frames: list[np.ndarray] = []
    for i, image in enumerate(images):
        a = np.asarray(image)
        if a.ndim < 2:
            raise ValueError(f"training image {i} must be 2-D or a stack of 2-D frames, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"training image {i} contains NaN or infinite values")
        scale = percentile_scale(a, percentiles, name=f"training image {i}")
        a = scale.to_unit(a) * 2 - 1
        a = a.reshape(-1, *a.shape[-2:])
        if min(a.shape[-2:]) < min_size:
            raise ValueError(f"training image {i} frames are {a.shape[-2:]}, smaller than {min_size} pixels")
        frames.extend(np.ascontiguousarray(f) for f in a)
    if not frames:
        raise ValueError("no training images given")
    return frames


class PatchSampler:
    """Random patches with random flips and 90-degree rotations from a list of (H, W) frames.

    With ``intensity=True`` each patch also gets a random gamma (``u -> u ** g`` on the [0, 1] scale,
    ``log g`` uniform in ``log 0.6 .. log 1.6``) and a random contrast (scaled towards the background
    by a factor in 0.6 .. 1), so the prior sees dim, bright, flat and contrasty versions of every structure.
    """

    def __init__(self, frames: list[np.ndarray], patch_size: int, rng: np.random.Generator, *, intensity: bool = False):
        self.frames = frames
        self.patch = patch_size
        self.rng = rng
        self.intensity = intensity
        small = [f.shape for f in frames if min(f.shape) < patch_size]
        if small:
            raise ValueError(f"patch_size {patch_size} is larger than training frames of shape {small[0]}")
        sizes = np.array([f.size for f in frames], dtype=np.float64)
        self.weights = sizes / sizes.sum()  # sample pixels uniformly, not frames

    def batch(self, n: int) -> torch.Tensor:
        out = np.empty((n, 1, self.patch, self.patch), dtype=np.float32)
        idx = self.rng.choice(len(self.frames), size=n, p=self.weights)
        for k, i in enumerate(idx):
            f = self.frames[i]
            y = self.rng.integers(0, f.shape[0] - self.patch + 1)
            x = self.rng.integers(0, f.shape[1] - self.patch + 1)
            p = f[y : y + self.patch, x : x + self.patch]
            p = np.rot90(p, self.rng.integers(4))
            if self.rng.integers(2):
                p = p[:, ::-1]
            if self.intensity:
                u = np.clip((p + 1) / 2, 0, None) ** np.exp(self.rng.uniform(np.log(0.6), np.log(1.6)))
                p = 2 * u * self.rng.uniform(0.6, 1.0) - 1
            out[k, 0] = p
        return torch.from_numpy(out)


def train(
    images: Sequence[np.ndarray],
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    resume: bool = True,
    precision: str = "auto",
    max_seconds: float | None = None,
    callback: Callable[[dict], bool | None] | None = None,
    data_sources: list[str] | None = None,
    init_weights: str | os.PathLike | None = None,
) -> Path:
    """Train a UNet prior on ``images`` and save it as a prior folder ``out_dir``.

    ``init_weights``: a ``weights.safetensors`` (or a prior folder holding one) to start from instead
    of a random initialisation (fine-tuning); ignored when a checkpoint is resumed.

    ``precision``: ``"float32"``, or ``"bfloat16"`` (the network's forward and backward under bf16
    autocast, weights, optimizer and EMA in float32; CUDA only). ``"auto"`` picks bfloat16 on a
    CUDA device that supports it and float32 elsewhere. On CUDA the network runs channels-last.
    ``max_seconds``: stop (saving a resumable checkpoint) once this call has trained that long.

    ``callback`` receives ``{"step", "steps", "loss", "seconds"}`` after every step; returning
    ``True`` stops training after saving a checkpoint (the run can be resumed later). Returns the
    folder. An existing ``checkpoint.pt`` with the same configuration is resumed; only ``steps`` and
    ``checkpoint_every`` may differ, so a finished run can be extended.
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    amp_dtype = _training_precision(precision, device)
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds!r}")
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "precision": "bfloat16 autocast" if amp_dtype is not None else "float32",
        "torch": torch.__version__,
    }
    frames = prepare_frames(images, config.percentiles, min_size=config.patch_size)
    write_training_reference(out, frames, data_sources)  # what plain "auto" measures a blur against with this prior

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = UNet(config.unet).to(device=device, memory_format=memory_format)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    abar = alphas_cumprod(config.schedule).to(device=device, dtype=torch.float32)
    start, elapsed = 0, 0.0

    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = _read_checkpoint(ckpt_path, device)
        if _resume_key(ckpt["config"]) != _resume_key(_config_record(config)):
            raise ValueError(f"{ckpt_path} was made with other training settings; use a new folder or --no-resume")
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        start, elapsed = int(ckpt["step"]), float(ckpt["seconds"])
        rng = np.random.default_rng([config.seed, start])
        torch.manual_seed(config.seed + start)

    if init_weights is not None and start == 0:
        state = _read_init_weights(init_weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"init_weights {init_weights} do not fit the UNet of this config: {str(err).splitlines()[0]}") from None
        ema.load_state_dict(model.state_dict())
    sampler = PatchSampler(frames, config.patch_size, rng, intensity=config.intensity_augment)
    log_path = out / "loss.csv"
    log_new = not log_path.exists() or start == 0
    log = open(log_path, "w" if log_new else "a", newline="")
    writer = csv.writer(log)
    if log_new:
        writer.writerow(["step", "loss", "seconds"])

    def save_checkpoint(step: int) -> None:
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "seconds": elapsed,
            "config": _config_record(config),
        }
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, ckpt_path)
        save_prior(ema, out, config, step=step, seconds=elapsed, data_sources=data_sources, machine=machine)

    model.train()
    t_call = time.perf_counter()
    t0 = t_call - elapsed
    step = start
    try:
        while step < config.steps:
            lr_scale = min(1.0, (step + 1) / max(config.warmup_steps, 1))
            for g in opt.param_groups:
                g["lr"] = config.learning_rate * lr_scale
            x0 = sampler.batch(config.batch_size).to(device, memory_format=memory_format, non_blocking=True)
            t = torch.randint(0, abar.shape[0], (x0.shape[0],), device=device)
            noise = torch.randn_like(x0)
            a = abar[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                eps = model(xt, t)
            loss = F.mse_loss(eps.float(), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
            step += 1
            elapsed = time.perf_counter() - t0
            loss_value = loss.item()
            writer.writerow([step, f"{loss_value:.6f}", f"{elapsed:.1f}"])
            stop = callback({"step": step, "steps": config.steps, "loss": loss_value, "seconds": elapsed}) if callback else None
            if max_seconds is not None and time.perf_counter() - t_call >= max_seconds:
                stop = True
            if step % config.checkpoint_every == 0 or step == config.steps or stop:
                log.flush()
                save_checkpoint(step)
            if stop:
                break
    finally:
        log.close()
    return out


def _read_init_weights(path: str | os.PathLike) -> dict:
    """The tensors of a prior's ``weights.safetensors`` (a file or the folder holding it)."""
    from safetensors.torch import load_file

    p = Path(path)
    p = p / "weights.safetensors" if p.is_dir() else p
    try:
        return load_file(str(p))
    except Exception as err:  # missing, truncated or not safetensors: report it as a bad argument
        raise ValueError(f"init_weights {p} cannot be read as safetensors weights ({type(err).__name__}: {err})") from None


def _training_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain float32)."""
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16', got {precision!r}")
    if precision == "auto":
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if use_bf16 else None
    if precision == "bfloat16":
        if device.type != "cuda":
            raise ValueError(f"precision 'bfloat16' needs a CUDA device, got {device}")
        return torch.bfloat16
    return None


def _config_record(config: TrainConfig) -> dict:
    return {"training": config.to_dict(), "unet": config.unet.to_dict()}


def _read_checkpoint(path: Path, device) -> dict:
    """The training checkpoint, or ``ValueError`` saying what to do (never torch's advice to unpickle it)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, damaged, or a pickle of other objects: torch raises several types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in first or "Weights only load failed" in first:
            first = "it holds objects other than tensors"
        raise ValueError(
            f"{path} cannot be read as a training checkpoint ({first}); it may be truncated by a crash: "
            "delete it, or pass --no-resume to start afresh"
        ) from None
    if not isinstance(ckpt, dict) or not {"config", "model", "ema", "optimizer", "step", "seconds"} <= set(ckpt):
        raise ValueError(f"{path} is not a napari-svi training checkpoint; delete it, or pass --no-resume")
    return ckpt


def _resume_key(record: dict) -> dict:
    """The part of a config record a resumed run must share: all but the step count and checkpoint interval."""
    training = {k: v for k, v in record["training"].items() if k not in ("steps", "checkpoint_every")}
    return {**record, "training": training}


def save_prior(
    model: UNet,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    *,
    step: int,
    seconds: float,
    data_sources: list[str] | None = None,
    machine: dict | None = None,
) -> Path:
    """Write ``config.json`` and ``weights.safetensors`` (atomically) for a trained UNet.

    ``machine`` (device, precision, torch version of the last training session) goes into the record.
    """
    from safetensors.torch import save_file

    from ._version import __version__
    from .io import process_umask

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out / "weights.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": PRIOR_FORMAT})
    os.chmod(tmp, 0o666 & ~process_umask())  # safetensors writes 0600; the weights follow the umask
    os.replace(tmp, out / "weights.safetensors")
    cfg = {
        "format": PRIOR_FORMAT,
        "format_version": PRIOR_FORMAT_VERSION,
        "architecture": "unet",
        "unet": config.unet.to_dict(),
        "schedule": config.schedule,
        "n_train_steps": 1000,
        "channels": config.unet.in_channels,
        "percentiles": list(config.percentiles),
        "training": {
            **config.to_dict(),
            "steps_done": step,
            "seconds": round(seconds, 1),
            "parameters": count_parameters(model),
            "data": list(data_sources or []),
            **({"machine": machine} if machine else {}),
            "napari_svi_version": __version__,
        },
    }
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(cfg, indent=2))
    os.replace(tmp, out / "config.json")
    return out
