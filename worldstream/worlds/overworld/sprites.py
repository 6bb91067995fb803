"""Procedural textures and sprites, drawn at any tile size.

Every texture is a function of (u, v) in [0, 1)^2 sampled at ``tile_px`` pixels per tile, so the
world renders crisply at any resolution. The tile atlas holds every (ground, object) pair in 4
variants and 8 animation phases (only water moves), in one palette per season; the renderer
blends season atlases while a season change is under way.
"""
from __future__ import annotations

import numpy as np

from .conditions import SEASONS
from .noise import hash01
from .terrain import (BOULDER, BUSH, DEEP_WATER, DOOR, FLOOR, FLOWER, FOREST, GRASS, GROUNDS,
                      NONE, OBJECTS, PATH, PEBBLES, PINE, ROCK, ROOF, SAND, SNOW, TREE, WALL,
                      WATER)

N_VARIANTS = 4
N_ANIM = 8  # water shimmer phases

# Ground base colours per season (RGB in [0, 1]).
_GROUND_RGB = {
    DEEP_WATER: {"spring": (0.10, 0.28, 0.62), "summer": (0.09, 0.30, 0.62), "autumn": (0.10, 0.26, 0.55), "winter": (0.30, 0.45, 0.65)},
    WATER: {"spring": (0.20, 0.48, 0.82), "summer": (0.18, 0.52, 0.85), "autumn": (0.20, 0.44, 0.72), "winter": (0.62, 0.75, 0.88)},
    SAND: {"spring": (0.87, 0.80, 0.56), "summer": (0.92, 0.84, 0.56), "autumn": (0.82, 0.74, 0.52), "winter": (0.88, 0.87, 0.84)},
    GRASS: {"spring": (0.42, 0.74, 0.32), "summer": (0.33, 0.62, 0.22), "autumn": (0.62, 0.58, 0.24), "winter": (0.88, 0.90, 0.94)},
    FOREST: {"spring": (0.26, 0.52, 0.22), "summer": (0.20, 0.44, 0.16), "autumn": (0.50, 0.36, 0.16), "winter": (0.78, 0.81, 0.86)},
    ROCK: {"spring": (0.52, 0.50, 0.47), "summer": (0.55, 0.52, 0.48), "autumn": (0.50, 0.47, 0.43), "winter": (0.70, 0.71, 0.74)},
    SNOW: {"spring": (0.92, 0.94, 0.97), "summer": (0.90, 0.92, 0.95), "autumn": (0.93, 0.94, 0.97), "winter": (0.97, 0.98, 1.00)},
    PATH: {"spring": (0.66, 0.52, 0.34), "summer": (0.70, 0.55, 0.35), "autumn": (0.62, 0.47, 0.30), "winter": (0.78, 0.74, 0.70)},
    FLOOR: {s: (0.45, 0.36, 0.28) for s in SEASONS},
}
_CANOPY = {"spring": (0.36, 0.70, 0.36), "summer": (0.13, 0.46, 0.14), "autumn": (0.88, 0.46, 0.12), "winter": (0.86, 0.88, 0.93)}
_PINE = {"spring": (0.10, 0.38, 0.22), "summer": (0.08, 0.34, 0.18), "autumn": (0.10, 0.32, 0.18), "winter": (0.55, 0.70, 0.62)}
_FLOWER_COLOURS = np.array([(0.92, 0.20, 0.25), (0.98, 0.86, 0.20), (0.97, 0.97, 0.97), (0.65, 0.35, 0.90)])


def _grid(tp: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(tp) + 0.5) / tp
    v, u = np.meshgrid(c, c, indexing="ij")  # v: row (down), u: column (right)
    return u, v


def _ground(g: int, season: str, tp: int, variant: int, anim: int) -> np.ndarray:
    """One ground tile (tp, tp, 3)."""
    u, v = _grid(tp)
    base = np.array(_GROUND_RGB[g][season])
    iy, ix = np.mgrid[0:tp, 0:tp]
    speck = hash01(1000 + g * 10 + variant, ix, iy)  # per-pixel grain
    shade = 1.0 + 0.10 * (speck - 0.5)
    if g in (WATER, DEEP_WATER):
        phase = anim / N_ANIM * 2 * np.pi
        wave = np.sin(2 * np.pi * (1.0 * u + 2.0 * v) + phase + variant) * np.sin(2 * np.pi * (2 * u - v) - phase)
        shade = 1.0 + 0.07 * wave + 0.18 * (wave > 0.85)  # glints that move with the phase
    elif g in (GRASS, FOREST):
        shade = shade - 0.16 * (speck > 0.86) + 0.06 * (speck < 0.1)  # darker blades
    elif g == ROCK:
        crack = np.abs(np.sin(7 * u + 3 * v + variant)) < 0.08
        shade = shade - 0.18 * crack
    elif g == PATH:
        shade = shade + 0.12 * (speck > 0.93) - 0.08 * (speck < 0.08)
    elif g == FLOOR:
        shade = shade - 0.15 * ((v * 4) % 1.0 < 0.12)  # floor boards
    return np.clip(base * shade[..., None], 0.0, 1.0)


def _disc(u, v, cx, cy, r, soft=0.08):
    d = np.sqrt((u - cx) ** 2 + (v - cy) ** 2)
    return np.clip((r - d) / soft + 0.5, 0.0, 1.0)


def _object(o: int, season: str, tp: int, variant: int) -> tuple[np.ndarray, np.ndarray]:
    """One object sprite: (rgb (tp, tp, 3), alpha (tp, tp))."""
    u, v = _grid(tp)
    rgb = np.zeros((tp, tp, 3))
    a = np.zeros((tp, tp))
    if o == NONE:
        return rgb, a
    if o in (TREE, BUSH):
        r = 0.44 if o == TREE else 0.30
        cy = 0.46 if o == TREE else 0.55
        shadow = _disc(u, v, 0.58, cy + 0.1, r) * 0.35
        canopy = _disc(u, v, 0.5, cy, r)
        col = np.array(_CANOPY[season]) * (0.9 if o == BUSH else 1.0)
        light = 1.0 + 0.25 * ((0.5 - u) + (cy - v))  # lit from the top left
        rgb = col * light[..., None]
        if season == "spring" and o == TREE:  # blossoms
            dots = hash01(2000 + variant, *np.mgrid[0:tp, 0:tp]) > 0.9
            rgb[dots & (canopy > 0.5)] = (0.98, 0.75, 0.85)
        a = np.maximum(canopy, shadow)
        rgb = rgb * (canopy / np.maximum(a, 1e-6))[..., None]  # shadow part is black
    elif o == PINE:
        # a star-shaped conifer: radius varies with angle
        ang = np.arctan2(v - 0.5, u - 0.5)
        rr = 0.36 + 0.08 * np.cos(6 * ang + variant)
        d = np.sqrt((u - 0.5) ** 2 + (v - 0.5) ** 2)
        a = np.clip((rr - d) / 0.06 + 0.5, 0, 1)
        light = 1.0 + 0.35 * (0.35 - d)
        rgb = np.array(_PINE[season]) * light[..., None]
        if season == "winter":
            rgb[(d > 0.2) & (d < 0.3)] = (0.93, 0.95, 0.98)
    elif o in (BOULDER, PEBBLES):
        if o == BOULDER:
            a = np.clip((0.36 - np.sqrt(((u - 0.5) / 1.15) ** 2 + (v - 0.52) ** 2)) / 0.06 + 0.5, 0, 1)
            light = 1.0 + 0.5 * ((0.5 - u) + (0.5 - v))
            rgb = np.array((0.50, 0.49, 0.47)) * light[..., None]
            if season == "winter":
                rgb[v < 0.42] = (0.94, 0.95, 0.98)
        else:
            for k in range(3):
                px, py = hash01(3000 + variant, k, 0) * 0.6 + 0.2, hash01(3000 + variant, k, 1) * 0.6 + 0.2
                a = np.maximum(a, _disc(u, v, px, py, 0.08, 0.05))
            rgb[:] = (0.42, 0.41, 0.40)
    elif o == FLOWER:
        if season == "winter":
            return rgb, a
        n = 2 if season == "autumn" else 4
        for k in range(n):
            px, py = hash01(4000 + variant, k, 0) * 0.7 + 0.15, hash01(4000 + variant, k, 1) * 0.7 + 0.15
            d = _disc(u, v, px, py, 0.1, 0.05)
            colour = _FLOWER_COLOURS[(variant + k) % len(_FLOWER_COLOURS)]
            rgb = np.where((d > a)[..., None], colour, rgb)
            a = np.maximum(a, d)
    elif o == ROOF:
        base = np.array((0.93, 0.94, 0.97) if season == "winter" else (0.66, 0.24, 0.18))
        shingle = 1.0 - 0.18 * (((v * 3) % 1.0) < 0.15) - 0.06 * (((u * 2 + (v * 3 // 1) * 0.5) % 1.0) < 0.1)
        rgb = base * shingle[..., None]
        a[:] = 1.0
    elif o in (WALL, DOOR):
        rgb[:] = (0.82, 0.74, 0.56)
        rgb[v < 0.12] = (0.45, 0.30, 0.20)  # eave shadow
        if o == DOOR:
            rgb[(np.abs(u - 0.5) < 0.22) & (v > 0.3)] = (0.40, 0.24, 0.12)
        elif variant % 2 == 0:
            rgb[(np.abs(u - 0.5) < 0.2) & (np.abs(v - 0.5) < 0.18)] = (0.25, 0.35, 0.55)  # window
        a[:] = 1.0
    return np.clip(rgb, 0, 1), a


def build_atlas(tile_px: int, season: str) -> np.ndarray:
    """Every (ground, object) tile: float32 (n_ground * n_object, N_VARIANTS, N_ANIM, tp, tp, 3)."""
    ng, no = len(GROUNDS), len(OBJECTS)
    atlas = np.zeros((ng * no, N_VARIANTS, N_ANIM, tile_px, tile_px, 3), np.float32)
    for var in range(N_VARIANTS):
        objs = [_object(o, season, tile_px, var) for o in range(no)]
        for g in range(ng):
            animated = g in (WATER, DEEP_WATER)
            grounds = [_ground(g, season, tile_px, var, k) for k in range(N_ANIM if animated else 1)]
            for k in range(N_ANIM):
                ground = grounds[k if animated else 0]
                for o, (orgb, oa) in enumerate(objs):
                    atlas[g * no + o, var, k] = ground * (1 - oa[..., None]) + orgb * oa[..., None]
    return atlas


# ---------------------------------------------------------------------------------------------
# Entity sprites: RGBA float32 (s, s, 4) with s = tile_px (one tile).

HEADINGS = ("n", "ne", "e", "se", "s", "sw", "w", "nw")
HEADING_VECTORS = np.array([(np.sin(k * np.pi / 4), -np.cos(k * np.pi / 4)) for k in range(8)])  # (dx, dy), y down


def _person(tp: int, heading: int, step: int, shirt) -> np.ndarray:
    u, v = _grid(tp)
    dx, dy = HEADING_VECTORS[heading]
    px, py = -dy, dx  # perpendicular: where the feet are
    out = np.zeros((tp, tp, 4))
    sw = 0.12 if step else -0.12  # feet swing forward and back with the step phase
    for side in (-1, 1):
        fx = 0.5 + side * 0.15 * px + side * sw * dx
        fy = 0.5 + side * 0.15 * py + side * sw * dy
        f = _disc(u, v, fx, fy, 0.1, 0.06)
        out[..., :3] = np.where((f > out[..., 3])[..., None], (0.15, 0.12, 0.10), out[..., :3])
        out[..., 3] = np.maximum(out[..., 3], f)
    body = _disc(u, v, 0.5, 0.5, 0.3, 0.08)
    rim = _disc(u, v, 0.5, 0.5, 0.34, 0.08)
    head = _disc(u, v, 0.5 + 0.16 * dx, 0.5 + 0.16 * dy, 0.16, 0.06)
    nose = _disc(u, v, 0.5 + 0.32 * dx, 0.5 + 0.32 * dy, 0.07, 0.05)
    for mask, col in ((rim, (0.08, 0.08, 0.10)), (body, shirt), (head, (0.95, 0.78, 0.62)), (nose, (0.95, 0.78, 0.62))):
        out[..., :3] = out[..., :3] * (1 - mask[..., None]) + np.array(col) * mask[..., None]
        out[..., 3] = np.maximum(out[..., 3], mask)
    return out.astype(np.float32)


def player_sprites(tp: int) -> np.ndarray:
    """(8 headings, 2 step phases, tp, tp, 4): blue shirt."""
    return np.stack([np.stack([_person(tp, h, s, (0.18, 0.35, 0.92)) for s in (0, 1)]) for h in range(8)])


def villager_sprites(tp: int) -> np.ndarray:
    """(8 headings, 2 step phases, tp, tp, 4): red shirt."""
    return np.stack([np.stack([_person(tp, h, s, (0.85, 0.25, 0.20)) for s in (0, 1)]) for h in range(8)])


def animal_sprites(tp: int) -> dict[str, np.ndarray]:
    """Sheep and deer facing left (index 0) and right (index 1): (2, tp, tp, 4)."""
    u, v = _grid(tp)
    out = {}
    for name, body_col, head_col, rx in (("sheep", (0.95, 0.95, 0.92), (0.15, 0.15, 0.15), 0.32),
                                          ("deer", (0.62, 0.40, 0.22), (0.45, 0.28, 0.15), 0.30)):
        frames = []
        for facing in (-1, 1):
            body = np.clip((1 - np.sqrt(((u - 0.5) / rx) ** 2 + ((v - 0.55) / 0.22) ** 2)) / 0.2, 0, 1)
            head = _disc(u, v, 0.5 + facing * 0.3, 0.42, 0.12, 0.06)
            s = np.zeros((tp, tp, 4))
            for mask, col in ((body, body_col), (head, head_col)):
                s[..., :3] = s[..., :3] * (1 - mask[..., None]) + np.array(col) * mask[..., None]
                s[..., 3] = np.maximum(s[..., 3], mask)
            frames.append(s)
        out[name] = np.stack(frames).astype(np.float32)
    return out


def bird_sprites(tp: int) -> np.ndarray:
    """A flying bird seen from above, wings up and down: (2, tp, tp, 4); dark."""
    u, v = _grid(tp)
    frames = []
    for flap in (0.0, 0.18):
        wing = np.abs(v - (0.45 + flap * np.abs(u - 0.5) * 2 - 0.3 * np.abs(u - 0.5))) < 0.07
        wing &= np.abs(u - 0.5) < 0.42
        s = np.zeros((tp, tp, 4))
        s[..., :3] = (0.12, 0.12, 0.14)
        s[..., 3] = wing.astype(float)
        frames.append(s)
    return np.stack(frames).astype(np.float32)
