"""A small, fully convolutional noise-prediction UNet for microscopy frames.

Residual blocks with GroupNorm and SiLU, a sinusoidal timestep embedding added inside every
block, strided-convolution downsampling and nearest-neighbour upsampling. Optional self-attention
at chosen levels is over all pixels of that level, so it does not tie the network to one image
size. Input and output are ``(B, C, H, W)`` with ``H`` and ``W`` multiples of
``UNetConfig.size_multiple``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..validation import check_positive_int


@dataclass
class UNetConfig:
    """Architecture of :class:`UNet`; stored as ``config.json["unet"]`` next to the weights."""

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4)
    blocks_per_level: int = 2
    attention_levels: tuple[int, ...] = ()
    groups: int = 8
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attention_levels = tuple(int(m) for m in self.attention_levels)
        for name in ("in_channels", "out_channels", "base_channels", "blocks_per_level", "groups"):
            check_positive_int(getattr(self, name), f"UNetConfig.{name}")
        if not self.channel_mults:
            raise ValueError("UNetConfig.channel_mults must name at least one level")
        for mult in self.channel_mults:
            if (self.base_channels * mult) % self.groups:
                raise ValueError(
                    f"UNetConfig: channels {self.base_channels * mult} not divisible by groups={self.groups}"
                )

    @property
    def size_multiple(self) -> int:
        """Frame height and width must be multiples of this (one halving per level below the top)."""
        return 2 ** (len(self.channel_mults) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_levels"] = list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown UNet config keys: {sorted(unknown)}")
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps ``t`` (B,) -> (B, dim), as in the Transformer."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * channels_out)
        self.norm2 = nn.GroupNorm(groups, channels_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # start as identity: stabilises early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if channels_in == channels_out else nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over all pixels; size-agnostic."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Noise-prediction UNet: ``forward(x, t) -> eps`` with ``x`` (B, C, H, W) and ``t`` (B,) integers."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or UNetConfig()
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [ch]
        current = ch
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.blocks_per_level):
                block = nn.ModuleList([ResBlock(current, ch * mult, emb_dim, cfg.groups, cfg.dropout)])
                current = ch * mult
                if level in cfg.attention_levels:
                    block.append(SelfAttention(current, cfg.groups))
                self.down.append(block)
                skip_channels.append(current)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(current, current, 3, stride=2, padding=1)]))
                skip_channels.append(current)

        self.middle = nn.ModuleList(
            [
                ResBlock(current, current, emb_dim, cfg.groups, cfg.dropout),
                ResBlock(current, current, emb_dim, cfg.groups, cfg.dropout),
            ]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for i in range(cfg.blocks_per_level + 1):
                block = nn.ModuleList(
                    [ResBlock(current + skip_channels.pop(), ch * mult, emb_dim, cfg.groups, cfg.dropout)]
                )
                current = ch * mult
                if level in cfg.attention_levels:
                    block.append(SelfAttention(current, cfg.groups))
                if level > 0 and i == cfg.blocks_per_level:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(current, current, 3, padding=1))
                self.up.append(block)

        self.head = nn.Sequential(nn.GroupNorm(cfg.groups, current), nn.SiLU(), nn.Conv2d(current, cfg.out_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def size_multiple(self) -> int:
        return self.config.size_multiple

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = self.size_multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"UNet input height and width must be multiples of {m}, got {tuple(x.shape[-2:])}")
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for block in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return self.head(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["UNet", "UNetConfig", "count_parameters", "timestep_embedding"]
