"""Previews a person can watch: an MP4 with sound and a PNG contact sheet.

From the live overworld (driven by the explorer) or from any dataset episode.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..worlds.overworld.policy import explore
from ..worlds.overworld.world import Overworld, OverworldConfig
from .format import Dataset, DatasetError
from .png import grid, save_png
from .video import write_preview_mp4


def _write(out: Path, frames: list[np.ndarray], audio: np.ndarray, fps: int, sample_rate: int,
           captions: list[tuple[int, str]]) -> tuple[Path, Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scale = max(1, 384 // max(frames[0].shape[:2]))  # small worlds are scaled up, crisply
    write_preview_mp4(out, frames, audio, fps, sample_rate, scale=scale)
    picks = np.linspace(0, len(frames) - 1, 8).astype(int)
    sheet = out.with_suffix(".png")
    save_png(sheet, grid([frames[i] for i in picks], cols=4))
    return out, sheet


def preview_world(out: str | Path, seconds: float = 20.0, config: OverworldConfig | None = None,
                  seed: int = 0) -> tuple[Path, Path, list[tuple[int, str]]]:
    """Explore the overworld live for ``seconds``; returns (mp4, png, captions)."""
    world = Overworld(config)
    cfg = world.config
    frames, audio, captions = [], [], []
    for step, _, _ in explore(world, seed, int(seconds * cfg.fps)):
        frames.append(step.frame)
        audio.append(step.audio)
        if step.caption:
            captions.append((step.state["frame"], step.caption))
    mp4, png = _write(Path(out), frames, np.concatenate(audio), cfg.fps, cfg.sample_rate, captions)
    return mp4, png, captions


def preview_episode(dataset: str | Path, episode: int, out: str | Path) -> tuple[Path, Path, list[tuple[int, str]]]:
    """Preview episode number ``episode`` (its position in the manifest) of a dataset."""
    ds = Dataset(dataset)
    if not 0 <= episode < len(ds):
        raise DatasetError(f"{dataset}: has episodes 0..{len(ds) - 1}, not {episode}")
    ep = ds.episodes[episode]
    frames = list(ep.frames())
    captions = [(c["frame"], c["text"]) for c in ep.info["captions"]]
    mp4, png = _write(Path(out), frames, ep.audio(), ds.manifest["fps"], ds.manifest["sample_rate"], captions)
    return mp4, png, captions
