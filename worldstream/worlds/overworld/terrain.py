"""The overworld's endless tile map: terrain from smooth noise, objects, paths and buildings.

The world is a grid of square tiles (1 world unit = 1 tile). Every tile has a *ground* (what you
stand on) and an *object* on top (tree, rock, flower, building part, or none). Both are pure
functions of (seed, tile x, tile y), generated in cached chunks so the map is endless and
rendering a frame only slices arrays.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .noise import fbm, hash01

# Ground kinds. The order is the id stored in the dataset's ground truth (see docs/dataset.md).
GROUNDS = ("deep_water", "water", "sand", "grass", "forest", "rock", "snow", "path", "floor")
DEEP_WATER, WATER, SAND, GRASS, FOREST, ROCK, SNOW, PATH, FLOOR = range(len(GROUNDS))

# Objects standing on a tile.
OBJECTS = ("none", "tree", "pine", "boulder", "flower", "bush", "pebbles", "roof", "wall", "door")
NONE, TREE, PINE, BOULDER, FLOWER, BUSH, PEBBLES, ROOF, WALL, DOOR = range(len(OBJECTS))

BLOCKING_GROUND = np.zeros(len(GROUNDS), bool)
BLOCKING_GROUND[[DEEP_WATER, WATER]] = True
BLOCKING_OBJECT = np.zeros(len(OBJECTS), bool)
BLOCKING_OBJECT[[TREE, PINE, BOULDER, ROOF, WALL, DOOR]] = True

CHUNK = 32  # tiles per chunk side in the generation cache
TOWN_CELL = 24  # tiles per macro-cell that may hold one building


def base_ground(tx: np.ndarray, ty: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground kind from elevation and moisture noise, before paths and buildings.

    Returns (ground ids, elevation). Scales are in tiles: continents ~60 tiles, detail ~8.
    """
    x = tx.astype(np.float64)
    y = ty.astype(np.float64)
    elev = fbm(x / 48.0, y / 48.0, seed + 11, octaves=4)
    elev = np.clip((elev - 0.5) * 1.9 + 0.5, 0.0, 1.0)  # stretch the middle-heavy fbm histogram
    moist = fbm(x / 36.0 + 100.0, y / 36.0 - 50.0, seed + 23, octaves=3)
    ground = np.full(elev.shape, GRASS, np.int64)
    ground[moist > 0.56] = FOREST
    ground[elev < 0.38] = SAND
    ground[elev < 0.33] = WATER
    ground[elev < 0.24] = DEEP_WATER
    ground[elev > 0.74] = ROCK
    ground[elev > 0.87] = SNOW
    return ground, elev


def _is_path(tx: np.ndarray, ty: np.ndarray, seed: int) -> np.ndarray:
    # Paths follow the zero set of a smooth noise field: winding lines that join up.
    n = fbm(tx / 30.0 + 7.0, ty / 30.0 + 3.0, seed + 37, octaves=2)
    return np.abs(n - 0.5) < 0.012


def building_at(cx: int, cy: int, seed: int) -> tuple[int, int, int, int] | None:
    """The building in town cell (cx, cy) as (x0, y0, width, height) in tiles, or None.

    A building stands only where its footprint and a one-tile margin are grass, forest or path.
    """
    if hash01(seed + 51, cx, cy) > 0.4:
        return None
    w = 4 + int(hash01(seed + 52, cx, cy) * 4)  # 4..7 tiles wide
    h = 3 + int(hash01(seed + 53, cx, cy) * 3)  # 3..5 tiles deep
    x0 = cx * TOWN_CELL + 2 + int(hash01(seed + 54, cx, cy) * (TOWN_CELL - w - 4))
    y0 = cy * TOWN_CELL + 2 + int(hash01(seed + 55, cx, cy) * (TOWN_CELL - h - 4))
    gy, gx = np.mgrid[y0 - 1 : y0 + h + 1, x0 - 1 : x0 + w + 1]
    ground, _ = base_ground(gx, gy, seed)
    if not np.isin(ground, (GRASS, FOREST)).all():
        return None
    return x0, y0, w, h


class TileMap:
    """Ground and object ids for any rectangle of tiles, generated lazily in cached chunks."""

    def __init__(self, seed: int, cache_chunks: int = 256):
        self.seed = seed
        self.cache_chunks = cache_chunks
        self._chunks: OrderedDict[tuple[int, int], tuple[np.ndarray, ...]] = OrderedDict()

    def _chunk(self, cx: int, cy: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (cx, cy)
        hit = self._chunks.get(key)
        if hit is not None:
            self._chunks.move_to_end(key)
            return hit
        out = self._generate(cx, cy)
        self._chunks[key] = out
        if len(self._chunks) > self.cache_chunks:
            self._chunks.popitem(last=False)
        return out

    def _generate(self, cx: int, cy: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.seed
        ty, tx = np.mgrid[cy * CHUNK : (cy + 1) * CHUNK, cx * CHUNK : (cx + 1) * CHUNK]
        ground, elev = base_ground(tx, ty, s)
        r = hash01(s + 61, tx, ty)  # one uniform per tile decides its object
        obj = np.zeros_like(ground)
        land = ~np.isin(ground, (DEEP_WATER, WATER))
        on = lambda g: ground == g  # noqa: E731
        obj[on(FOREST) & (r < 0.22)] = TREE  # dense, but a walker can still find a way through
        obj[on(FOREST) & (r >= 0.22) & (r < 0.30)] = PINE
        obj[on(FOREST) & (r >= 0.30) & (r < 0.38)] = BUSH
        obj[on(GRASS) & (r < 0.035)] = TREE
        obj[on(GRASS) & (r >= 0.035) & (r < 0.05)] = BUSH
        obj[on(GRASS) & (r >= 0.05) & (r < 0.13)] = FLOWER
        obj[on(GRASS) & (r >= 0.13) & (r < 0.14)] = BOULDER
        obj[on(ROCK) & (r < 0.16)] = BOULDER
        obj[on(ROCK) & (r >= 0.16) & (r < 0.3)] = PEBBLES
        obj[on(SNOW) & (r < 0.06)] = PINE
        obj[on(SNOW) & (r >= 0.06) & (r < 0.12)] = BOULDER
        obj[on(SAND) & (r < 0.06)] = PEBBLES
        path = _is_path(tx, ty, s) & land & np.isin(ground, (GRASS, FOREST, SAND))
        ground[path] = PATH
        obj[path] = NONE
        # Buildings: any town cell whose building overlaps this chunk stamps itself in.
        x_lo, y_lo = cx * CHUNK, cy * CHUNK
        for tcy in range(y_lo // TOWN_CELL, (y_lo + CHUNK - 1) // TOWN_CELL + 1):
            for tcx in range(x_lo // TOWN_CELL, (x_lo + CHUNK - 1) // TOWN_CELL + 1):
                b = building_at(tcx, tcy, s)
                if b is not None:
                    _stamp_building(ground, obj, b, x_lo, y_lo)
        variant = (hash01(s + 71, tx, ty) * 4).astype(np.int64)  # texture variant 0..3
        return ground, obj, variant

    def region(self, x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ground, object, variant) int arrays of shape (h, w) for tiles [x0, x0+w) x [y0, y0+h)."""
        ground = np.empty((h, w), np.int64)
        obj = np.empty((h, w), np.int64)
        var = np.empty((h, w), np.int64)
        for cy in range(y0 // CHUNK, (y0 + h - 1) // CHUNK + 1):
            for cx in range(x0 // CHUNK, (x0 + w - 1) // CHUNK + 1):
                g, o, v = self._chunk(cx, cy)
                # overlap of this chunk with the requested rectangle, in world tiles
                ax, bx = max(x0, cx * CHUNK), min(x0 + w, (cx + 1) * CHUNK)
                ay, by = max(y0, cy * CHUNK), min(y0 + h, (cy + 1) * CHUNK)
                src = np.s_[ay - cy * CHUNK : by - cy * CHUNK, ax - cx * CHUNK : bx - cx * CHUNK]
                dst = np.s_[ay - y0 : by - y0, ax - x0 : bx - x0]
                ground[dst], obj[dst], var[dst] = g[src], o[src], v[src]
        return ground, obj, var

    def ground_at(self, x: float, y: float) -> int:
        """Ground id of the tile containing world point (x, y)."""
        g, _, _ = self.region(int(np.floor(x)), int(np.floor(y)), 1, 1)
        return int(g[0, 0])

    def blocked(self, x: float, y: float, half: float) -> bool:
        """True if a square of half-size ``half`` centred at (x, y) overlaps a blocking tile."""
        x0, x1 = int(np.floor(x - half)), int(np.floor(x + half))
        y0, y1 = int(np.floor(y - half)), int(np.floor(y + half))
        g, o, _ = self.region(x0, y0, x1 - x0 + 1, y1 - y0 + 1)
        return bool(BLOCKING_GROUND[g].any() or BLOCKING_OBJECT[o].any())

    def walkable(self, x: float, y: float, half: float = 0.3) -> bool:
        return not self.blocked(x, y, half)

    def shortest_path(self, start: tuple[float, float], goal: tuple[float, float], margin: int = 12,
                      max_side: int = 200) -> list[tuple[int, int]] | None:
        """Tiles of a shortest 4-neighbour walking path from start to goal (both included), or None.

        Breadth-first search inside the bounding box of the two points plus ``margin`` tiles.
        """
        sx, sy = int(np.floor(start[0])), int(np.floor(start[1]))
        gx, gy = int(np.floor(goal[0])), int(np.floor(goal[1]))
        x0, y0 = min(sx, gx) - margin, min(sy, gy) - margin
        w, h = abs(sx - gx) + 2 * margin + 1, abs(sy - gy) + 2 * margin + 1
        if w > max_side or h > max_side:
            return None
        g, o, _ = self.region(x0, y0, w, h)
        free = ~(BLOCKING_GROUND[g] | BLOCKING_OBJECT[o])
        start_l, goal_l = (sx - x0, sy - y0), (gx - x0, gy - y0)
        parent = {start_l: start_l}
        frontier = [start_l]
        while frontier and goal_l not in parent:
            nxt = []
            for cx, cy in frontier:
                for nx, ny in ((cx + 1, cy), (cx - 1, cy), (cx, cy + 1), (cx, cy - 1)):
                    if 0 <= nx < w and 0 <= ny < h and free[ny, nx] and (nx, ny) not in parent:
                        parent[(nx, ny)] = (cx, cy)
                        nxt.append((nx, ny))
            frontier = nxt
        if goal_l not in parent:
            return None
        path = [goal_l]
        while path[-1] != start_l:
            path.append(parent[path[-1]])
        return [(px + x0, py + y0) for px, py in reversed(path)]

    def reachable_tiles(self, x: float, y: float, limit: int, radius: int = 24) -> int:
        """How many walkable tiles connect to (x, y) by 4-neighbour steps within ``radius`` tiles,
        counting up to ``limit``."""
        start = (int(np.floor(x)), int(np.floor(y)))
        g, o, _ = self.region(start[0] - radius, start[1] - radius, 2 * radius + 1, 2 * radius + 1)
        free = ~(BLOCKING_GROUND[g] | BLOCKING_OBJECT[o])
        seen = {(radius, radius)}
        todo = [(radius, radius)]
        while todo and len(seen) < limit:
            cx, cy = todo.pop()
            for nx, ny in ((cx + 1, cy), (cx - 1, cy), (cx, cy + 1), (cx, cy - 1)):
                if 0 <= nx < free.shape[1] and 0 <= ny < free.shape[0] and free[ny, nx] and (nx, ny) not in seen:
                    seen.add((nx, ny))
                    todo.append((nx, ny))
        return len(seen)


def _stamp_building(ground, obj, b, x_lo, y_lo) -> None:
    x0, y0, w, h = b
    # Footprint plus a one-tile yard: roof rows on top, a wall row with a door at the front.
    for yy in range(y0 - 1, y0 + h + 1):
        for xx in range(x0 - 1, x0 + w + 1):
            ly, lx = yy - y_lo, xx - x_lo
            if not (0 <= ly < CHUNK and 0 <= lx < CHUNK):
                continue
            inside = x0 <= xx < x0 + w and y0 <= yy < y0 + h
            if not inside:  # yard: clear trees so the house is reachable
                if obj[ly, lx] != NONE:
                    obj[ly, lx] = NONE
                continue
            ground[ly, lx] = FLOOR
            if yy < y0 + h - 1:
                obj[ly, lx] = ROOF
            elif xx == x0 + w // 2:
                obj[ly, lx] = DOOR
            else:
                obj[ly, lx] = WALL
