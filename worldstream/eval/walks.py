"""Action following scored against the game itself.

A generated walk is only right if the view moves the way the real game would move it: walking
into water or a rock must stop the view, sliding along a wall must move it along one axis only.
For a held-out overworld recording the game can be replayed exactly (its manifest holds the world
config, the episode its world seed, the records the player's position), so the truth for every
span of a generated walk is the game's own displacement from the same start under the same keys.

Each 4-frame span is scored per axis: the judged scroll (`motion.scroll` between consecutive
despeckled frames, whole pixels, summed over the span) must have the sign of the game's
displacement (dead zones of 1 px; walking moves the view 4 px a span) or lie within 1.5 px of it
(a diagonal step of 1.4 px an axis rounds either way). The judge is run on the game's own frames
of the same walks too: its agreement there is the ceiling of the measure. Datasets without a
replayable game fall back to the looser rule of `motion.follows` (moved along the key, none
against), with no stop spans.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

from ..data.format import Episode
from .motion import despeckle, follows, scroll

SPAN = 4  # frames per judged span: 4 px of scroll at walking speed


def _sign(v: float, dead: float = 1.0) -> int:
    return 0 if abs(v) <= dead else (1 if v > 0 else -1)


def _axis_ok(judged: float, game: float) -> bool:
    return _sign(judged) == _sign(game) or abs(judged - game) <= 1.5


@dataclasses.dataclass
class GameWalk:
    """The game's answer to walking one way from a recorded frame: player positions in pixels
    (one per frame, the start first) and the frames the game draws."""

    positions: np.ndarray  # (n + 1, 2) x, y in pixels
    frames: list[np.ndarray]  # n frames (H, W, 3) uint8


@functools.lru_cache(maxsize=1)  # building a world (tile map, sprites) takes ~0.4 s; walks reuse it
def _world(config: tuple):
    from ..worlds.overworld.world import Overworld, OverworldConfig

    return Overworld(OverworldConfig(**dict(config)))


def replayable(episode: Episode) -> bool:
    """Whether the game that recorded this episode can be rebuilt (a built-in overworld recording)."""
    world = (episode.manifest.get("record_config") or {}).get("world")
    return episode.manifest.get("source", "").startswith("worldstream overworld") and isinstance(world, dict) \
        and "world_seed" in episode.info


def game_walk(episode: Episode, frame: int, actions: Sequence[str | int]) -> GameWalk:
    """Replay the game from the player's recorded position at ``frame`` under the recorded
    conditions, one frame per action."""
    from ..worlds.overworld.conditions import Blend, Conditions

    cfg = dict(episode.manifest["record_config"]["world"], seed=int(episode.info["world_seed"]))
    world = _world(tuple(sorted(cfg.items())))
    s = episode.records()[frame]["state"]
    world.reset(seed=0, conditions=Conditions(weather=s["weather"], time=s["time"], season=s["season"]),
                position=(s["x"], s["y"]))
    world.frame_index = frame  # the world's clock drives its animals and weather
    world.blend = Blend(**{k: np.array(v, np.float64) for k, v in s["blend"].items()})
    px = world.config.tile_px
    pos, frames = [(world.x * px, world.y * px)], []
    for a in actions:
        frames.append(world.step(a).frame)
        pos.append((world.x * px, world.y * px))
    return GameWalk(np.array(pos), frames)


@dataclasses.dataclass
class WalkScore:
    """Span counts of one or more walks. ``moving``: spans where the game moves the player;
    ``stopped``: spans where it does not (blocked); ``along``: spans where the view moved along the
    key at all, obstacles ignored (`motion.follows`, the rule before 2026-11-30)."""

    moving: int = 0
    moving_ok: int = 0
    stopped: int = 0
    stopped_ok: int = 0
    along: int = 0

    def add(self, other: "WalkScore") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def spans(self) -> int:
        return self.moving + self.stopped

    @property
    def rate(self) -> float:
        return (self.moving_ok + self.stopped_ok) / max(self.spans, 1)


def frame_scrolls(frames: list[np.ndarray]) -> list[tuple[int, int]]:
    """Whole-pixel scroll (dx, dy) between each pair of consecutive despeckled frames: what a span's
    judged move sums (so a view that moves under a pixel a frame reads as standing)."""
    clean = [despeckle(f) for f in frames]
    return [scroll(a, b, max_shift=3) for a, b in zip(clean, clean[1:])]  # running moves 2 px a frame


def score_walk(frames: list[np.ndarray], direction: str, truth: np.ndarray | None = None) -> WalkScore:
    """Score each span of ``frames`` (walking ``direction``) against the game's positions
    ``truth`` ((len(frames) + 1, 2) px, the start first), or by the direction alone without it."""
    s = WalkScore()
    step = frame_scrolls(frames)
    for i in range(0, len(frames) - SPAN, SPAN):
        dx, dy = np.sum(step[i : i + SPAN], axis=0)
        along = bool(follows(dx, dy, direction))
        s.along += along
        if truth is None:  # no game to replay: the direction alone
            s.moving += 1
            s.moving_ok += along
            continue
        tx, ty = truth[i + 1 + SPAN] - truth[i + 1]  # frames[k] shows the position after k + 1 steps
        ok = _axis_ok(dx, tx) and _axis_ok(dy, ty)
        if math.hypot(tx, ty) > 1:
            s.moving += 1
            s.moving_ok += int(ok)
        else:
            s.stopped += 1
            s.stopped_ok += int(ok)
    return s


def wilson(ok: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of a rate of ok in n (Wilson score interval: honest at small n and near 0 or 1)."""
    if n == 0:
        return 0.0, 1.0
    p = ok / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)
