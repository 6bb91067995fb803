"""Self-forcing on still scenes: the teacher learns on its own free runs of a scene nobody moves in.

With every key idle the game's picture does not change (only weather particles, water and the light
move), so whatever a stream changes in a still scene is its own error, and the scene's first frame
is the right answer at any depth. Standing still, the shipped pixel model loses about 6 dB each time
the frame count doubles and stamps the player into every patch (log.md, forty-seventh session): an
error it makes on its own frames, which teacher forcing never shows it.

A few rows of each batch are such runs. Each slot keeps a still scene's first frame and the last
frames the model itself made of it; the row's history is those frames, its actions idle, and its
target the first frame, at t = 1 as a one-step stream makes each frame (``levels="next"``). The frame
the training pass makes of it (detached) is the slot's next own frame, so each slot takes one stream
step per training step at no extra cost and its history deepens until, after a random depth (up to
``depth`` frames), it starts anew on a fresh scene. As in Self Forcing (Huang et al. 2025) the model
trains on the history it makes itself; unlike there, the target is known, so no teacher or critic is
needed. The frames come from slightly older weights (one step per frame of depth), as a replay buffer's.

The slots are not saved with the run: a resumed run starts them on fresh scenes.

Measured (log.md, forty-eighth session): with runs up to 192 frames deep (pixel48, ~50 scenes in 750 steps)
the model learns to hold only the scenes it trained on; with runs up to 24 frames (pixel48b, ~220 scenes in
327 steps) a held-out still stream stays 6-8 dB closer to its start than the shipped model's. Many scenes
matter more than deep runs. A moving stream still drifts: these runs never move.
"""
from __future__ import annotations

import dataclasses

import torch

from ..data.latents import LatentClip


class StillRuns:
    """``slots`` free runs of still scenes, the last ``slots`` rows of every global batch."""

    def __init__(self, slots: int, chunks: int, chunk_frames: int, depth: int, idle: int, seed: int = 0):
        if slots < 1 or depth < 1 or chunks < 2:
            raise ValueError(f"still runs: {slots} slots, depth {depth}, {chunks} chunks; need 1 or more slots and "
                             "frames, and 2 or more chunks a clip (history, then the frame to make)")
        self.slots, self.chunks, self.cf, self.depth, self.idle = slots, chunks, chunk_frames, depth, idle
        self.gen = torch.Generator().manual_seed(seed + 7919)  # the same on every DDP rank
        self.start: torch.Tensor | None = None  # (S, cf, C, h, w) the scene: every frame of a still chunk
        self.history: torch.Tensor | None = None  # (S, (chunks - 1) * cf, C, h, w) the newest frames of the run
        self.audio: torch.Tensor | None = None  # (S, chunks * cf * tpf, Ca) the scene's clip's sound (given, no loss)
        self.captions = [""] * slots
        self.age = torch.zeros(slots, dtype=torch.long)  # own frames made so far
        self.limit = torch.zeros(slots, dtype=torch.long)  # the depth at which it starts anew (0: needs a scene)

    def rows(self, clip: LatentClip) -> LatentClip:
        """``clip`` (the global batch) with its last rows replaced by the runs; a slot that starts anew
        takes its row's first frame as the scene, with that clip's caption and sound."""
        B, S = clip.video.shape[0], self.slots
        if S >= B:
            raise ValueError(f"still runs: {S} rows of a batch of {B} leave none for the data; use fewer")
        cf, hist = self.cf, (self.chunks - 1) * self.cf
        if self.start is None:
            self.start = torch.zeros((S, cf) + tuple(clip.video.shape[2:]))
            self.history = torch.zeros((S, hist) + tuple(clip.video.shape[2:]))
            if clip.audio is not None:
                self.audio = torch.zeros((S,) + tuple(clip.audio.shape[1:]))
        for i in (self.age >= self.limit).nonzero()[:, 0].tolist():
            r = B - S + i
            first = clip.video[r, 0].float()
            self.start[i] = first
            self.history[i] = first  # a still scene's real history is the same frame
            if self.audio is not None:
                self.audio[i] = clip.audio[r]
            self.captions[i] = clip.captions[r]
            self.age[i] = 0
            self.limit[i] = int(torch.randint(1, self.depth + 1, (1,), generator=self.gen))
        video = clip.video.clone()
        video[B - S:] = torch.cat([self.history, self.start], 1).to(video.dtype)
        actions = clip.actions.clone()
        actions[B - S:] = self.idle
        audio = None
        if clip.audio is not None:
            audio = clip.audio.clone()
            audio[B - S:] = self.audio.to(audio.dtype)
        return dataclasses.replace(clip, video=video, audio=audio, actions=actions,
                                   captions=list(clip.captions[: B - S]) + list(self.captions))

    def draws(self, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The runs' rows made as a stream makes them: history clean, the last chunk from pure noise (t = 1),
        the sound given (no loss), the prompt and the idle keys never dropped."""
        S = self.slots
        out = dict(draws)
        for k, v in (("tv", 0.0), ("ta", 0.0), ("drop_text", False), ("drop_action", False), ("task", 0)):
            out[k] = draws[k].clone()
            out[k][-S:] = v  # (task 0: joint)
        out["tv"][-S:, -1] = 1.0
        return out

    def advance(self, made: torch.Tensor) -> float:
        """``made`` (S, cf, C, h, w): the frames the training pass made for the runs' rows, their next own
        frames. Returns their mean squared error against the scene (how far the runs have drifted)."""
        made = made.detach().float().cpu()
        err = float((made - self.start).square().mean())
        self.history = torch.cat([self.history[:, self.cf:], made], 1)
        self.age += 1
        return err
