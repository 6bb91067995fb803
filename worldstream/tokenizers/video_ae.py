"""A causal convolutional video autoencoder: frames <-> a latent grid, streamable.

Spatial compression ``spatial`` (8 or 16) comes from a 2x pixel-unshuffle followed by
stride-2 stages; temporal compression ``temporal`` (1 or 4) groups each block of frames into
channels (time-to-depth) so a latent step covers ``temporal`` frames and depends only on them and
the past. Low-resolution stages look one latent step back in time (causal), which lets the
decoder keep frames steady. Decoding latents one chunk at a time with a ``StreamState`` gives
the same frames as decoding the whole clip (tested).

The latent is trained with noise augmentation and a small L2 pull (so a diffusion model's
imperfect latents still decode well), then normalised per channel with statistics measured on
training data and stored in the checkpoint: ``encode`` returns roughly unit-variance latents.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .causal import CausalTimeConv2d, ResBlock2d, StreamState


@dataclasses.dataclass(frozen=True)
class VideoAEConfig:
    """Shape and training knobs of the video autoencoder."""

    spatial: int = 8  # pixels per latent side: 2 (unshuffle) x 2 per extra stage
    temporal: int = 1  # frames per latent step: 1 (lowest latency) or 4
    latent_channels: int = 16  # channels of the latent grid
    widths: tuple[int, ...] = (48, 96, 128)  # channels per stage, full/2 resolution first
    kt: int = 2  # time kernel of the causal convs in the two lowest-resolution stages
    latent_noise: float = 0.2  # max std of training noise on the latent, relative to its std
    latent_l2: float = 1e-3  # pull of the raw latent toward 0 (keeps its scale bounded)

    def __post_init__(self) -> None:
        if self.spatial != 2 ** len(self.widths):
            raise ValueError(f"spatial={self.spatial} needs {self.spatial.bit_length() - 2} widths "
                             f"(2x unshuffle then one stride-2 stage per extra width), got {len(self.widths)}")
        if self.temporal not in (1, 2, 4):
            raise ValueError(f"temporal must be 1, 2 or 4, got {self.temporal}")


def video_ae_preset(name: str) -> VideoAEConfig:
    """Named configs: ``tiny`` (tests), ``f8`` (default, 8x), ``f16`` (16x), ``f8t4`` (8x, 4 frames per step)."""
    presets = {
        "tiny": VideoAEConfig(spatial=8, latent_channels=8, widths=(8, 16, 16)),
        "f8": VideoAEConfig(),
        "f16": VideoAEConfig(spatial=16, latent_channels=32, widths=(48, 96, 128, 160)),
        "f8t4": VideoAEConfig(temporal=4, latent_channels=32, widths=(48, 96, 160)),
    }
    if name not in presets:
        raise ValueError(f"unknown video AE preset {name!r}; choose from {sorted(presets)}")
    return presets[name]


class VideoAE(nn.Module):
    """Frames (B, T, 3, H, W) in [0, 1] <-> latents (B, T / temporal, latent_channels, H / s, W / s)."""

    def __init__(self, cfg: VideoAEConfig):
        super().__init__()
        self.cfg = cfg
        w, tt = cfg.widths, cfg.temporal
        n = len(w)
        low = lambda i: cfg.kt if i >= n - 2 else 1  # noqa: E731  (look back only where it is cheap)
        # encoder: unshuffle 2x (12 ch per frame), time-to-depth, then stages
        self.enc_in = CausalTimeConv2d(12 * tt, w[0], 3)
        self.enc_blocks = nn.ModuleList([ResBlock2d(w[i], kt=low(i)) for i in range(n)])
        self.enc_down = nn.ModuleList([CausalTimeConv2d(w[i], w[i + 1], 3, stride=2) for i in range(n - 1)])
        self.enc_out = CausalTimeConv2d(w[-1], cfg.latent_channels, 3)
        # decoder: mirror; nearest-upsample + conv per stage, pixel-shuffle 2x at the end
        self.dec_in = CausalTimeConv2d(cfg.latent_channels, w[-1], 3, kt=cfg.kt)
        self.dec_blocks = nn.ModuleList([ResBlock2d(w[i], kt=low(i)) for i in range(n)])
        self.dec_up = nn.ModuleList([CausalTimeConv2d(w[i + 1], w[i], 3) for i in range(n - 1)])
        self.dec_out = CausalTimeConv2d(w[0], 12 * tt, 3)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    # -- shapes ----------------------------------------------------------------------------------
    def check_frames(self, x: torch.Tensor) -> None:
        s, tt = self.cfg.spatial, self.cfg.temporal
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(x.shape)}")
        B, T, _, H, W = x.shape
        if H % s or W % s:
            raise ValueError(f"frame size {W}x{H} is not divisible by the spatial factor {s}; crop or pad to a "
                             f"multiple of {s} (e.g. {W - W % s}x{H - H % s})")
        if T % tt:
            raise ValueError(f"{T} frames is not a multiple of the temporal factor {tt}")

    def check_latents(self, z: torch.Tensor) -> None:
        if z.ndim != 5 or z.shape[2] != self.cfg.latent_channels:
            raise ValueError(f"latents must be (B, T, {self.cfg.latent_channels}, h, w), got {tuple(z.shape)}")

    # -- encoder ---------------------------------------------------------------------------------
    def encode_raw(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        self.check_frames(x)
        B, T, C, H, W = x.shape
        tt = self.cfg.temporal
        h = F.pixel_unshuffle(x.flatten(0, 1) * 2 - 1, 2)  # (B*T, 12, H/2, W/2)
        h = h.reshape(B, T // tt, tt * 12, H // 2, W // 2)  # time-to-depth: (B, T/tt, tt*12, H/2, W/2)
        h = self.enc_in(h, state)
        for i, block in enumerate(self.enc_blocks):
            h = block(h, state)
            if i < len(self.enc_down):
                h = self.enc_down[i](h, state)
        # No norm before the latent: GroupNorm would remove each frame's global brightness and
        # colour cast (night, fog, dusk), which the latent must carry (measured: docs/log.md).
        return self.enc_out(F.silu(h), state)  # (B, T/tt, latent_channels, H/s, W/s)

    def encode(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """Normalised latents of frames in [0, 1]."""
        z = self.encode_raw(x, state)
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    # -- decoder ---------------------------------------------------------------------------------
    def decode_raw(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        self.check_latents(z)
        B, T = z.shape[:2]
        tt = self.cfg.temporal
        h = self.dec_in(z, state)
        for i in reversed(range(len(self.dec_blocks))):
            h = self.dec_blocks[i](h, state)
            if i > 0:
                h = F.interpolate(h.flatten(0, 1), scale_factor=2.0, mode="nearest").unflatten(0, (B, T))
                h = self.dec_up[i - 1](h, state)
        h = self.dec_out(F.silu(h), state)  # no norm here either: keep absolute levels  # (B, T, tt*12, H/2, W/2)
        h = h.reshape(B * T * tt, 12, *h.shape[-2:])  # depth-to-time
        x = F.pixel_shuffle(h, 2)  # (B*T*tt, 3, H, W)
        return (x.reshape(B, T * tt, 3, *x.shape[-2:]) + 1) / 2

    def decode(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """Frames in [0, 1] (unclamped) from normalised latents."""
        self.check_latents(z)
        return self.decode_raw(z * self.latent_std[:, None, None] + self.latent_mean[:, None, None], state)

    def forward(self, x: torch.Tensor, noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction, raw latent). ``noise`` is the relative std of latent noise."""
        z = self.encode_raw(x)
        zn = z
        if noise > 0:
            sigma = noise * torch.rand(z.shape[0], 1, 1, 1, 1, device=z.device) * z.detach().std()
            zn = z + sigma * torch.randn_like(z)
        return self.decode_raw(zn), z

    @property
    def frames_per_step(self) -> int:
        return self.cfg.temporal
