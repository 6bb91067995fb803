"""The worldstream dataset format: one layout for the built-in world, imports and gym recordings.

::

    DATASET/
      manifest.json               what every episode shares: fps, audio rate, action vocabulary
      episodes/
        000000/
          video.mp4               H.264 lossless RGB (libx264rgb, qp 0), fps from the manifest
          audio.wav               16-bit PCM mono, exactly frames x samples_per_frame samples
          records.jsonl.gz        one JSON object per frame: action, caption, ground-truth state
          episode.json            frames, size, source, split; written last = the episode is complete
      .cache/                     decoded frames for fast training reads (derived, safe to delete)

Everything is readable without worldstream (ffmpeg, any WAV reader, gzip + JSON). The full
description, with every field, is docs/dataset.md. Episodes are written to ``NAME.partial`` and
renamed when complete, so an interrupted recording never leaves a half episode behind.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_json
from .video import LosslessVideoWriter, MediaError, read_video, read_wav, write_wav

FORMAT = "worldstream-dataset"
VERSION = 1
HELDOUT_EVERY = 10  # episode k is held out for evaluation when k % 10 == 9


class DatasetError(ValueError):
    """A dataset file that is missing, malformed or inconsistent; the message names it."""


def split_of(index: int) -> str:
    return "heldout" if index % HELDOUT_EVERY == HELDOUT_EVERY - 1 else "train"


def episode_name(index: int) -> str:
    return f"{index:06d}"


# ---------------------------------------------------------------------------------------------
# Writing


class EpisodeWriter:
    """Streams one episode's frames to its video as they come; publishes it atomically on close.

    Memory stays bounded for any length: frames go straight to the encoder; only the audio
    (tiny next to video) and the records are held until ``close``.
    """

    def __init__(self, dataset: Path, name: str, fps: int, sample_rate: int, samples_per_frame: int):
        self.final = Path(dataset) / "episodes" / name
        self.partial = self.final.with_name(name + ".partial")
        self.fps, self.sample_rate, self.spf = fps, sample_rate, samples_per_frame
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        self.video = LosslessVideoWriter(self.partial / "video.mp4", fps)
        self.shape: tuple[int, ...] | None = None
        self.audio: list[np.ndarray] = []
        self.records: list[dict[str, Any]] = []

    def add(self, frame: np.ndarray, audio: np.ndarray | None, record: dict[str, Any]) -> None:
        """One frame: RGB uint8 (H, W, 3), its audio (samples_per_frame,) or None for silence, its record."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame {len(self.records)}: expected (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if self.shape is not None and frame.shape != self.shape:
            raise ValueError(f"frame {len(self.records)} has shape {frame.shape}, episode started with {self.shape}")
        if audio is not None and audio.shape != (self.spf,):
            raise ValueError(f"frame {len(self.records)}: audio shape {audio.shape}, expected ({self.spf},)")
        self.shape = frame.shape
        self.video.write(np.ascontiguousarray(frame))
        self.audio.append(np.zeros(self.spf, np.float32) if audio is None else audio)
        self.records.append({"frame": len(self.records), **record})

    def replace_audio(self, pcm: np.ndarray) -> None:
        """Set the whole track at once (importers resample audio separately from frames)."""
        if pcm.shape != (len(self.records) * self.spf,):
            raise ValueError(f"audio has {pcm.shape} samples, expected {len(self.records) * self.spf}")
        self.audio = [pcm.astype(np.float32)]

    def abort(self) -> None:
        """Drop the episode: nothing of it stays on disk."""
        self.video.close()
        shutil.rmtree(self.partial, ignore_errors=True)

    def close(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Finish the files and publish the episode; returns its episode.json."""
        if not self.records:
            self.abort()
            raise ValueError(f"{self.final.name}: no frames")
        self.video.close()
        write_wav(self.partial / "audio.wav", np.concatenate(self.audio), self.sample_rate)
        with gzip.open(self.partial / "records.jsonl.gz", "wt", compresslevel=6) as f:
            for r in self.records:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
        h, w, _ = self.shape
        info = {
            "name": self.final.name,
            "frames": len(self.records),
            "width": w,
            "height": h,
            "captions": [{"frame": r["frame"], "text": r["caption"]} for r in self.records if r.get("caption")],
            **meta,
        }
        atomic_write_json(self.partial / "episode.json", info)
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.partial, self.final)
        return info


def write_manifest(dataset: Path, base: dict[str, Any]) -> dict[str, Any]:
    """(Re)write manifest.json from ``base`` plus a scan of the complete episodes."""
    dataset = Path(dataset)
    episodes = []
    for d in sorted((dataset / "episodes").glob("*")):
        if d.is_dir() and not d.name.endswith(".partial") and (d / "episode.json").exists():
            info = json.loads((d / "episode.json").read_text())
            episodes.append({k: info[k] for k in ("name", "frames", "width", "height", "split")})
    sizes = sorted({(e["width"], e["height"]) for e in episodes})
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        **base,
        "resolutions": [list(s) for s in sizes],
        "total_frames": sum(e["frames"] for e in episodes),
        "episodes": episodes,
    }
    atomic_write_json(dataset / "manifest.json", manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class Episode:
    """One episode on disk. Frames decode once into a memory-mapped cache for fast reads."""

    path: Path
    info: dict[str, Any]
    manifest: dict[str, Any]
    cache_dir: Path

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def n_frames(self) -> int:
        return int(self.info["frames"])

    def frames(self) -> np.ndarray:
        """(T, H, W, 3) uint8, memory-mapped from the decoded cache (decoded on first use)."""
        T, H, W = self.n_frames, self.info["height"], self.info["width"]
        cache = self.cache_dir / f"{self.name}.frames.npy"
        if cache.exists():
            arr = np.load(cache, mmap_mode="r")
            if arr.shape == (T, H, W, 3):
                return arr
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(T, H, W, 3))
        n = 0
        for i, f in enumerate(read_video(self.path / "video.mp4")):
            if i >= T or f.shape != (H, W, 3):
                raise DatasetError(f"{self.path / 'video.mp4'}: frame {i} has shape {f.shape}; episode.json says "
                                   f"{T} frames of {W}x{H}")
            out[i] = f
            n += 1
        if n != T:
            raise DatasetError(f"{self.path / 'video.mp4'}: decoded {n} frames, episode.json says {T}")
        out.flush()
        del out
        os.replace(tmp, cache)
        return np.load(cache, mmap_mode="r")

    def audio(self) -> np.ndarray:
        """(T * samples_per_frame,) float32 mono."""
        data, sr = read_wav(self.path / "audio.wav")
        spf = self.manifest["samples_per_frame"]
        if sr != self.manifest["sample_rate"] or len(data) != self.n_frames * spf:
            raise DatasetError(f"{self.path / 'audio.wav'}: {len(data)} samples at {sr} Hz; expected "
                               f"{self.n_frames * spf} at {self.manifest['sample_rate']} Hz")
        return data

    def records(self) -> list[dict[str, Any]]:
        path = self.path / "records.jsonl.gz"
        try:
            with gzip.open(path, "rt") as f:
                recs = [json.loads(line) for line in f]
        except (OSError, EOFError, json.JSONDecodeError) as e:
            raise DatasetError(f"{path}: unreadable ({e})") from e
        if len(recs) != self.n_frames:
            raise DatasetError(f"{path}: {len(recs)} records for {self.n_frames} frames")
        return recs

    def actions(self) -> np.ndarray:
        """(T,) int64 action ids; -1 where the frame has no action (e.g. imported video)."""
        return np.array([-1 if r.get("action") is None else r["action"] for r in self.records()], np.int64)


class Dataset:
    """A dataset folder: its manifest and complete episodes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.exists():
            raise DatasetError(f"{mpath}: not found; is {self.path} a worldstream dataset? "
                               f"(create one with `worldstream record` or `worldstream import`)")
        try:
            self.manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{mpath}: not valid JSON ({e})") from e
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise DatasetError(f"{mpath}: format {self.manifest.get('format')!r} v{self.manifest.get('version')}; "
                               f"this worldstream reads {FORMAT!r} v{VERSION}")
        self.episodes = []
        for e in self.manifest["episodes"]:
            epath = self.path / "episodes" / e["name"]
            info = json.loads((epath / "episode.json").read_text())
            self.episodes.append(Episode(epath, info, self.manifest, self.path / ".cache"))

    def split(self, name: str) -> list[Episode]:
        """Episodes of one split: 'train' or 'heldout'."""
        return [e for e in self.episodes if e.info["split"] == name]

    @property
    def action_names(self) -> list[str]:
        return list(self.manifest["actions"]["names"])

    def __len__(self) -> int:
        return len(self.episodes)

    def __repr__(self) -> str:
        return f"Dataset({self.path}, {len(self)} episodes, {self.manifest['total_frames']} frames)"


__all__ = ["Dataset", "DatasetError", "Episode", "EpisodeWriter", "MediaError", "split_of", "write_manifest"]
