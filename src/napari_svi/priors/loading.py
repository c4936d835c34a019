"""Load a diffusion prior from the bundled default, a folder or a checkpoint file.

Three checkpoint families are understood, recognised by what is on disk:

- a napari-svi prior folder: ``config.json`` (``"format": "napari-svi-prior"``) and
  ``weights.safetensors``, as written by ``napari_svi.training.save_prior``;
- a diffusers ``UNet2DModel`` folder (``config.json`` with ``"_class_name": "UNet2DModel"`` and
  ``diffusion_pytorch_model.safetensors``; a pipeline folder with ``unet/`` and ``scheduler/``
  works too); needs the optional ``diffusers`` package;
- a guided-diffusion (ADM) checkpoint, ``.pt``/``.pth`` or ``.safetensors``, e.g. the paper's
  ``256x256_diffusion_uncond.pt``. Settings a state dict cannot show (attention head layout,
  noise schedule, class label) may be given in a JSON file next to it with the same stem.

Nothing is downloaded, and pickled checkpoints are read with ``weights_only=True``: a
checkpoint can hold tensors, never code.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..schedules import SCHEDULES, alphas_cumprod, cosine_betas, linear_betas
from .adapters import DiffusersUNet, EpsChannels, adapt_channels
from .adm import ADMUNet, infer_adm_config, known_checkpoint_settings
from .base import DiffusionPrior
from .unet import UNet, UNetConfig

PRIOR_FORMAT = "napari-svi-prior"  # the same string as napari_svi.training.PRIOR_FORMAT
PRIOR_FORMAT_VERSION = 1
DEFAULT_PRIOR_DIR = Path(__file__).parent / "default"
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
ADM_SIDECAR_KEYS = (
    "num_heads", "num_head_channels", "num_heads_upsample", "use_new_attention_order",
    "noise_schedule", "diffusion_steps", "class_label",
)  # fmt: skip


def mps_available() -> bool:
    """Whether PyTorch sees Apple's Metal (MPS) GPU (``False`` on builds without the MPS backend)."""
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` as a ``torch.device``.

    ``"auto"`` takes a CUDA GPU when PyTorch sees one, else Apple's MPS GPU when present, else the CPU.
    """
    text = str(name).strip().lower() if isinstance(name, (str, torch.device)) else None
    if text is None or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps(:0)?", text):
        raise ValueError(f"device must be one of {', '.join(repr(d) for d in DEVICES)}; got {name!r}")
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    device = torch.device(text)
    if device.type == "mps" and not mps_available():
        raise ValueError(f"device {text!r} was asked for, but this PyTorch ({torch.__version__}) sees no Apple MPS GPU; "
                         "use 'cpu' or 'auto'")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {text!r} was asked for, but this PyTorch ({torch.__version__}) sees no CUDA GPU; "
                "use 'cpu' or 'auto'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def load_prior(
    spec: str | os.PathLike | DiffusionPrior = "default",
    device: str | torch.device = "cpu",
    *,
    channels: int | None = None,
) -> DiffusionPrior:
    """A :class:`DiffusionPrior` in eval mode on ``device``, without gradients.

    Parameters
    ----------
    spec : str, path or DiffusionPrior
        ``"default"`` (the prior bundled with napari-svi), a prior folder, a diffusers
        ``UNet2DModel`` folder, a guided-diffusion ``.pt``/``.pth``/``.safetensors`` file, or a
        prior object (only moved and adapted).
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    channels : int, optional
        Channels of the data; a prior with other channels is wrapped by
        :func:`~napari_svi.priors.adapters.adapt_channels`.

    Raises
    ------
    FileNotFoundError
        ``spec`` does not exist (or the bundled prior is missing from this installation).
    ValueError
        The files are corrupt, of another architecture, or do not match their configuration.
    ImportError
        A diffusers folder without the ``diffusers`` package installed.
    """
    dev = resolve_device(device)
    if isinstance(spec, DiffusionPrior):
        prior = spec
    else:
        prior = _load_path(_find(spec))
    prior = prior.to(dev).eval().requires_grad_(False)
    return prior if channels is None else adapt_channels(prior, channels)


def _find(spec: str | os.PathLike) -> Path:
    if isinstance(spec, str) and spec == "default":
        if not (DEFAULT_PRIOR_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"the bundled default prior is missing from this installation (expected {DEFAULT_PRIOR_DIR}"
                "/config.json and weights.safetensors); reinstall napari-svi or give a prior folder or checkpoint"
            )
        return DEFAULT_PRIOR_DIR
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"prior must be 'default', a path or a DiffusionPrior, got {type(spec).__name__}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"prior {str(spec)!r} not found: give 'default', a napari-svi prior folder, a diffusers UNet2DModel "
            "folder, or a guided-diffusion .pt/.safetensors checkpoint"
        )
    return path


def _load_path(path: Path) -> DiffusionPrior:
    if path.is_dir():
        return _load_folder(path)
    # the weights file inside a prior or diffusers folder stands for its folder
    if path.name in ("weights.safetensors", "diffusion_pytorch_model.safetensors") and (path.parent / "config.json").is_file():
        return _load_folder(path.parent)
    if path.suffix.lower() in (".pt", ".pth", ".ckpt", ".safetensors"):
        return _load_adm(path)
    raise ValueError(f"{path}: unknown prior file type {path.suffix!r}; expected a folder, .pt, .pth or .safetensors")


def _load_folder(folder: Path) -> DiffusionPrior:
    if (folder / "model_index.json").is_file() and (folder / "unet" / "config.json").is_file():
        return _load_diffusers(folder / "unet")  # a whole diffusers pipeline
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder} has no config.json: it is neither a napari-svi prior nor a diffusers UNet2DModel folder")
    cfg = _read_json(config_path)
    if cfg.get("format") == PRIOR_FORMAT:
        return _load_project(folder, cfg)
    if "_class_name" in cfg:
        if cfg["_class_name"] != "UNet2DModel":
            raise ValueError(
                f"{config_path}: diffusers model class {cfg['_class_name']!r} is not supported; "
                "only unconditional UNet2DModel image priors are"
            )
        return _load_diffusers(folder)
    raise ValueError(
        f"{config_path} is not a napari-svi prior config (format {cfg.get('format')!r}, expected "
        f"{PRIOR_FORMAT!r}) nor a diffusers UNet2DModel config"
    )


def _load_project(folder: Path, cfg: dict) -> DiffusionPrior:
    config_path, weights_path = folder / "config.json", folder / "weights.safetensors"
    if int(cfg.get("format_version", 1)) > PRIOR_FORMAT_VERSION:
        raise ValueError(f"{config_path}: format version {cfg['format_version']} is newer than this napari-svi reads")
    if cfg.get("architecture", "unet") != "unet":
        raise ValueError(f"{config_path}: architecture {cfg['architecture']!r} is not supported (expected 'unet')")
    try:
        unet_cfg = UNetConfig.from_dict(cfg["unet"])
        n_train = int(cfg.get("n_train_steps", 1000))
        schedule = cfg["schedule"]
        abar = alphas_cumprod(schedule, n_train)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: invalid prior configuration ({_describe(err)})") from None
    model = UNet(unet_cfg)
    _load_state(model, _read_safetensors(weights_path), weights_path, config_path)
    network = EpsChannels(model, unet_cfg.in_channels) if unet_cfg.out_channels != unet_cfg.in_channels else model
    return DiffusionPrior(
        network, abar, channels=unet_cfg.in_channels, size_multiple=unet_cfg.size_multiple, name=folder.name, info=cfg
    )


def _load_diffusers(folder: Path) -> DiffusionPrior:
    try:
        from diffusers import UNet2DModel
    except ImportError as err:
        raise ImportError(
            f"{folder} is a diffusers UNet2DModel; loading it needs the optional diffusers package: "
            "pip install napari-svi[diffusers]"
        ) from err
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{folder}: diffusion_pytorch_model.safetensors is missing (pickled .bin weights are not loaded)")
    cfg = _read_json(folder / "config.json")
    if cfg.get("num_class_embeds") or cfg.get("class_embed_type"):
        raise ValueError(f"{folder / 'config.json'}: class-conditional UNet2DModels are not supported")
    sched_path = next(
        (p for p in (folder / "scheduler_config.json", folder.parent / "scheduler" / "scheduler_config.json") if p.is_file()),
        None,
    )
    sched = _read_json(sched_path) if sched_path else {}
    abar = _diffusers_alphas_cumprod(sched, sched_path or folder)
    try:
        unet = UNet2DModel.from_pretrained(folder, use_safetensors=True, local_files_only=True)
    except Exception as err:  # diffusers raises many types for bad files
        raise ValueError(f"{weights} could not be loaded as the UNet2DModel of {folder / 'config.json'}: {_describe(err)}") from None
    c = int(unet.config.in_channels)
    if int(unet.config.out_channels) not in (c, 2 * c):
        raise ValueError(f"{folder / 'config.json'}: out_channels {unet.config.out_channels} is neither {c} nor {2 * c}")
    prediction = sched.get("prediction_type", "epsilon")
    if prediction not in DiffusersUNet.PREDICTION_TYPES:
        raise ValueError(f"{sched_path}: prediction_type {prediction!r} is not one of {DiffusersUNet.PREDICTION_TYPES}")
    return DiffusionPrior(
        DiffusersUNet(unet, abar, prediction, c),
        abar,
        channels=c,
        size_multiple=2 ** (len(unet.config.block_out_channels) - 1),
        name=folder.name if folder.name != "unet" else folder.parent.name,
        info={"format": "diffusers", "unet": dict(unet.config), "scheduler": sched},
    )


def _diffusers_alphas_cumprod(sched: dict, where: Path) -> torch.Tensor:
    """``alpha_bar`` of a diffusers DDPM/DDIM scheduler config (linear when there is none)."""
    n = int(sched.get("num_train_timesteps", 1000))
    start, end = float(sched.get("beta_start", 1e-4)), float(sched.get("beta_end", 0.02))
    kind = sched.get("beta_schedule", "linear")
    if sched.get("trained_betas"):
        betas = torch.tensor(sched["trained_betas"], dtype=torch.float64)
    elif kind == "linear":  # diffusers does not rescale by 1000 / n as guided-diffusion does
        betas = linear_betas(n, start * n / 1000, end * n / 1000)
    elif kind == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    elif kind == "squaredcos_cap_v2":
        betas = cosine_betas(n)
    else:
        raise ValueError(f"{where}: beta_schedule {kind!r} is not supported (linear, scaled_linear, squaredcos_cap_v2)")
    return torch.cumprod(1.0 - betas, dim=0)


def _load_adm(path: Path) -> DiffusionPrior:
    state = _read_state_dict(path)
    settings = {**known_checkpoint_settings(path.stem), **_read_adm_sidecar(path)}
    schedule = settings.pop("noise_schedule", "linear")
    n_train = int(settings.pop("diffusion_steps", 1000))
    class_label = settings.pop("class_label", None)
    if schedule not in SCHEDULES:
        raise ValueError(f"{path.with_suffix('.json')}: noise_schedule must be one of {SCHEDULES}, got {schedule!r}")
    if any(k.startswith(("time_mlp.", "stem.")) for k in state):
        raise ValueError(f"{path} is a napari-svi training checkpoint, not a prior: load its folder instead")
    try:
        cfg = infer_adm_config(state, **settings)
    except ValueError as err:
        raise ValueError(f"{path} is not a guided-diffusion (ADM) UNet checkpoint: {err}") from None
    if cfg.num_classes is not None and class_label is None:
        raise ValueError(
            f"{path} is class-conditional ({cfg.num_classes} classes): set \"class_label\" in {path.with_suffix('.json')}"
        )
    with torch.device("meta"):  # no random initialisation of (up to) half a billion parameters
        model = ADMUNet(cfg, class_label=class_label)
    _load_state(model, state, path, None, assign=True)
    c = cfg.in_channels
    if cfg.out_channels not in (c, 2 * c):
        raise ValueError(f"{path}: {cfg.out_channels} output channels for {c} input channels is neither eps nor eps+sigma")
    return DiffusionPrior(
        EpsChannels(model, c) if cfg.learn_sigma else model,
        alphas_cumprod(schedule, n_train),
        channels=c,
        size_multiple=cfg.size_multiple,
        name=path.stem,
        info={"format": "guided-diffusion", "file": str(path), "adm": cfg.to_dict(), "schedule": schedule},
    )


def _read_adm_sidecar(path: Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    settings = _read_json(sidecar)
    unknown = set(settings) - set(ADM_SIDECAR_KEYS)
    if unknown:
        raise ValueError(f"{sidecar}: unknown settings {sorted(unknown)}; allowed: {list(ADM_SIDECAR_KEYS)}")
    return settings


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pt`` file (never unpickling objects), as float32."""
    if path.suffix.lower() == ".safetensors":
        state: Any = _read_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ValueError(
                f"{path} is not a readable tensor checkpoint: it holds Python objects besides tensors, and "
                "napari-svi never unpickles those (weights_only=True); save only the state dict"
            ) from None
        except Exception as err:  # corrupt zip or truncated file
            raise ValueError(f"{path} is not a readable tensor checkpoint: {_describe(err)}") from None
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [state[k] for k in ("ema", "state_dict", "model", "ema_model", "model_state_dict") if isinstance(state.get(k), dict)]
        state = inner[0] if inner else state
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    prefix = "module."  # saved from DistributedDataParallel
    return {
        (k[len(prefix) :] if k.startswith(prefix) else k): (v.float() if v.is_floating_point() else v)
        for k, v in state.items()
    }


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} is missing")
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is corrupt or not a safetensors file: {_describe(err)}") from None


def _load_state(model: torch.nn.Module, state: dict, weights: Path, config: Path | None, assign: bool = False) -> None:
    """``load_state_dict(strict=True)``, with a ``ValueError`` naming the file and what did not match."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} ({len(items)}): {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if items
        ]
        against = f"the architecture in {config}" if config else "the architecture read from it"
        raise ValueError(f"{weights} does not match {against}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True, assign=assign)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON: {_describe(err)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


__all__ = ["DEFAULT_PRIOR_DIR", "DEVICES", "PRIOR_FORMAT", "load_prior", "mps_available", "resolve_device"]
