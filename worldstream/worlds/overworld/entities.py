"""Things that move on their own: grazing animals, villagers near houses, birds overhead.

Each is a closed-form function of (seed, time), anchored to a home cell of the map, so the
world at any place and time is reproducible without simulating what came before.
"""
from __future__ import annotations

import dataclasses
import math

from .noise import hash01
from .terrain import FOREST, GRASS, PATH, TOWN_CELL, TileMap, building_at

HERD_CELL = 16  # tiles per cell that may hold a few animals
BIRD_CELL = 40  # tiles per cell that may hold a bird circling


@dataclasses.dataclass(frozen=True)
class Entity:
    kind: str  # "sheep", "deer", "villager" or "bird"
    x: float  # world position in tiles
    y: float
    vx: float  # velocity in tiles/s (facing)
    vy: float


def _wander_params(seed: int, key: tuple[int, ...]) -> tuple[float, ...]:
    """Frequencies and phases of one entity's wander, fixed per entity."""
    h = [float(hash01(seed, *key, k)) for k in range(6)]
    return (0.15 + 0.25 * h[0], 0.05 + 0.1 * h[1], *(2 * math.pi * h[k] for k in range(2, 6)))


def _wander(params: tuple[float, ...], t: float, radius: float) -> tuple[float, float, float, float]:
    """A smooth, bounded, closed-form wander around (0, 0): two sinusoids per axis."""
    w1, w2, *p = params
    ox = radius * (0.65 * math.sin(w1 * t + p[0]) + 0.35 * math.sin(w2 * t + p[1]))
    oy = radius * (0.65 * math.sin(w1 * 0.9 * t + p[2]) + 0.35 * math.cos(w2 * 1.3 * t + p[3]))
    vx = radius * (0.65 * w1 * math.cos(w1 * t + p[0]) + 0.35 * w2 * math.cos(w2 * t + p[1]))
    vy = radius * (0.65 * w1 * 0.9 * math.cos(w1 * 0.9 * t + p[2]) - 0.35 * w2 * 1.3 * math.sin(w2 * 1.3 * t + p[3]))
    return ox, oy, vx, vy


class Population:
    """Finds the moving entities near a point at a time; caches each cell's static setup."""

    def __init__(self, tilemap: TileMap, seed: int):
        self.map = tilemap
        self.seed = seed
        self._herds: dict[tuple[int, int], list[tuple[str, float, float, tuple[float, ...]]]] = {}
        self._flocks: dict[tuple[int, int], tuple[float, ...] | None] = {}

    def _herd(self, cx: int, cy: int) -> list[tuple[str, float, float, tuple[float, ...]]]:
        hit = self._herds.get((cx, cy))
        if hit is not None:
            return hit
        s = self.seed + 301
        members = []
        n = int(hash01(s, cx, cy, 0) * 3.2) - 1  # 0..2 animals, often none
        for k in range(max(n, 0)):
            hx = cx * HERD_CELL + 3 + float(hash01(s, cx, cy, k, 1)) * (HERD_CELL - 6)
            hy = cy * HERD_CELL + 3 + float(hash01(s, cx, cy, k, 2)) * (HERD_CELL - 6)
            g = self.map.ground_at(hx, hy)
            params = _wander_params(self.seed + 311, (cx, cy, k))
            if g in (GRASS, PATH):
                members.append(("sheep", hx, hy, params))
            elif g == FOREST:
                members.append(("deer", hx, hy, params))
        # a villager strolls in front of each house
        for tcy in range((cy * HERD_CELL) // TOWN_CELL, ((cy + 1) * HERD_CELL - 1) // TOWN_CELL + 1):
            for tcx in range((cx * HERD_CELL) // TOWN_CELL, ((cx + 1) * HERD_CELL - 1) // TOWN_CELL + 1):
                b = building_at(tcx, tcy, self.seed)
                if b is None:
                    continue
                x0, y0, w, h = b
                door_x, door_y = x0 + w // 2 + 0.5, y0 + h + 1.5
                if int(door_x // HERD_CELL) == cx and int(door_y // HERD_CELL) == cy:
                    members.append(("villager", door_x, door_y, _wander_params(self.seed + 311, (cx, cy, 9))))
        self._herds[(cx, cy)] = members
        if len(self._herds) > 4096:
            self._herds.clear()
        return members

    def near(self, x: float, y: float, half_w: float, half_h: float, t: float) -> list[Entity]:
        """Entities whose position is within the box (x +- half_w, y +- half_h) at time t (s)."""
        out = []
        m = 3.0  # margin: an animal wanders at most ~2.5 tiles from home
        for cy in range(int(math.floor((y - half_h - m) / HERD_CELL)), int(math.floor((y + half_h + m) / HERD_CELL)) + 1):
            for cx in range(int(math.floor((x - half_w - m) / HERD_CELL)), int(math.floor((x + half_w + m) / HERD_CELL)) + 1):
                for kind, hx, hy, params in self._herd(cx, cy):
                    radius = 1.0 if kind == "villager" else 2.2
                    ox, oy, vx, vy = _wander(params, t, radius)
                    if kind == "villager":
                        oy = abs(oy) * 0.5  # stays in front of the house, off its walls
                    ex, ey = hx + ox, hy + oy
                    if abs(ex - x) <= half_w + 1 and abs(ey - y) <= half_h + 1:
                        out.append(Entity(kind, ex, ey, vx, vy))
        return out

    def _flock(self, cx: int, cy: int) -> tuple[float, ...] | None:
        if (cx, cy) not in self._flocks:
            s = self.seed + 401
            h = [float(hash01(s, cx, cy, k)) for k in range(5)]
            if h[0] > 0.6:
                self._flocks[(cx, cy)] = None
            else:
                r = 6 + 6 * h[1]
                direction = 1 if h[2] < 0.5 else -1
                w = direction * 3.0 / r  # ~3 tiles/s along the circle
                self._flocks[(cx, cy)] = ((cx + 0.5) * BIRD_CELL, (cy + 0.5) * BIRD_CELL, r, direction,
                                          w, 2 * math.pi * h[3], 1 + int(h[4] * 3))
        return self._flocks[(cx, cy)]

    def birds(self, x: float, y: float, half_w: float, half_h: float, t: float) -> list[Entity]:
        """Birds circling over the box at time t."""
        out = []
        m = 14.0
        for cy in range(int(math.floor((y - half_h - m) / BIRD_CELL)), int(math.floor((y + half_h + m) / BIRD_CELL)) + 1):
            for cx in range(int(math.floor((x - half_w - m) / BIRD_CELL)), int(math.floor((x + half_w + m) / BIRD_CELL)) + 1):
                flock = self._flock(cx, cy)
                if flock is None:
                    continue
                ccx, ccy, r, direction, w, ph, n = flock
                for k in range(int(n)):  # a small flock in formation
                    a = w * t + ph - direction * 0.12 * k
                    ex, ey = ccx + r * math.cos(a), ccy + r * math.sin(a) + 0.4 * k
                    if abs(ex - x) <= half_w + 1 and abs(ey - y) <= half_h + 1:
                        out.append(Entity("bird", ex, ey, -r * w * math.sin(a), r * w * math.cos(a)))
        return out
