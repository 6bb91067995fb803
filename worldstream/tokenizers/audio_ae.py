"""A causal 1-D convolutional audio autoencoder: waveform <-> a few latent tokens per video frame.

The encoder downsamples by ``prod(strides)`` samples per token with causal strided convs; the
decoder upsamples with non-overlapping transposed convs (each output block depends only on its
own token) followed by causal convs, so both stream chunk by chunk with a ``StreamState``.
With 24 kHz audio at 24 fps (1000 samples per frame) and a hop of 500: 2 tokens per frame.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from .causal import CausalConv1d, StreamState


@dataclasses.dataclass(frozen=True)
class AudioAEConfig:
    sample_rate: int = 24000
    samples_per_frame: int = 1000  # one video frame of audio
    strides: tuple[int, ...] = (4, 5, 5, 5)  # hop = 500 samples: 2 tokens per frame
    widths: tuple[int, ...] = (32, 64, 128, 192)  # channels after each downsampling
    latent_channels: int = 32
    kernel: int = 7
    latent_noise: float = 0.1
    latent_l2: float = 1e-3
    # "transpose": non-overlapping transposed convs (first version; its fixed per-position kernels
    # ring at the hop rate and harmonics, visible as horizontal bands in spectrograms);
    # "repeat": repeat each sample ``stride`` times, then a causal conv smooths (no such ringing)
    upsample: str = "transpose"

    def __post_init__(self) -> None:
        if self.upsample not in ("transpose", "repeat"):
            raise ValueError(f"upsample must be 'transpose' or 'repeat', got {self.upsample!r}")
        if len(self.strides) != len(self.widths):
            raise ValueError("strides and widths must have the same length")
        if self.samples_per_frame % self.hop:
            raise ValueError(f"hop {self.hop} must divide samples_per_frame {self.samples_per_frame}")

    @property
    def hop(self) -> int:
        return math.prod(self.strides)

    @property
    def tokens_per_frame(self) -> int:
        return self.samples_per_frame // self.hop


def audio_ae_preset(name: str) -> AudioAEConfig:
    presets = {
        "tiny": AudioAEConfig(widths=(8, 8, 16, 16), latent_channels=8),
        "default": AudioAEConfig(upsample="repeat"),
    }
    if name not in presets:
        raise ValueError(f"unknown audio AE preset {name!r}; choose from {sorted(presets)}")
    return presets[name]


class _Res1d(nn.Module):
    def __init__(self, ch: int, k: int, dilation: int):
        super().__init__()
        self.c1 = CausalConv1d(ch, ch, k)
        self.c1.conv.dilation = (dilation,)
        self.c1.pad = (k - 1) * dilation
        self.c2 = CausalConv1d(ch, ch, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        return x + self.c2(F.elu(self.c1(F.elu(x), state)), state)


class AudioAE(nn.Module):
    """Waveform (B, L) in [-1, 1] <-> latents (B, L / hop, latent_channels)."""

    def __init__(self, cfg: AudioAEConfig):
        super().__init__()
        self.cfg = cfg
        w, k = cfg.widths, cfg.kernel
        self.enc_in = CausalConv1d(1, w[0] // 2, k)
        cins = [w[0] // 2] + list(w[:-1])
        self.enc_res = nn.ModuleList([_Res1d(c, k, 1) for c in cins])
        self.enc_down = nn.ModuleList([CausalConv1d(cins[i], w[i], 2 * s, stride=s) for i, s in enumerate(cfg.strides)])
        self.enc_out = CausalConv1d(w[-1], cfg.latent_channels, 3)
        self.dec_in = CausalConv1d(cfg.latent_channels, w[-1], 3)
        if cfg.upsample == "transpose":
            self.dec_up = nn.ModuleList([nn.ConvTranspose1d(w[i], cins[i], s, stride=s) for i, s in enumerate(cfg.strides)])
        else:
            self.dec_up = nn.ModuleList([CausalConv1d(w[i], cins[i], 2 * s) for i, s in enumerate(cfg.strides)])
        self.dec_res = nn.ModuleList([_Res1d(c, k, d) for c, d in zip(cins, (1, 3, 9, 1))])
        self.dec_out = CausalConv1d(cins[0], 1, k)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    def check_audio(self, x: torch.Tensor) -> None:
        if x.ndim != 2:
            raise ValueError(f"audio must be (B, samples), got {tuple(x.shape)}")
        if x.shape[1] % self.cfg.hop:
            raise ValueError(f"{x.shape[1]} samples is not a multiple of the hop {self.cfg.hop} "
                             f"({self.cfg.tokens_per_frame} tokens per {self.cfg.samples_per_frame}-sample frame)")

    def encode_raw(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        self.check_audio(x)
        h = self.enc_in(x[:, None], state)
        for res, down in zip(self.enc_res, self.enc_down):
            h = down(F.elu(res(h, state)), state)
        return self.enc_out(F.elu(h), state).transpose(1, 2)  # (B, L/hop, latent)

    def encode(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        return (self.encode_raw(x, state) - self.latent_mean) / self.latent_std

    def check_latents(self, z: torch.Tensor) -> None:
        if z.ndim != 3 or z.shape[2] != self.cfg.latent_channels:
            raise ValueError(f"audio latents must be (B, tokens, {self.cfg.latent_channels}), got {tuple(z.shape)}")

    def decode_raw(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        self.check_latents(z)
        h = self.dec_in(z.transpose(1, 2), state)
        for i in reversed(range(len(self.dec_up))):
            if self.cfg.upsample == "transpose":
                h = self.dec_up[i](F.elu(h))  # non-overlapping: output block i depends on token i only
            else:  # repeat, then a causal conv over the repeated samples (streams with its state)
                h = self.dec_up[i](F.elu(h.repeat_interleave(self.cfg.strides[i], dim=2)), state)
            h = self.dec_res[i](h, state)
        return torch.tanh(self.dec_out(F.elu(h), state))[:, 0]

    def decode(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        self.check_latents(z)
        return self.decode_raw(z * self.latent_std + self.latent_mean, state)

    def forward(self, x: torch.Tensor, noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode_raw(x)
        zn = z
        if noise > 0:
            sigma = noise * torch.rand(z.shape[0], 1, 1, device=z.device) * z.detach().std()
            zn = z + sigma * torch.randn_like(z)
        return self.decode_raw(zn), z
