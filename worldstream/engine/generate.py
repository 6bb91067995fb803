"""`worldstream generate`: a prompt, an action script and a timed events file -> an MP4 with sound.

Loads a teacher or student checkpoint and the autoencoders it was trained with (named, with
their weights' SHA-256, in its config.json), drives a ``Stream`` chunk by chunk with a progress
bar and writes the video as it goes, so memory stays flat for any length.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import CheckpointError, load_into, load_json, load_tensors
from ..config import from_dict
from ..data.video import resample_audio
from ..model.omni import Omni, OmniConfig
from ..tokenizers.actions import ActionVocab
from ..tokenizers.store import load_autoencoder
from ..tokenizers.text import sha256_of
from .events import Event, EventError, validate
from .rollout import RolloutConfig


def load_world_model(path: str | Path | None) -> tuple[Omni, dict[str, Any]]:
    """A teacher or student checkpoint folder, a bundle (``worldstream export``), or None / "default"
    for the model that ships with the package; a bundle's files are checked against its manifest."""
    from ..weights import resolve, verify

    path = resolve(path)
    verify(path)
    meta = load_json(path / "config.json")
    if meta.get("kind") not in ("omni_teacher", "omni_student"):
        raise CheckpointError(f"{path}: kind {meta.get('kind')!r} is not a world model checkpoint")
    model = Omni(from_dict(OmniConfig, meta["model"]))
    load_into(model, load_tensors(path / "model.safetensors"), path / "model.safetensors")
    return model.eval(), meta


def checkpoint_meta(path: str | Path | None) -> dict[str, Any]:
    """A world model checkpoint's config.json alone (no weights): enough to pick its sampler."""
    from ..weights import resolve

    return load_json(resolve(path) / "config.json")


def latents_sha256s(info: dict[str, Any]) -> set[str]:
    """SHA-256s of the video autoencoders whose latents a world model reads (``meta["latents"]["video_ae"]``):
    its own and, where a fine-tuned decoder was swapped in (``export --video-decoder``), the one it replaced,
    whose encoder, and so whose latents, it keeps."""
    return {info["sha256"], info.get("latents_sha256", info["sha256"])}


def reads_latents(meta: dict[str, Any], ident: dict[str, Any]) -> bool:
    """Whether a world model (its ``meta``) reads the latents of a cache (its ``config.json``, ``ident``):
    the cache's video autoencoder is the model's, or the one its fine-tuned decoder replaced."""
    info = meta.get("latents", {}).get("video_ae")
    return info is not None and ident.get("video_ae", {}).get("sha256") in latents_sha256s(info)


def autoencoder_dir(info: dict[str, Any], base: str | Path | None = None) -> Path:
    """The folder of an autoencoder a world model names (``meta["latents"][key]``): relative paths (a
    bundle's) are under ``base``."""
    p = Path(info["path"])
    return Path(base) / p if not p.is_absolute() and base is not None else p


def load_autoencoders(meta: dict[str, Any], base: str | Path | None = None) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The autoencoders a world model was trained with; relative paths (a bundle's) are under ``base``."""
    ident = meta["latents"]
    out = []
    for key in ("video_ae", "audio_ae"):
        info = ident.get(key)
        if info is None:
            out.append(None)
            continue
        p = autoencoder_dir(info, base)
        if not (p / "model.safetensors").exists():
            raise CheckpointError(f"the {key} this model was trained with is missing: {p}")
        if sha256_of(p / "model.safetensors") != info["sha256"]:
            raise CheckpointError(f"{p}: weights changed since this model was trained (SHA-256 mismatch)")
        out.append(load_autoencoder(p, key))
    return out[0], out[1]


def load_events(path: str | Path, sample_rate: int) -> list[tuple[float, Event]]:
    """A timed events file: JSON Lines (or one JSON list) of objects with ``t`` (seconds) and one
    of ``action`` (name), ``prompt`` (text), ``image`` (a PNG/JPEG path; ``mode`` restart or
    blend) or ``audio`` (a WAV path: the picture follows that sound). Sorted by time."""
    import json

    from ..data.video import read_wav

    path = Path(path)
    text = path.read_text()
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError as e:
        raise EventError(f"{path}: not JSON Lines or a JSON list ({e})") from None
    out = []
    for i, it in enumerate(items):
        where = f"{path}: event {i + 1}"
        if not isinstance(it, dict) or not isinstance(it.get("t"), (int, float)) or it["t"] < 0:
            raise EventError(f"{where}: needs a time 't' (seconds >= 0), got {it!r}")
        kinds = [k for k in ("action", "prompt", "image", "audio") if k in it]
        if len(kinds) != 1:
            raise EventError(f"{where}: give exactly one of action, prompt, image, audio")
        kind, value = kinds[0], it[kinds[0]]
        if kind in ("image", "audio"):  # a file, relative to the events file (or to here)
            near = path.parent / str(value)
            value = near if near.exists() else Path(value)
        if kind == "image":
            value = value.read_bytes()
        elif kind == "audio":
            pcm, rate = read_wav(value)
            value = resample_audio(pcm, rate, sample_rate)
        out.append((float(it["t"]), Event(kind, value, mode=it.get("mode", "restart"))))
    return sorted(out, key=lambda x: x[0])


def script_events(spec: str, vocab: ActionVocab, fps: int) -> list[tuple[float, Event]]:
    """'walk_e:48,idle:24' -> an action event at the start of each step (the last holds)."""
    out, frame = [], 0
    for part in [p for p in spec.split(",") if p.strip()]:
        name, _, count = part.strip().partition(":")
        try:
            n = int(count) if count else 1
        except ValueError:
            raise ValueError(f"bad action step {part!r}: use NAME:FRAMES, e.g. walk_e:48") from None
        vocab.index(name)  # a clear error for an unknown action
        out.append((frame / fps, Event("action", name)))
        frame += n
    return out


@torch.no_grad()
def generate(checkpoint: str | Path | None, prompt: str, actions: str, seconds: float, out: str | Path,
             rollout_cfg: RolloutConfig | None = None, seed: int = 0, progress: bool = True,
             events: str | Path | None = None, size: tuple[int, int] | None = None,
             start: str = "empty", device: str = "cpu") -> dict[str, Any]:
    """Stream ``seconds`` of world from a prompt, an action script and/or a timed events file into
    an MP4 with sound, chunk by chunk (memory stays flat for any length)."""
    from ..data.video import PreviewWriter, check_preview_path
    from .stream import StreamConfig, World

    check_preview_path(Path(out))
    world = World.load(checkpoint, size=size).to(device)
    timed = script_events(actions, world.vocab, world.fps) if actions else []
    if events is not None:
        timed = sorted(timed + load_events(events, world.sample_rate), key=lambda x: x[0])
    for _, ev in timed:  # every event checked before the first frame, not when its time comes
        validate(ev, world.vocab, 1, world.sample_rate)
    image = None
    if start == "overworld":  # begin in a real frame of the built-in world at a seed-chosen place (as `play` does)
        from ..serve.server import overworld_start

        image, caption = overworld_start(world.width, world.height)(seed)
        prompt = prompt or caption
    elif start != "empty":
        raise ValueError(f"start {start!r}: use 'overworld' or 'empty'")
    stream = world.stream(prompt, image=image, seed=seed, config=StreamConfig(rollout=rollout_cfg))
    n_chunks = max(1, int(round(seconds * world.fps / world.frames_per_chunk)))
    bar = None
    i = 0
    scale = max(1, 384 // max(world.height, world.width))
    with PreviewWriter(Path(out), world.fps, world.sample_rate if world.aae else None, scale) as writer:
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n_chunks, unit="chunk", desc="generate")
        for c in range(n_chunks):
            while i < len(timed) and timed[i][0] * world.fps < (c + 1) * world.frames_per_chunk:
                stream.push(timed[i][1])  # an event at time t applies to the chunk that holds frame t * fps
                i += 1
            chunk = stream.step()
            writer.write(chunk.frames[0], None if chunk.audio is None else chunk.audio[0])
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return {"out": str(out), "frames": n_chunks * world.frames_per_chunk, "chunks": n_chunks,
            "seconds_per_chunk_p50": float(np.median(stream.timings))}
