"""Fast random access to training clips: frames from the memory-mapped cache, audio in RAM."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .format import Dataset, DatasetError


class ClipSampler:
    """Random clips of ``frames`` consecutive frames (and their audio) from one split of a dataset.

    Episodes shorter than a clip are skipped. Frames are (T, H, W, 3) uint8; audio is
    (T * samples_per_frame,) float32. All episodes in one batch share a size (native resolution:
    ``batch`` groups by resolution bucket).
    """

    def __init__(self, dataset: str | Path | Dataset, split: str, frames: int, seed: int = 0,
                 with_frames: bool = True, with_audio: bool = False):
        self.ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        self.frames = frames
        self.episodes = [e for e in self.ds.split(split) if e.n_frames >= frames]
        if not self.episodes:
            raise DatasetError(f"{self.ds.path}: no {split} episodes with at least {frames} frames")
        self.rng = np.random.default_rng(seed)
        self.spf = self.ds.manifest["samples_per_frame"]
        self._frames = [e.frames() for e in self.episodes] if with_frames else None
        self._audio = [e.audio() for e in self.episodes] if with_audio else None
        sizes = [(e.info["width"], e.info["height"]) for e in self.episodes]
        self.buckets: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(sizes):
            self.buckets.setdefault(s, []).append(i)

    def sample(self, batch: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(frames (B, T, H, W, 3) uint8 or None, audio (B, T*spf) float32 or None)."""
        keys = list(self.buckets)
        bucket = self.buckets[keys[int(self.rng.integers(len(keys)))]]
        picks = [bucket[int(self.rng.integers(len(bucket)))] for _ in range(batch)]
        starts = [int(self.rng.integers(self.episodes[i].n_frames - self.frames + 1)) for i in picks]
        frames = audio = None
        if self._frames is not None:
            frames = np.stack([self._frames[i][s : s + self.frames] for i, s in zip(picks, starts)])
        if self._audio is not None:
            audio = np.stack([self._audio[i][s * self.spf : (s + self.frames) * self.spf] for i, s in zip(picks, starts)])
        return frames, audio

    def fixed(self, n: int, seed: int = 1234) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The same n clips every call (for evaluation)."""
        keep = self.rng
        self.rng = np.random.default_rng(seed)
        try:
            return self.sample(n)
        finally:
            self.rng = keep
