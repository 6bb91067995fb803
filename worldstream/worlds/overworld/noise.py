"""Deterministic, vectorised hashing and smooth noise on an infinite integer lattice.

Everything in the overworld is a pure function of (seed, coordinates, time), built on
``hash_u32``: no global RNG state, so any place can be rendered at any time in any order
(the view-at-position ground truth the memory benchmark needs).
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint32(0x9E3779B1)


def _mix(h: np.ndarray) -> np.ndarray:
    # "lowbias32" integer finaliser (C. Wellons, 2018): good avalanche, 5 ops.
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x7FEB352D)
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(0x846CA68B)
    return h ^ (h >> np.uint32(16))


def hash_u32(seed: int, *coords: np.ndarray | int) -> np.ndarray:
    """A uint32 hash of integer coordinates (arrays broadcast), stable across platforms."""
    with np.errstate(over="ignore"):
        h = _mix(np.asarray(np.uint32(seed & 0xFFFFFFFF) * _GOLDEN, dtype=np.uint32) + np.uint32(1))
        for c in coords:
            c = np.asarray(c).astype(np.int64).astype(np.uint32)  # two's complement wrap for negatives
            h = _mix(h ^ (c * _GOLDEN + np.uint32(0x632BE5AB)))
    return h


def hash01(seed: int, *coords: np.ndarray | int) -> np.ndarray:
    """Uniform float64 in [0, 1) from integer coordinates."""
    return hash_u32(seed, *coords).astype(np.float64) * (1.0 / 4294967296.0)


def value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1): hashed lattice values, smoothstep-interpolated."""
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    ix = x0.astype(np.int64)
    iy = y0.astype(np.int64)
    sx = fx * fx * (3.0 - 2.0 * fx)
    sy = fy * fy * (3.0 - 2.0 * fy)
    v00 = hash01(seed, ix, iy)
    v10 = hash01(seed, ix + 1, iy)
    v01 = hash01(seed, ix, iy + 1)
    v11 = hash01(seed, ix + 1, iy + 1)
    top = v00 + (v10 - v00) * sx
    bot = v01 + (v11 - v01) * sx
    return top + (bot - top) * sy


def fbm(x: np.ndarray, y: np.ndarray, seed: int, octaves: int = 4) -> np.ndarray:
    """Fractal Brownian motion: octaves of value noise, normalised to [0, 1)."""
    total = np.zeros(np.broadcast(x, y).shape)
    amp, norm, freq = 1.0, 0.0, 1.0
    for o in range(octaves):
        total += amp * value_noise(x * freq, y * freq, seed + 101 * o)
        norm += amp
        amp *= 0.5
        freq *= 2.0
    return total / norm
