"""The overworld renderer: the view around a point at a time, in any size, vectorised.

A frame is one gather from the tile atlas (no per-pixel Python), a few sprite blits, and a
handful of whole-frame array operations for weather and light. ``view`` is a pure function of
(position, heading, time, condition blend), which makes it both the episode renderer and the
ground-truth "view from any position and time" that the memory benchmark compares against.
"""
from __future__ import annotations

import math

import numpy as np

from .conditions import SEASONS, TIMES, WEATHERS, Blend, lightning
from .entities import Population
from .sprites import (N_ANIM, N_VARIANTS, animal_sprites, bird_sprites, build_atlas,
                      player_sprites, villager_sprites)
from .terrain import OBJECTS, TileMap

# Light per time of day: a colour multiplier (the night one is the ambient darkness).
_TIME_TINT = {"morning": (1.00, 0.92, 0.82), "noon": (1.0, 1.0, 1.0), "sunset": (1.0, 0.80, 0.62), "night": (0.20, 0.25, 0.45)}
_LAMP = np.array((1.0, 0.86, 0.62))  # warm light the player carries at night
_WEATHER_TINT = {"clear": (1.0, 1.0, 1.0), "rain": (0.80, 0.83, 0.88), "snow": (1.0, 1.0, 1.04), "fog": (0.96, 0.96, 0.97), "storm": (0.55, 0.58, 0.66)}
_FOG_RGB = np.array((0.78, 0.80, 0.83), np.float32)


def heading_of(vx: float, vy: float) -> int:
    """Nearest of 8 headings (0 = north, clockwise) for a velocity; y points down."""
    return int(round(math.atan2(vx, -vy) / (math.pi / 4))) % 8


def _periodic_noise(size: int, cutoff: float, seed: int) -> np.ndarray:
    """A tileable smooth texture in [0, 1]: low-passed white noise via the FFT (periodic by construction)."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft2(rng.standard_normal((size, size)))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    spec *= np.exp(-(fx**2 + fy**2) / (2 * cutoff**2))
    tex = np.fft.irfft2(spec, s=(size, size))
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return tex.astype(np.float32)


def _streaks(size: int, n: int, length: int, slope: float, seed: int, dot: int = 1) -> np.ndarray:
    """A tileable mask of n short slanted strokes (rain) or dots (snow, length 1)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.float32)
    x0 = rng.integers(0, size, n)
    y0 = rng.integers(0, size, n)
    for i in range(length):
        for dy in range(dot):
            for dx in range(dot):
                ys = (y0 + i + dy) % size
                xs = (x0 + int(round(i * slope)) + dx) % size
                mask[ys, xs] = 1.0
    return mask


class Renderer:
    """Renders views of one world (seed) at one size (width x height pixels, tile_px per tile)."""

    def __init__(self, tilemap: TileMap, population: Population, width: int, height: int, tile_px: int):
        self.map = tilemap
        self.pop = population
        self.width, self.height, self.tp = width, height, tile_px
        self.seed = tilemap.seed
        tp = tile_px
        # (season, combo, variant, anim, tp, tp, 3) flattened for one gather
        self._season_atlases = np.stack([build_atlas(tp, s) for s in SEASONS])
        self._atlas_key: tuple | None = None
        self._atlas = None
        self.player = player_sprites(tp)
        self.villager = villager_sprites(tp)
        self.animals = animal_sprites(tp)
        self.bird = bird_sprites(tp)
        self.pattern = 16 * tp  # period of the weather textures, in pixels
        self.rain = _streaks(self.pattern, n=self.pattern**2 // 90, length=max(2, tp * 3 // 4), slope=-0.3, seed=5)
        self.snow = _streaks(self.pattern, n=self.pattern**2 // 110, length=1, slope=0.0, seed=6, dot=max(1, tp // 6))
        self.fog = _periodic_noise(2 * self.pattern, cutoff=0.02, seed=7)
        yy, xx = np.mgrid[0:height, 0:width]
        r = np.sqrt((xx + 0.5 - width / 2) ** 2 + (yy + 0.5 - height / 2) ** 2) / tp  # in tiles
        self._lamp_mask = np.exp(-((r / 3.2) ** 2)).astype(np.float32)[..., None]

    def _atlas_for(self, season_w: np.ndarray) -> np.ndarray:
        key = tuple(np.round(season_w, 3))
        if key != self._atlas_key:
            a = np.tensordot(season_w.astype(np.float32), self._season_atlases, axes=1)
            self._atlas = a.reshape(-1, self.tp, self.tp, 3)
            self._atlas_key = key
        return self._atlas

    def view(self, x: float, y: float, t: float, blend: Blend, heading: int = 4, step: int = 0,
             draw_player: bool = True) -> np.ndarray:
        """The frame (height, width, 3) uint8 seen with the player at (x, y) tiles, at time t seconds."""
        W, H, tp = self.width, self.height, self.tp
        left = int(round(x * tp)) - W // 2  # world pixel of the frame's left edge
        top = int(round(y * tp)) - H // 2
        tx0, ty0 = left // tp, top // tp
        ox, oy = left - tx0 * tp, top - ty0 * tp
        nx, ny = (W + ox + tp - 1) // tp, (H + oy + tp - 1) // tp
        ground, obj, var = self.map.region(tx0, ty0, nx, ny)
        anim = (int(t * 6) + var * 3) % N_ANIM  # water shimmer: each tile in its own phase
        idx = ((ground * len(OBJECTS) + obj) * N_VARIANTS + var) * N_ANIM + anim
        tiles = self._atlas_for(blend.season)[idx]  # (ny, nx, tp, tp, 3)
        frame = tiles.transpose(0, 2, 1, 3, 4).reshape(ny * tp, nx * tp, 3)[oy : oy + H, ox : ox + W].copy()

        half_w, half_h = W / (2 * tp), H / (2 * tp)
        for e in self.pop.near(x, y, half_w, half_h, t):
            moving = abs(e.vx) + abs(e.vy) > 0.05
            if e.kind == "villager":
                sprite = self.villager[heading_of(e.vx, e.vy), int(t * 4) % 2 if moving else 0]
            else:
                sprite = self.animals[e.kind][1 if e.vx > 0 else 0]
            self._blit(frame, sprite, e.x, e.y, left, top)
        if draw_player:
            self._blit(frame, self.player[heading, step], x, y, left, top)
        w = blend.weather
        daylight = 1.0 - blend.time[TIMES.index("night")]
        wet = w[WEATHERS.index("rain")] + w[WEATHERS.index("storm")] + w[WEATHERS.index("snow")]
        bird_alpha = float(np.clip(2 * daylight - 1, 0, 1) * np.clip(1 - 1.5 * wet, 0, 1))
        if bird_alpha > 0:
            for e in self.pop.birds(x, y, half_w, half_h, t):
                sprite = self.bird[int(t * 5 + e.x) % 2]
                shadow = sprite.copy()
                shadow[..., :3] = 0.0
                shadow[..., 3] *= 0.3 * bird_alpha
                self._blit(frame, shadow, e.x + 0.9, e.y + 1.1, left, top)
                self._blit(frame, sprite, e.x, e.y, left, top, alpha=bird_alpha)
        return self._weather_and_light(frame, blend, t, left, top)

    def _blit(self, frame, sprite, wx, wy, left, top, alpha: float = 1.0) -> None:
        """Alpha-blend an RGBA sprite centred on world point (wx, wy)."""
        s = sprite.shape[0]
        px = int(round(wx * self.tp)) - left - s // 2
        py = int(round(wy * self.tp)) - top - s // 2
        x0, y0 = max(px, 0), max(py, 0)
        x1, y1 = min(px + s, frame.shape[1]), min(py + s, frame.shape[0])
        if x0 >= x1 or y0 >= y1:
            return
        sp = sprite[y0 - py : y1 - py, x0 - px : x1 - px]
        a = sp[..., 3:4] * alpha
        region = frame[y0:y1, x0:x1]
        region *= 1 - a
        region += sp[..., :3] * a

    def _tiled(self, tex: np.ndarray, ox: int, oy: int) -> np.ndarray:
        """A (H, W) window of a periodic texture starting at (ox, oy)."""
        p = tex.shape[0]
        rows = (np.arange(self.height) + oy) % p
        cols = (np.arange(self.width) + ox) % p
        return tex[rows[:, None], cols[None, :]]

    def _weather_and_light(self, frame: np.ndarray, blend: Blend, t: float, left: int, top: int) -> np.ndarray:
        tp = self.tp
        w = dict(zip(WEATHERS, blend.weather))
        tint = sum(w[k] * np.array(_WEATHER_TINT[k]) for k in WEATHERS)
        frame *= tint.astype(np.float32)
        rain = w["rain"] + w["storm"]
        if rain > 0.01:  # streaks fall fast and are anchored to the world, so they scroll with it
            m = self._tiled(self.rain, left + int(t * 2.0 * tp), top - int(t * 9.0 * tp))[..., None]
            frame += (np.array((0.75, 0.80, 0.90), np.float32) - frame) * (m * min(rain, 1.0) * 0.55)
        if w["snow"] > 0.01:
            drift = int(tp * 0.6 * math.sin(t * 0.7))
            m = self._tiled(self.snow, left + drift, top - int(t * 1.5 * tp))[..., None]
            frame += (1.0 - frame) * (m * w["snow"] * 0.9)
        if w["fog"] > 0.01:
            m = self._tiled(self.fog, left + int(t * 0.4 * tp), top)[..., None]
            frame += (_FOG_RGB - frame) * (w["fog"] * (0.45 + 0.45 * m))
        tw = dict(zip(TIMES, blend.time))
        light = sum(tw[k] * np.array(_TIME_TINT[k]) for k in TIMES).astype(np.float32)
        if tw["night"] > 0.01:  # the player's lamp lifts the darkness around the centre
            light = light + (tw["night"] * (_LAMP - np.array(_TIME_TINT["night"]))).astype(np.float32) * self._lamp_mask
        frame *= light
        flash = w["storm"] * lightning(self.seed, t)
        if flash > 0.01:
            frame += (1.0 - frame) * (0.6 * flash)
        return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
