"""The overworld as a ``gymnasium.Env``: RGB observations, discrete actions, audio in ``info``.

Registered as ``worldstream/Overworld-v0``. There is no built-in reward or goal (it is a world,
not a game): reward is 0, episodes end by truncation after ``max_frames``. Wrap it to add a task.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from .world import ACTIONS, Overworld, OverworldConfig


class OverworldEnv(gym.Env):
    """Gymnasium interface to the overworld. ``info`` holds ``audio`` (samples_per_frame float32),
    ``state`` (ground truth) and ``caption`` (or None)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 24}

    def __init__(self, config: OverworldConfig | None = None, max_frames: int = 2400,
                 render_mode: str | None = "rgb_array", **config_overrides: Any):
        cfg = config or OverworldConfig(**config_overrides)
        self.world = Overworld(cfg)
        self.max_frames = max_frames
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": cfg.fps, "audio_sample_rate": cfg.sample_rate}
        self.observation_space = gym.spaces.Box(0, 255, (cfg.height, cfg.width, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(ACTIONS))
        self._frame: np.ndarray | None = None

    def get_action_meanings(self) -> list[str]:
        return list(ACTIONS)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31)) if seed is None else seed
        step = self.world.reset(seed=episode_seed, **(options or {}))
        self._frame = step.frame
        return step.frame, {"audio": step.audio, "state": step.state, "caption": step.caption}

    def step(self, action):
        step = self.world.step(int(action))
        self._frame = step.frame
        truncated = self.world.frame_index >= self.max_frames
        return step.frame, 0.0, False, truncated, {"audio": step.audio, "state": step.state, "caption": step.caption}

    def render(self) -> np.ndarray:
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        return self._frame


def register() -> None:
    """Make ``gymnasium.make("worldstream/Overworld-v0")`` work (idempotent)."""
    if "worldstream/Overworld-v0" not in gym.registry:
        gym.register(id="worldstream/Overworld-v0", entry_point="worldstream.worlds.overworld.env:OverworldEnv")
