"""Save and load trained autoencoders: ``config.json`` + ``model.safetensors`` (EMA weights)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_into, load_json, load_tensors
from ..config import from_dict
from .audio_ae import AudioAE, AudioAEConfig
from .pixels import PixelCodec, PixelCodecConfig
from .video_ae import VideoAE, VideoAEConfig

KINDS = {"video_ae": (VideoAE, VideoAEConfig), "audio_ae": (AudioAE, AudioAEConfig),
         "pixels": (PixelCodec, PixelCodecConfig)}
SERVES = {"video_ae": ("video_ae", "pixels"), "audio_ae": ("audio_ae",)}  # what may stand where each is expected


def load_autoencoder(path: str | Path, expect: str | None = None) -> torch.nn.Module:
    """The trained (EMA) autoencoder in a checkpoint folder, in eval mode, shapes verified."""
    path = Path(path)
    meta = load_json(path / "config.json")
    kind = meta.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{path / 'config.json'}: kind {kind!r} is not an autoencoder ({sorted(KINDS)})")
    if expect is not None and kind not in SERVES.get(expect, (expect,)):
        raise CheckpointError(f"{path}: holds a {kind}, expected a {expect}")
    cls, cfg_cls = KINDS[kind]
    model = cls(from_dict(cfg_cls, meta["model"]))
    load_into(model, load_tensors(path / "model.safetensors"), path / "model.safetensors")
    return model.eval()
