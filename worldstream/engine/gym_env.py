"""A ``gymnasium.Env`` whose dynamics are the world model: an agent can train inside it.

Each ``step`` is one chunk of the stream (one frame for the default model): the action applies
to that chunk, the observation is its last RGB frame, ``info`` carries its sound and all its
frames. There is no reward model: reward is 0 and episodes end by truncation after
``max_frames``; wrap the env to add a task (as with ``worldstream/Overworld-v0``, whose
observation and action spaces this env shares when the model was trained on the overworld).
``reset(options={"prompt": ..., "image": ...})`` starts a new world from a prompt and/or image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from .stream import StreamConfig, World


class WorldModelEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 24}

    def __init__(self, checkpoint: str | Path | World | None = None, prompt: str = "", max_frames: int = 2400,
                 config: StreamConfig | None = None, render_mode: str | None = "rgb_array"):
        self.world = checkpoint if isinstance(checkpoint, World) else World.load(checkpoint)
        self.prompt, self.max_frames, self.config = prompt, max_frames, config
        self.render_mode = render_mode
        w = self.world
        self.metadata = {**self.metadata, "render_fps": w.fps, "audio_sample_rate": w.sample_rate}
        self.observation_space = gym.spaces.Box(0, 255, (w.height, w.width, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(w.vocab))
        self.stream = None
        self._frame: np.ndarray | None = None

    def get_action_meanings(self) -> list[str]:
        return list(self.world.vocab.names)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        stream_seed = int(self.np_random.integers(2**31)) if seed is None else seed
        self.stream = self.world.stream(options.get("prompt", self.prompt), image=options.get("image"),
                                        seed=stream_seed, config=self.config)
        return self._observe(self.stream.step())

    def step(self, action):
        if self.stream is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        obs, info = self._observe(self.stream.step(int(action)))
        truncated = self.stream.frame_index >= self.max_frames
        return obs, 0.0, False, truncated, info

    def _observe(self, chunk) -> tuple[np.ndarray, dict[str, Any]]:
        self._frame = chunk.frames[0, -1]
        audio = None if chunk.audio is None else chunk.audio[0]
        return self._frame, {"audio": audio, "frames": chunk.frames[0], "seconds": chunk.seconds}

    def render(self) -> np.ndarray:
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        return self._frame


def register() -> None:
    """Make ``gymnasium.make("worldstream/WorldModel-v0", checkpoint=...)`` work (idempotent)."""
    if "worldstream/WorldModel-v0" not in gym.registry:
        gym.register(id="worldstream/WorldModel-v0", entry_point="worldstream.engine.gym_env:WorldModelEnv")
