"""Frames as a world model's latents, unencoded: the "video autoencoder" of a pixel world model.

Why no encoder: a walking view scrolls a whole pixel a frame, an eighth of an f8 latent cell, and the
f8 autoencoder aliases under such moves, so a latent world model must learn a different map at each
of 8 sub-cell phases; its decoder also returns texture 4x softer than it was given (log.md,
fourteenth and thirty-eighth sessions). In pixels a scroll is an exact whole-pixel move
(``OmniConfig.move_reach``), and the transformer reads 16 x 16 pixel patches as JiT does (Li & He
2025, "Back to Basics: Let Denoising Generative Models Denoise"). The codec only normalises each
colour channel to zero mean and unit variance, with the dataset's statistics, so it has the video
autoencoder's interface (``encode``, ``decode``, ``cfg.spatial``, ``cfg.temporal``) and every
tool that reads latents (``worldstream encode``, the trainers, the engine) reads pixels the same way.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import save_tensors
from ..files import atomic_write_json
from ..config import to_dict


@dataclasses.dataclass(frozen=True)
class PixelCodecConfig:
    latent_channels: int = 3  # the colour channels
    spatial: int = 1  # pixels per latent side
    temporal: int = 1  # frames per latent step

    def __post_init__(self) -> None:
        if (self.latent_channels, self.spatial, self.temporal) != (3, 1, 1):
            raise ValueError("a pixel codec keeps frames as they are: 3 channels, spatial 1, temporal 1")


class PixelCodec(nn.Module):
    """Frames (B, T, 3, H, W) in [0, 1] <-> normalised pixels of the same shape."""

    def __init__(self, cfg: PixelCodecConfig | None = None):
        super().__init__()
        self.cfg = cfg or PixelCodecConfig()
        self.register_buffer("latent_mean", torch.zeros(3))
        self.register_buffer("latent_std", torch.ones(3))

    def _check(self, x: torch.Tensor, what: str) -> None:
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"{what} must be (B, T, 3, H, W), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        """Normalised pixels of frames in [0, 1] (``state``: unused; nothing is carried between chunks)."""
        self._check(x, "frames")
        return (x - self.latent_mean.view(3, 1, 1)) / self.latent_std.view(3, 1, 1)

    def decode(self, z: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        """Frames in [0, 1] (unclamped) from normalised pixels."""
        self._check(z, "pixel latents")
        return z * self.latent_std.view(3, 1, 1) + self.latent_mean.view(3, 1, 1)

    @property
    def frames_per_step(self) -> int:
        return 1


def fit_pixel_codec(dataset: str | Path, out: str | Path, max_frames: int = 4000) -> dict:
    """Measure each colour channel's mean and std over up to ``max_frames`` frames of ``dataset`` (one folder,
    or several separated by commas) spread over its training episodes, and save the codec to ``out``
    (``config.json`` + ``model.safetensors``, as an autoencoder run is saved)."""
    from ..data.format import Dataset
    from ..data.latents import dataset_paths

    eps = [e for p in dataset_paths(dataset) for e in Dataset(p).split("train")]
    if not eps:
        raise ValueError(f"{dataset}: no training episodes to measure the pixels' statistics on")
    total = sum(e.n_frames for e in eps)
    step = max(1, total // max_frames)
    s = np.zeros(3)
    s2 = np.zeros(3)
    n = frames = 0
    for e in eps:
        x = np.asarray(e.frames()[::step], dtype=np.float64) / 255.0  # (T, H, W, 3)
        s += x.sum((0, 1, 2))
        s2 += np.square(x).sum((0, 1, 2))
        n += x.shape[0] * x.shape[1] * x.shape[2]
        frames += x.shape[0]
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-8))
    codec = PixelCodec()
    codec.latent_mean.copy_(torch.tensor(mean, dtype=torch.float32))
    codec.latent_std.copy_(torch.tensor(std, dtype=torch.float32))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / "model.safetensors", {k: v.contiguous() for k, v in codec.state_dict().items()})
    atomic_write_json(out / "config.json", {"kind": "pixels", "model": to_dict(codec.cfg), "dataset": str(dataset),
                                            "frames_measured": frames})
    return {"mean": mean.tolist(), "std": std.tolist()}
