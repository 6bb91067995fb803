"""Training clips from a latent cache (``worldstream encode``): latents, actions and the prompt.

A clip is K chunks of consecutive latent frames of one episode, with the action of every
frame and the caption in force at its last frame (the latest caption at or before it).

Batches are bucketed by latent size, so clips of different resolutions and aspect ratios train
in the same run without cropping (each batch has one size).

``change_share`` > 0 draws that share of clips around a caption change (a condition the
recording changed: "it begins to snow"; the world blends into it over a second): the change falls
inside the clip, or at most half a clip before it, so the clip's caption is the new one while its
first chunks mostly still show the old condition. In plain draws only ~4% of clips hold a change (log.md,
thirteenth session): almost every clip's history already shows what its caption says, so a
model learns to copy the history and to ignore the prompt.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_json, load_tensors
from .format import Dataset, DatasetError, Episode


@dataclasses.dataclass
class LatentClip:
    video: torch.Tensor  # (B, F, C, h, w) float32
    audio: torch.Tensor | None  # (B, F * tokens_per_frame, Ca)
    actions: torch.Tensor  # (B, F) long, -1 = none
    captions: list[str]  # B prompts ("" when the episode has none)
    start: list[tuple[Episode, int]]  # (episode, first frame) per clip

    def to(self, device) -> "LatentClip":
        """The tensors on ``device`` (clips are drawn on the CPU, the same draws for any device)."""
        return dataclasses.replace(self, video=self.video.to(device), actions=self.actions.to(device),
                                   audio=None if self.audio is None else self.audio.to(device))


def dataset_paths(dataset: str | Path) -> list[Path]:
    """One dataset folder, or several separated by commas (e.g. two resolutions)."""
    return [Path(p.strip()) for p in str(dataset).split(",") if p.strip()]


class LatentClips:
    """Clips from one or more datasets (comma-separated) that share fps, actions and autoencoders."""

    def __init__(self, dataset: str | Path, name: str, split: str, frames: int, seed: int = 0,
                 change_share: float = 0.0):
        if not 0.0 <= change_share <= 1.0:
            raise ValueError(f"change_share {change_share}: a share of clips, from 0 to 1")
        self.datasets = [Dataset(p) for p in dataset_paths(dataset)]
        self.ds = self.datasets[0]  # manifest (fps, actions) and autoencoders are shared by all
        self.frames = frames
        self.change_share = change_share
        self.rng = np.random.default_rng(seed)
        self.items = []
        for ds in self.datasets:
            self._load(ds, name, split)
        if not self.items:
            raise DatasetError(f"{dataset}: no {split} episodes with {frames} latent frames")
        self.buckets: dict[tuple, list[int]] = {}
        for i, it in enumerate(self.items):
            self.buckets.setdefault(tuple(it["video"].shape[1:]), []).append(i)
        a = self.items[0]["audio"]
        self.tokens_per_frame = a.shape[0] // self.items[0]["video"].shape[0] if a is not None else 0

    def frame_change_std(self) -> float:
        """The std of a latent frame's change from the one before, over every episode (what a world
        model that predicts around the previous frame is preconditioned with)."""
        total, n = 0.0, 0
        for it in self.items:
            v = it["video"].float()
            total += float(((v[1:] - v[:-1]) ** 2).sum())
            n += v[1:].numel()
        return (total / n) ** 0.5

    def _load(self, ds: Dataset, name: str, split: str) -> None:
        root = ds.path / "latents" / name
        if not (root / "config.json").exists():
            have = sorted(q.parent.name for q in (ds.path / "latents").glob("*/config.json"))
            raise DatasetError(f"{ds.path}: no latent cache named {name!r}"
                               + (f" (it has {', '.join(have)}: pass --latents NAME)" if have else "")
                               + f"; encode it with `worldstream encode --data {ds.path} --name {name}`")
        ident = load_json(root / "config.json")
        if ds is self.ds:
            self.ident = ident
        else:
            same = all((ident.get(k) or {}).get("sha256") == (self.ident.get(k) or {}).get("sha256")
                       for k in ("video_ae", "audio_ae"))
            if not same or ds.manifest["actions"]["names"] != self.ds.manifest["actions"]["names"] \
                    or ds.manifest["fps"] != self.ds.manifest["fps"]:
                raise DatasetError(f"{ds.path} does not match {self.ds.path}: datasets trained together need the "
                                   "same fps, action vocabulary and autoencoders (encode both with the same ones)")
        frames = self.frames
        for ep in ds.split(split):
            f = root / f"{ep.name}.safetensors"
            if not f.exists():
                raise DatasetError(f"{f}: missing; run `worldstream encode` for {ds.path} first")
            t = load_tensors(f)
            T = t["video"].shape[0]
            if T < frames:
                continue
            recs = ep.records()
            caption, active, changes = "", [], []
            for i, r in enumerate(recs[:T]):
                if i and r.get("caption") and r["caption"] != caption:
                    changes.append(i)
                caption = r.get("caption") or caption
                active.append(caption)
            self.items.append({"episode": ep, "video": t["video"], "audio": t.get("audio"), "captions": active,
                               "changes": changes,
                               "actions": torch.tensor([-1 if r.get("action") is None else r["action"] for r in recs[:T]])})

    def sample(self, batch: int) -> LatentClip:
        keys = sorted(self.buckets)
        bucket = self.buckets[keys[int(self.rng.integers(len(keys)))]]
        vids, auds, acts, caps, starts = [], [], [], [], []
        changing = [i for i in bucket if self.items[i]["changes"]] if self.change_share else []
        for _ in range(batch):
            # (no extra draws when change_share is 0: the clips are those of a run without it)
            if changing and self.rng.random() < self.change_share:
                it = self.items[changing[int(self.rng.integers(len(changing)))]]
                s = self._around_change(it)
            else:
                it = self.items[bucket[int(self.rng.integers(len(bucket)))]]
                s = int(self.rng.integers(it["video"].shape[0] - self.frames + 1))
            vids.append(it["video"][s : s + self.frames].float())
            if it["audio"] is not None:
                tpf = self.tokens_per_frame
                auds.append(it["audio"][s * tpf : (s + self.frames) * tpf].float())
            acts.append(it["actions"][s : s + self.frames])
            caps.append(it["captions"][s + self.frames - 1])
            starts.append((it["episode"], s))
        return LatentClip(torch.stack(vids), torch.stack(auds) if auds else None, torch.stack(acts), caps, starts)

    def _around_change(self, it: dict) -> int:
        """A start whose clip ends at or after one of the episode's caption changes (so the clip's
        caption is the new one) and begins at most half a clip after it (the world still blending in)."""
        c = it["changes"][int(self.rng.integers(len(it["changes"])))]
        lo = max(0, c - self.frames + 1)
        hi = min(it["video"].shape[0] - self.frames, c + self.frames // 2)
        return int(self.rng.integers(lo, hi + 1))  # (never empty: the episode holds a clip, c < its length)

    def fixed(self, batch: int, seed: int = 4321) -> LatentClip:
        keep, self.rng = self.rng, np.random.default_rng(seed)
        try:
            return self.sample(batch)
        finally:
            self.rng = keep


class PromptBank:
    """Text embeddings of prompts, computed once each by the frozen encoder, padded per batch."""

    def __init__(self, encoder=None):
        if encoder is None:  # the frozen encoder, or its precomputed table (``WORLDSTREAM_TEXT_TABLE``)
            from ..tokenizers.text import prompt_encoder

            encoder = prompt_encoder()
        self.encoder = encoder

    def batch(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens (B, N, 384), mask (B, N) bool, pooled (B, 384)); '' gives no tokens and zeros."""
        embs = [self.encoder.encode(p) for p in prompts]
        n = max(1, max(e.tokens.shape[0] for e in embs))
        tokens = torch.zeros(len(embs), n, self.encoder.width)
        mask = torch.zeros(len(embs), n, dtype=torch.bool)
        for i, e in enumerate(embs):
            tokens[i, : e.tokens.shape[0]] = e.tokens
            mask[i, : e.tokens.shape[0]] = True
        return tokens, mask, torch.stack([e.pooled for e in embs])
