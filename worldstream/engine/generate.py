"""`worldstream generate`: a prompt and a timed action script -> an MP4 with sound.

Loads a teacher (or later a student) checkpoint and the autoencoders it was trained with
(named, with their weights' SHA-256, in its config.json), runs the rollout chunk by chunk with
a progress bar, decodes latents to frames and sound with the autoencoders' streaming state
(memory stays flat for any length), and writes the video.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import CheckpointError, load_into, load_json, load_tensors
from ..config import from_dict
from ..data.video import write_preview_mp4
from ..model.omni import Omni, OmniConfig
from ..tokenizers.actions import ActionVocab
from ..tokenizers.store import load_autoencoder
from ..tokenizers.text import sha256_of
from .rollout import Conditioning, RolloutConfig, make_branches, generate_chunk


def load_world_model(path: str | Path) -> tuple[Omni, dict[str, Any]]:
    path = Path(path)
    meta = load_json(path / "config.json")
    if meta.get("kind") not in ("omni_teacher", "omni_student"):
        raise CheckpointError(f"{path}: kind {meta.get('kind')!r} is not a world model checkpoint")
    model = Omni(from_dict(OmniConfig, meta["model"]))
    load_into(model, load_tensors(path / "model.safetensors"), path / "model.safetensors")
    return model.eval(), meta


def load_autoencoders(meta: dict[str, Any]) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    ident = meta["latents"]
    out = []
    for key in ("video_ae", "audio_ae"):
        info = ident.get(key)
        if info is None:
            out.append(None)
            continue
        p = Path(info["path"])
        if not (p / "model.safetensors").exists():
            raise CheckpointError(f"the {key} this model was trained with is missing: {p}")
        if sha256_of(p / "model.safetensors") != info["sha256"]:
            raise CheckpointError(f"{p}: weights changed since this model was trained (SHA-256 mismatch)")
        out.append(load_autoencoder(p, key))
    return out[0], out[1]


def parse_actions(spec: str, vocab: ActionVocab, n_frames: int) -> torch.Tensor:
    """'walk_e:48,idle:24,run_n:24' -> (n_frames,) ids; the last action holds to the end."""
    ids: list[int] = []
    for part in [p for p in spec.split(",") if p.strip()]:
        name, _, count = part.strip().partition(":")
        try:
            n = int(count) if count else 1
        except ValueError:
            raise ValueError(f"bad action step {part!r}: use NAME:FRAMES, e.g. walk_e:48") from None
        ids += [vocab.index(name)] * n
    if not ids:
        ids = [0]
    ids = ids[:n_frames] + [ids[-1]] * max(0, n_frames - len(ids))
    return torch.tensor(ids)


@torch.no_grad()
def generate(checkpoint: str | Path, prompt: str, actions: str, seconds: float, out: str | Path,
             rollout_cfg: RolloutConfig, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    model, meta = load_world_model(checkpoint)
    vae, aae = load_autoencoders(meta)
    mc = model.cfg
    fps = meta["fps"]
    vocab = ActionVocab(tuple(meta["actions"]["names"]), tuple(meta["actions"].get("axes", [])))
    n_chunks = max(1, int(round(seconds * fps / (vae.cfg.temporal * mc.chunk_frames))))
    n_frames = n_chunks * mc.chunk_frames  # latent frames
    C, h, w = meta["latent_shape"]
    from ..data.latents import PromptBank

    text, mask, pooled = PromptBank().batch([prompt])
    cond = Conditioning(text, mask, pooled, parse_actions(actions, vocab, n_frames)[None])
    branches = make_branches(model, rollout_cfg)
    g = torch.Generator().manual_seed(seed)
    vstate, astate = {}, {}
    frames, audio = [], []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_chunks, unit="chunk", desc="generate")
    for c in range(n_chunks):
        v, a = generate_chunk(model, branches, rollout_cfg, cond, c, (C, h, w), g)
        x = vae.decode(v, vstate).clamp(0, 1)[0]  # (frames, 3, H, W)
        frames += [(f.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for f in x]
        if aae is not None and a is not None:
            audio.append(aae.decode(a, astate)[0].numpy())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    pcm = np.concatenate(audio) if audio else None
    write_preview_mp4(Path(out), frames, pcm, fps, aae.cfg.sample_rate if aae else 24000,
                      scale=max(1, 384 // max(frames[0].shape[:2])))
    return {"out": str(out), "frames": len(frames), "chunks": n_chunks, "frames_rgb": frames, "audio": pcm}
