"""`worldstream encode`: cache a dataset's latents so the transformer trains without the encoders.

Writes ``DATASET/latents/<ae-name>/``: one ``<episode>.safetensors`` per episode with ``video``
(T / temporal, C, h, w) and/or ``audio`` (T * tokens_per_frame, C) as float16, and
``config.json`` naming the autoencoders (their configs and the SHA-256 of their weights) so a
cache made with other weights is never mistaken for this one. Episodes are encoded in chunks
with the encoders' streaming state, which equals encoding the whole episode at once.
Resumable: episodes already cached are skipped.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_json, save_json, save_tensors
from ..data.format import Dataset, DatasetError
from .store import load_autoencoder
from .text import sha256_of

CHUNK_FRAMES = 64


def _ae_id(path: Path) -> dict[str, Any]:
    meta = load_json(path / "config.json")
    return {"path": str(path.resolve()), "kind": meta["kind"], "model": meta["model"],
            "sha256": sha256_of(path / "model.safetensors")}


@torch.no_grad()
def encode_dataset(dataset: str | Path, video_ae: str | Path | None, audio_ae: str | Path | None,
                   name: str = "default", progress: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Encode every episode on ``device`` (the same latents, to float16 rounding, on any device);
    returns a summary with timings."""
    from ..device import torch_device

    dev = torch_device(device)
    ds = Dataset(dataset)
    if video_ae is None and audio_ae is None:
        raise ValueError("give at least one of --video-ae, --audio-ae")
    vae = load_autoencoder(video_ae, "video_ae") if video_ae else None
    aae = load_autoencoder(audio_ae, "audio_ae") if audio_ae else None
    vae, aae = (None if m is None else m.to(dev) for m in (vae, aae))
    if aae is not None and aae.cfg.samples_per_frame != ds.manifest["samples_per_frame"]:
        raise DatasetError(f"{dataset}: {ds.manifest['samples_per_frame']} audio samples per frame; the audio AE "
                           f"was trained for {aae.cfg.samples_per_frame}")
    out = ds.path / "latents" / name
    out.mkdir(parents=True, exist_ok=True)
    ident = {"video_ae": _ae_id(Path(video_ae)) if video_ae else None,
             "audio_ae": _ae_id(Path(audio_ae)) if audio_ae else None}
    if (out / "config.json").exists():
        old = load_json(out / "config.json")
        if old != ident:
            raise DatasetError(f"{out} holds latents of other autoencoders; pass another --name or delete it")
    save_json(out / "config.json", ident)
    todo = [e for e in ds.episodes if not (out / f"{e.name}.safetensors").exists()]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(e.n_frames for e in todo), unit="frame", desc=f"encode {ds.path.name}")
    t0, frames_done = time.perf_counter(), 0
    for ep in todo:
        tensors = {}
        if vae is not None:
            s, tt = vae.cfg.spatial, vae.cfg.temporal
            frames = ep.frames()
            T = ep.n_frames - ep.n_frames % tt
            H, W = frames.shape[1] - frames.shape[1] % s, frames.shape[2] - frames.shape[2] % s
            state, zs = {}, []
            step = CHUNK_FRAMES - CHUNK_FRAMES % tt
            for a in range(0, T, step):
                x = torch.from_numpy(np.array(frames[a : min(a + step, T), :H, :W])).permute(0, 3, 1, 2)
                zs.append(vae.encode(x[None].to(dev).float() / 255.0, state)[0].cpu())
            tensors["video"] = torch.cat(zs).half()
        if aae is not None:
            audio = torch.from_numpy(ep.audio())
            state, zs = {}, []
            n = CHUNK_FRAMES * aae.cfg.samples_per_frame
            for a in range(0, len(audio), n):
                zs.append(aae.encode(audio[None, a : a + n].to(dev), state)[0].cpu())
            tensors["audio"] = torch.cat(zs).half()
        save_tensors(out / f"{ep.name}.safetensors", tensors)
        frames_done += ep.n_frames
        if bar is not None:
            bar.update(ep.n_frames)
    if bar is not None:
        bar.close()
    dt = time.perf_counter() - t0
    return {"out": str(out), "episodes": len(todo), "frames": frames_done, "seconds": dt,
            "frames_per_second": frames_done / dt if dt > 0 else None}
