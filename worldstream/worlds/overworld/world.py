"""The overworld: an endless, procedurally generated top-down world with exact ground truth.

``Overworld`` owns one world (a seed): its map, inhabitants, renderer and sound. An episode is
``reset`` then ``step(action)`` per frame; every step returns the frame, its audio, and the
ground-truth state. ``view_at`` renders the view from any position and time without touching
the episode, which is what revisit benchmarks compare a model's memory against.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .audio import AudioSynth
from .conditions import KINDS, Blend, Conditions, change_caption, scene_caption
from .entities import Population
from .render import Renderer
from .sprites import HEADING_VECTORS, HEADINGS
from .terrain import BLOCKING_GROUND, DEEP_WATER, GROUNDS, OBJECTS, WATER, TileMap

# Action vocabulary: idle, 8 walking directions, the same 8 running. Index = the stored action id.
ACTIONS: tuple[str, ...] = ("idle",) + tuple(f"walk_{h}" for h in HEADINGS) + tuple(f"run_{h}" for h in HEADINGS)


@dataclasses.dataclass(frozen=True)
class OverworldConfig:
    """Everything that defines an overworld stream. Stored in every dataset manifest."""

    seed: int = 0  # the world: terrain, objects, inhabitants
    width: int = 128  # frame width in pixels
    height: int = 128  # frame height in pixels
    tile_px: int = 8  # pixels per tile side: the zoom (the view spans width/tile_px tiles)
    fps: int = 24  # frames per second of world time
    sample_rate: int = 24000  # audio samples per second; must be a multiple of fps
    walk_speed: float = 3.0  # tiles per second
    run_speed: float = 6.0  # tiles per second with the run modifier
    player_half: float = 0.3  # half side of the player's collision box, in tiles
    stride: float = 0.55  # tiles walked per footstep
    blend_seconds: float = 1.0  # how long a condition change takes to blend in

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8 or self.width > 4096 or self.height > 4096:
            raise ValueError(f"frame size {self.width}x{self.height} out of range 8..4096")
        if self.tile_px < 4 or self.tile_px > 64:
            raise ValueError(f"tile_px {self.tile_px} out of range 4..64")
        if self.fps <= 0 or self.sample_rate % self.fps:
            raise ValueError(f"sample_rate {self.sample_rate} must be a whole multiple of fps {self.fps}")

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps


def action_index(action: int | str) -> int:
    """Action id from a name or an id, with a clear error for anything else."""
    if isinstance(action, (int, np.integer)) and not isinstance(action, bool):
        if 0 <= int(action) < len(ACTIONS):
            return int(action)
        raise ValueError(f"action id {action} out of range 0..{len(ACTIONS) - 1}")
    if isinstance(action, str) and action in ACTIONS:
        return ACTIONS.index(action)
    raise ValueError(f"unknown action {action!r}; known actions: {', '.join(ACTIONS)}")


@dataclasses.dataclass
class Step:
    """What one frame of the world produced."""

    frame: np.ndarray  # (H, W, 3) uint8
    audio: np.ndarray  # (samples_per_frame,) float32 in [-1, 1]
    state: dict[str, Any]  # ground truth, JSON-ready
    caption: str | None  # set on frames where conditions change (and on the first frame)


class Overworld:
    """One world, streamed one frame at a time."""

    def __init__(self, config: OverworldConfig | None = None):
        self.config = cfg = config or OverworldConfig()
        self.map = TileMap(cfg.seed)
        self.population = Population(self.map, cfg.seed)
        self.renderer = Renderer(self.map, self.population, cfg.width, cfg.height, cfg.tile_px)
        self.audio = AudioSynth(cfg.sample_rate, cfg.fps, cfg.seed)
        self.reset()

    # -- episode -------------------------------------------------------------------------------
    def reset(self, seed: int = 0, conditions: Conditions | None = None,
              position: tuple[float, float] | None = None) -> Step:
        """Start an episode: a spawn point and starting conditions drawn from ``seed``."""
        self.rng = np.random.default_rng([self.config.seed, seed])
        self.episode_seed = seed
        if conditions is None:
            conditions = Conditions(**{k: v[int(self.rng.integers(len(v)))] for k, v in KINDS.items()})
            conditions = conditions.replace(weather="clear") if self.rng.random() < 0.5 else conditions
        if position is None:
            position = self.find_spawn(float(self.rng.uniform(-2000, 2000)), float(self.rng.uniform(-2000, 2000)))
        self.x, self.y = float(position[0]), float(position[1])
        self.heading = 4  # facing south, toward the viewer's bottom edge
        self.frame_index = 0
        self.walked = 0.0
        self.target = conditions
        self.blend = Blend.of(conditions)
        self.audio.reset(seed)
        self._last = self._produce(moved=False, blocked=False, running=False, step_sound=None,
                                   caption=scene_caption(conditions, self.rng), action=0)
        return self._last

    def find_spawn(self, x: float, y: float, room: int = 400) -> tuple[float, float]:
        """The walkable tile centre nearest (x, y), searching outward in rings, that is not a
        pocket: at least ``room`` tiles must be reachable from it on foot."""
        cx, cy = int(math.floor(x)), int(math.floor(y))
        for r in range(0, 200):
            for dy in range(-r, r + 1):
                for dx in (-r, r) if abs(dy) != r else range(-r, r + 1):
                    px, py = cx + dx + 0.5, cy + dy + 0.5
                    if self.map.walkable(px, py, self.config.player_half) and self.map.reachable_tiles(px, py, room) >= room:
                        return px, py
        raise RuntimeError(f"no walkable ground within 200 tiles of ({x}, {y})")

    @property
    def t(self) -> float:
        """World time of the current frame, in seconds."""
        return self.frame_index / self.config.fps

    def set_conditions(self, caption: str | None = None, **changes: str) -> str:
        """Change weather / time / season (blends in over ``blend_seconds``); returns the caption.

        With no caption given, one is drawn from the paraphrases of the changed condition(s).
        """
        new = self.target.replace(**changes)
        if caption is None:
            changed = [k for k in KINDS if getattr(new, k) != getattr(self.target, k)]
            if not changed:
                caption = scene_caption(new, self.rng)
            else:
                parts = [change_caption(k, getattr(new, k), self.rng) for k in changed]
                caption = ", ".join(parts)
        self.target = new
        self._pending_caption = caption
        return caption

    def step(self, action: int | str) -> Step:
        """Advance one frame with an action (name or id from ``ACTIONS``)."""
        a = action_index(action)
        name = ACTIONS[a]
        cfg = self.config
        moved = blocked = running = False
        if name != "idle":
            kind, h = name.split("_")
            running = kind == "run"
            self.heading = HEADINGS.index(h)
            dx, dy = HEADING_VECTORS[self.heading] * ((cfg.run_speed if running else cfg.walk_speed) / cfg.fps)
            dx, dy = float(dx), float(dy)
            ox, oy = self.x, self.y
            # Move per axis so the player slides along walls (as in most top-down games).
            if not self.map.blocked(self.x + dx, self.y, cfg.player_half):
                self.x += dx
            if not self.map.blocked(self.x, self.y + dy, cfg.player_half):
                self.y += dy
            dist = math.hypot(self.x - ox, self.y - oy)
            moved = dist > 1e-9
            blocked = dist < 0.999 * math.hypot(dx, dy)
            before = int(self.walked / cfg.stride)
            self.walked += dist
            step_sound = self.map.ground_at(self.x, self.y) if int(self.walked / cfg.stride) != before else None
        else:
            step_sound = None
        self.frame_index += 1
        self.blend = self.blend.step(self.target, 1.0 / (cfg.blend_seconds * cfg.fps))
        caption = getattr(self, "_pending_caption", None)
        self._pending_caption = None
        self._last = self._produce(moved, blocked, running, step_sound, caption, a)
        return self._last

    # -- rendering and ground truth -------------------------------------------------------------
    def view_at(self, x: float, y: float, t: float, conditions: Conditions | Blend | None = None,
                heading: int = 4, draw_player: bool = True) -> np.ndarray:
        """The frame the camera shows with the player at (x, y) at time t (s), for any place and time.

        Conditions default to the current blend. Pure: the episode is not touched.
        """
        blend = self.blend if conditions is None else conditions if isinstance(conditions, Blend) else Blend.of(conditions)
        return self.renderer.view(x, y, t, blend, heading=heading, step=0, draw_player=draw_player)

    def water_near(self, radius: int = 4) -> float:
        """Fraction of water tiles within ``radius`` tiles of the player (drives the water sound)."""
        g, _, _ = self.map.region(int(self.x) - radius, int(self.y) - radius, 2 * radius + 1, 2 * radius + 1)
        return float(np.isin(g, (WATER, DEEP_WATER)).mean())

    def _produce(self, moved, blocked, running, step_sound, caption, action) -> Step:
        step_phase = int(self.walked / self.config.stride) % 2
        frame = self.renderer.view(self.x, self.y, self.t, self.blend, heading=self.heading, step=step_phase)
        audio = self.audio.frame(self.blend, step_sound, running, self.water_near())
        ground = self.map.ground_at(self.x, self.y)
        assert not BLOCKING_GROUND[ground], "player inside water: collision bug"
        state = {
            "frame": self.frame_index,
            "t": round(self.t, 6),
            "x": round(self.x, 5),
            "y": round(self.y, 5),
            "heading": HEADINGS[self.heading],
            "action": ACTIONS[action],
            "moved": moved,
            "blocked": blocked,
            "running": running,
            "ground": GROUNDS[ground],
            "footstep": step_sound is not None,
            "weather": self.target.weather,
            "time": self.target.time,
            "season": self.target.season,
            "blend": self.blend.as_dict(),
        }
        return Step(frame, audio, state, caption)


__all__ = ["ACTIONS", "Overworld", "OverworldConfig", "Step", "action_index", "Conditions", "OBJECTS"]
