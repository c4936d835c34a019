"""The guided-diffusion ("ADM") UNet of Dhariwal & Nichol (2021), the prior used by Kwon & Ye.

Written from the published model configuration so that the official checkpoints (for example
``256x256_diffusion_uncond.pt``) load with their own parameter names: ``time_embed.*``,
``input_blocks.*``, ``middle_block.*``, ``output_blocks.*``, ``out.*``. Only the 2-D,
inference-relevant part is here (no gradient checkpointing, no fp16 weight conversion).

``infer_adm_config`` reads the architecture back from a state dict's keys and shapes; the
attention head layout and the noise schedule are not visible there and come from defaults of the
paper's 256x256 model unless the caller overrides them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .unet import timestep_embedding

_SPECS = {"128x128_diffusion": {"num_heads": 4, "num_head_channels": -1},
          "64x64_diffusion": {"use_new_attention_order": True}}  # fmt: skip


@dataclass
class ADMConfig:
    """Arguments of guided-diffusion's ``UNetModel``; defaults are the 256x256 unconditional model.

    ``attention_resolutions`` holds downsampling factors ``ds`` (8, 16, 32), not the image sizes
    of the command-line flag ``--attention_resolutions 32,16,8`` (``ds = image_size // res``).
    """

    in_channels: int = 3
    model_channels: int = 256
    out_channels: int = 6
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (8, 16, 32)
    channel_mult: tuple[float, ...] = (1, 1, 2, 2, 4, 4)
    num_heads: int = 1
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_new_attention_order: bool = False
    num_classes: int | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.attention_resolutions = tuple(int(d) for d in self.attention_resolutions)
        self.channel_mult = tuple(int(m) if float(m).is_integer() else float(m) for m in self.channel_mult)

    @property
    def learn_sigma(self) -> bool:
        """True when the network also outputs the variance (``out_channels = 2 in_channels``)."""
        return self.out_channels == 2 * self.in_channels

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attention_resolutions"] = list(self.attention_resolutions)
        d["channel_mult"] = list(self.channel_mult)
        return d


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in float32, as in guided-diffusion's ``normalization``."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class TimestepSequential(nn.Sequential):
    """``nn.Sequential`` that hands the timestep embedding to the residual blocks in it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Strided 3x3 convolution (used when ``resblock_updown`` is False); key ``op``."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling then a 3x3 convolution; key ``conv``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(nn.Module):
    """Residual block with timestep embedding (FiLM scale-shift or addition), optional up/down."""

    def __init__(self, ch_in: int, emb_dim: int, ch_out: int, cfg: ADMConfig, up: bool = False, down: bool = False):
        super().__init__()
        self.scale_shift = cfg.use_scale_shift_norm
        self.resample = "up" if up else "down" if down else None
        self.in_layers = nn.Sequential(GroupNorm32(ch_in), nn.SiLU(), nn.Conv2d(ch_in, ch_out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * ch_out if self.scale_shift else ch_out))
        self.out_layers = nn.Sequential(
            GroupNorm32(ch_out), nn.SiLU(), nn.Dropout(cfg.dropout), nn.Conv2d(ch_out, ch_out, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if ch_in == ch_out else nn.Conv2d(ch_in, ch_out, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2) if self.resample == "down" else x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # resampling sits between the activation and the first convolution, on both paths
        h = self.in_layers[2](self._resample(self.in_layers[:2](x)))
        x = self._resample(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels, 1-D convolutions ``qkv`` and ``proj_out``.

    guided-diffusion has two head layouts of the ``qkv`` channels: legacy (split heads, then
    q/k/v; ``QKVAttentionLegacy``) and new (split q/k/v, then heads; ``use_new_attention_order``).
    """

    def __init__(self, channels: int, heads: int, new_order: bool):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels {channels} are not divisible by {heads} heads")
        self.heads, self.new_order = heads, new_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        d, n = c // self.heads, x.shape[-1]
        if self.new_order:
            q, k, v = (part.reshape(b * self.heads, d, n) for part in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * self.heads, 3 * d, n).split(d, dim=1)
        # softmax(q^T k / sqrt(d)) v, the same product guided-diffusion forms with two einsums
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = self.proj_out(a.transpose(1, 2).reshape(b, c, n))
        return (x + h).reshape(b, c, *spatial)


class ADMUNet(nn.Module):
    """guided-diffusion ``UNetModel``: ``forward(x, t) -> (B, out_channels, H, W)``.

    For learned-sigma models the first ``in_channels`` outputs are eps, the rest the variance
    interpolation; :class:`napari_svi.priors.adapters.EpsChannels` keeps the eps part.
    ``class_label`` is used for class-conditional models when ``forward`` gets no labels.
    """

    def __init__(self, config: ADMConfig | None = None, class_label: int | None = None):
        super().__init__()
        self.config = cfg = config or ADMConfig()
        self.class_label = class_label
        mc, emb_dim = cfg.model_channels, 4 * cfg.model_channels
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample

        def attention(ch: int, heads: int) -> AttentionBlock:
            n = heads if cfg.num_head_channels == -1 else ch // cfg.num_head_channels
            return AttentionBlock(ch, n, cfg.use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, emb_dim)
        ch = input_ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chs, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, int(mult * mc), cfg)]
                ch = int(mult * mc)
                if ds in cfg.attention_resolutions:
                    layers.append(attention(ch, cfg.num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chs.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = ResBlock(ch, emb_dim, ch, cfg, down=True) if cfg.resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_chs.append(ch)
                ds *= 2
        self.middle_block = TimestepSequential(
            ResBlock(ch, emb_dim, ch, cfg), attention(ch, cfg.num_heads), ResBlock(ch, emb_dim, ch, cfg)
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_chs.pop(), emb_dim, int(mc * mult), cfg)]
                ch = int(mc * mult)
                if ds in cfg.attention_resolutions:
                    layers.append(attention(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, emb_dim, ch, cfg, up=True) if cfg.resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1))

    @property
    def size_multiple(self) -> int:
        return self.config.size_multiple

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        m = self.size_multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"ADM input height and width must be multiples of {m}, got {tuple(x.shape[-2:])}")
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(x.dtype))
        if self.config.num_classes is not None:
            if y is None:
                if self.class_label is None:
                    raise ValueError("this ADM model is class-conditional: give a class label")
                y = torch.full((x.shape[0],), self.class_label, dtype=torch.long, device=x.device)
            emb = emb + self.label_emb(y)
        hs = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def infer_adm_config(state_dict: dict[str, torch.Tensor], **overrides: Any) -> ADMConfig:
    """Architecture of a guided-diffusion ``UNetModel`` state dict, from its keys and shapes.

    Inferred: channels in/out, ``model_channels``, ``channel_mult``, ``num_res_blocks``, attention
    levels, scale-shift norm, ``resblock_updown``, number of classes. Not visible in a state dict
    and taken from ``overrides`` or the 256x256 defaults: ``num_heads``, ``num_head_channels``,
    ``num_heads_upsample``, ``use_new_attention_order``. Raises ``ValueError`` on other layouts.
    """
    sd = state_dict
    for key in ("time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight"):
        if key not in sd:
            raise ValueError(f"not a guided-diffusion UNet state dict: key {key!r} is missing")
    mc = sd["time_embed.0.weight"].shape[1]
    n_out = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("output_blocks.")), default=-1)
    # an output block that upsamples holds a second ResBlock (in_layers) or an Upsample conv after position 0
    ups = {int(k.split(".")[1]) for k in sd if k.startswith("output_blocks.") and int(k.split(".")[2]) > 0
           and (".in_layers." in k or k.endswith(".conv.weight"))}  # fmt: skip
    levels = len(ups) + 1
    if n_out < levels or n_out % levels:
        raise ValueError(f"cannot read the level layout: {n_out} output blocks, {levels} levels")
    nrb = n_out // levels - 1

    def first_block(level: int) -> int:
        return 1 + level * (nrb + 1)

    widths = []
    for level in range(levels):
        key = f"input_blocks.{first_block(level)}.0.out_layers.3.weight"
        if key not in sd:
            raise ValueError(f"cannot read the level layout: key {key!r} is missing")
        widths.append(sd[key].shape[0])
    attention = tuple(
        2**level for level in range(levels)
        if any(f"input_blocks.{first_block(level) + j}.1.qkv.weight" in sd for j in range(nrb))
    )  # fmt: skip
    found = dict(
        in_channels=sd["input_blocks.0.0.weight"].shape[1],
        model_channels=mc,
        out_channels=sd["out.2.weight"].shape[0],
        num_res_blocks=nrb,
        attention_resolutions=attention,
        channel_mult=tuple(w / mc for w in widths),
        use_scale_shift_norm=sd["input_blocks.1.0.emb_layers.1.weight"].shape[0] == 2 * widths[0],
        resblock_updown=not any(k.endswith(".op.weight") for k in sd),
        num_classes=sd["label_emb.weight"].shape[0] if "label_emb.weight" in sd else None,
    )
    allowed = {"num_heads", "num_head_channels", "num_heads_upsample", "use_new_attention_order"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"unknown ADM settings {sorted(unknown)}; allowed: {sorted(allowed)}")
    return ADMConfig(**found, **overrides)


def known_checkpoint_settings(name: str) -> dict[str, Any]:
    """Head layout of the official class-conditional checkpoints that differ from the defaults."""
    return dict(_SPECS.get(name, {}))


__all__ = ["ADMConfig", "ADMUNet", "infer_adm_config", "known_checkpoint_settings"]
