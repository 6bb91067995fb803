"""A player-like explorer that drives the overworld when recording data.

It walks with momentum, stops, turns, runs, bumps into obstacles and slides along them, and
deliberately loops back to a place it saw 10-60 s earlier (by the shortest walking path), so
datasets exercise a model's memory. It also plays director: now and then it changes the weather, time or season.
"""
from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

from .conditions import KINDS
from .render import heading_of
from .sprites import HEADING_VECTORS
from .world import ACTIONS, HEADINGS, Overworld


@dataclasses.dataclass(frozen=True)
class ExplorerConfig:
    """Tendencies of the recording policy (per second rates unless noted)."""

    turn_rate: float = 0.3  # gentle 45-degree turns per second while walking
    stop_rate: float = 0.12  # stops per second of walking
    stop_seconds: tuple[float, float] = (0.4, 2.5)  # how long a stop lasts
    run_rate: float = 0.08  # per second: start a run
    run_seconds: tuple[float, float] = (1.0, 4.0)
    bump_frames: int = 4  # keep pushing into an obstacle this long before turning away
    # the share of bumps where it keeps pushing for push_seconds instead (0: never, the shipped
    # recordings): a player holding a key against water or rock for a second or more, which a
    # world model must learn to answer by not moving (log.md, twelfth session)
    push_share: float = 0.0
    push_seconds: tuple[float, float] = (1.0, 3.0)
    loop_back_rate: float = 0.04  # per second: go back to an earlier place
    loop_back_seconds: tuple[float, float] = (10.0, 60.0)  # how far back that place was seen
    loop_back_timeout: float = 25.0  # give up returning after this many seconds
    condition_rate: float = 1 / 25  # per second: change the weather, time or season


TRAIL_EVERY = 6  # frames between remembered trail points (a quarter second at 24 fps)


class Explorer:
    """Chooses an action each frame; may also change conditions. Deterministic given its rng."""

    def __init__(self, world: Overworld, rng: np.random.Generator, config: ExplorerConfig | None = None):
        self.world = world
        self.rng = rng
        self.cfg = config or ExplorerConfig()
        self.fps = world.config.fps
        # the trail: (frame, x, y) every TRAIL_EVERY frames, long enough for the oldest loop-back
        self.history: collections.deque[tuple[int, float, float]] = collections.deque(
            maxlen=int(self.cfg.loop_back_seconds[1] * self.fps / TRAIL_EVERY) + 2)
        self.direction = int(rng.integers(8))
        self.mode = "walk"
        self.mode_left = 0  # frames left in a stop or run
        self.pushing = 0  # frames spent blocked
        self.push_limit = self.cfg.bump_frames  # blocked frames before turning away, drawn at each bump
        self.target: tuple[int, float, float] | None = None  # loop-back target (frame, x, y)
        self.waypoints: list[tuple[float, float]] = []  # tile centres of the path back, next one last
        self.target_deadline = 0
        self.revisit_of: int | None = None  # set on the frame a loop-back arrives

    def _chance(self, rate_per_second: float) -> bool:
        return self.rng.random() < rate_per_second / self.fps

    def act(self) -> tuple[str, dict[str, str] | None]:
        """(action name, condition changes or None) for the next frame."""
        w, c, f = self.world, self.cfg, self.world.frame_index
        if f % TRAIL_EVERY == 0 and self.target is None:
            self.history.append((f, w.x, w.y))
        self.revisit_of = None
        last = w._last.state
        self.pushing = self.pushing + 1 if last["blocked"] else 0
        if self.pushing == 1:  # a new bump (no random draw when pushing is off: recordings stay as they were)
            long = c.push_share > 0 and self.rng.random() < c.push_share
            self.push_limit = int(self.rng.uniform(*c.push_seconds) * self.fps) if long else c.bump_frames
        holding = self.pushing > 0 and self.push_limit > c.bump_frames  # a long push: no random turns

        changes = None
        if self._chance(c.condition_rate):
            kind = self.rng.choice(["weather", "weather", "weather", "time", "time", "season"])
            options = [v for v in KINDS[kind] if v != getattr(w.target, kind)]
            changes = {kind: str(self.rng.choice(options))}

        if self.target is None and self.mode == "walk" and self._chance(c.loop_back_rate):
            lo, hi = c.loop_back_seconds
            trail = list(self.history)
            far = [i for i, h in enumerate(trail)
                   if lo * self.fps <= f - h[0] <= hi * self.fps and math.hypot(h[1] - w.x, h[2] - w.y) > 4.0]
            if far:
                target = trail[far[int(self.rng.integers(len(far)))]]
                path = w.map.shortest_path((w.x, w.y), (target[1], target[2]))
                if path is not None:
                    self.target = target
                    self.waypoints = [(tx + 0.5, ty + 0.5) for tx, ty in reversed(path)]
                    self.target_deadline = f + int(c.loop_back_timeout * self.fps)
        if self.target is not None:
            return self._return_step(), changes

        if self.mode == "stop":
            self.mode_left -= 1
            if self.mode_left <= 0:
                self.mode = "walk"
            return "idle", changes
        if self.mode == "run":
            self.mode_left -= 1
            if self.mode_left <= 0:
                self.mode = "walk"
        if self.pushing >= self.push_limit:  # bumped long enough: turn toward open ground
            self.direction = self._open_direction()
            self.pushing = 0
        elif not holding and self._chance(c.turn_rate):
            self.direction = (self.direction + int(self.rng.choice([-1, 1]))) % 8
        if self.mode == "walk" and self._chance(c.stop_rate):
            self.mode, self.mode_left = "stop", int(self.rng.uniform(*c.stop_seconds) * self.fps)
        elif self.mode == "walk" and self._chance(c.run_rate):
            self.mode, self.mode_left = "run", int(self.rng.uniform(*c.run_seconds) * self.fps)
        kind = "run" if self.mode == "run" else "walk"
        return f"{kind}_{HEADINGS[self.direction]}", changes

    def _open_direction(self) -> int:
        """A random heading whose next 1.5 tiles are free, preferring to turn away from the wall."""
        w = self.world
        free = []
        for turn in (-3, -2, 2, 3, 4, -1, 1):
            d = (self.direction + turn) % 8
            dx, dy = HEADING_VECTORS[d]
            if all(w.map.walkable(w.x + dx * s, w.y + dy * s, w.config.player_half) for s in (0.5, 1.0, 1.5)):
                free.append(d)
        return int(self.rng.choice(free)) if free else (self.direction + 4) % 8

    def _return_step(self) -> str:
        """Walk tile centre to tile centre along the planned path back to the target."""
        w = self.world
        tf, tx, ty = self.target
        stride = w.config.walk_speed / self.fps
        while self.waypoints and math.hypot(self.waypoints[-1][0] - w.x, self.waypoints[-1][1] - w.y) <= stride:
            self.waypoints.pop()
        if not self.waypoints or w.frame_index >= self.target_deadline:
            if math.hypot(tx - w.x, ty - w.y) < 1.0:
                self.revisit_of = tf
            self.target = None
            self.waypoints = []
            return "idle"
        wx, wy = self.waypoints[-1]
        self.direction = heading_of(wx - w.x, wy - w.y)
        return f"walk_{HEADINGS[self.direction]}"


def explore(world: Overworld, episode_seed: int, frames: int,
            config: ExplorerConfig | None = None):
    """Run an episode driven by the explorer: yields (step, action id, revisit_of) per frame.

    ``action id`` is the action that produced this frame (0 = idle for the first frame), and
    ``revisit_of`` is set on the frame a loop-back arrives. Seeded: same seed, same episode.
    """
    step = world.reset(seed=episode_seed)
    policy = Explorer(world, np.random.default_rng([world.config.seed, episode_seed, 1]), config)
    action = 0
    for _ in range(frames):
        yield step, action, policy.revisit_of
        name, changes = policy.act()
        if changes:
            world.set_conditions(**changes)
        action = ACTIONS.index(name)
        step = world.step(action)
