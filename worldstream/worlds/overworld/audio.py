"""The overworld's sound: terrain footsteps, rain, storm and thunder, wind, water, birds, crickets.

Synthesised per video frame, an exact ``samples_per_frame`` at a time, so audio frame i covers
the same 1/fps seconds as video frame i. Beds (rain, wind, water, crickets) are precomputed
periodic loops read at the global sample index, so frames join without clicks; one-shots
(footsteps, chirps, thunder) are voices that may spill into the next frames.
"""
from __future__ import annotations

import numpy as np

from .conditions import LIGHTNING_BUCKET_S, LIGHTNING_RATE, TIMES, WEATHERS, Blend
from .noise import hash01
from .terrain import FLOOR, FOREST, GRASS, PATH, ROCK, SAND, SNOW

THUNDER_DELAY_S = 0.9  # sound follows the flash, as it would from a storm a few hundred metres off


def _shaped_noise(n: int, sr: int, lo: float, hi: float, rng: np.random.Generator, tilt: float = 0.0) -> np.ndarray:
    """Periodic noise of n samples band-limited to [lo, hi] Hz (FFT shaping), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    band = 1.0 / (1.0 + (lo / np.maximum(f, 1.0)) ** 4) / (1.0 + (f / hi) ** 4)
    if tilt:
        band *= (np.maximum(f, 20.0) / 1000.0) ** tilt
    x = np.fft.irfft(spec * band, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-9)).astype(np.float32)


def _env(n: int, attack: int, decay: float) -> np.ndarray:
    t = np.arange(n, dtype=np.float32)
    return np.minimum(t / max(attack, 1), 1.0) * np.exp(-t / decay)


class AudioSynth:
    """Makes one frame of mono audio at a time from the world's state. Deterministic per seed."""

    def __init__(self, sample_rate: int, fps: int, seed: int):
        if sample_rate % fps:
            raise ValueError(f"sample_rate {sample_rate} is not a whole number of samples per frame at {fps} fps; "
                             f"pick e.g. 24000 Hz at 24/30/60 fps or 16000 Hz at 20/25/40 fps")
        self.sr, self.fps, self.seed = sample_rate, fps, seed
        self.spf = sample_rate // fps
        sr = sample_rate
        rng = np.random.default_rng(1234)  # the sound bank is the same for every world
        n = 4 * sr
        t = np.arange(n) / sr
        self.rain = _shaped_noise(n, sr, 1500, 7000, rng) * 0.6
        patter = (rng.random(n) < 400 / sr) * rng.random(n)  # droplets hitting leaves
        self.rain += np.convolve(patter, _env(int(0.004 * sr), 1, 0.001 * sr), mode="same").astype(np.float32) * 1.2
        self.wind = _shaped_noise(n, sr, 40, 500, rng) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t)).astype(np.float32)
        self.water = _shaped_noise(n, sr, 250, 1600, rng) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t + np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)
        pulses = (np.sin(2 * np.pi * 15 * t) > 0.3) & ((t % 0.8) < 0.2)  # chirp-chirp-chirp, pause
        self.crickets = (np.sin(2 * np.pi * 4500 * t) * pulses).astype(np.float32)
        self.steps = {g: self._footstep(g, rng) for g in (GRASS, FOREST, SAND, ROCK, SNOW, PATH, FLOOR)}
        self.chirps = [self._chirp(rng) for _ in range(4)]
        self.thunder = _shaped_noise(2 * sr, sr, 20, 180, rng) * _env(2 * sr, int(0.05 * sr), 0.6 * sr)
        self.reset(0)

    def reset(self, episode_seed: int) -> None:
        """Start a new stream: silence, no voices, and a fresh chirp schedule for this episode."""
        self.sample = 0  # global index of the next sample
        self.voices: list[tuple[np.ndarray, int, float]] = []  # (buffer, read position, gain)
        self.gains = np.zeros(4, np.float32)  # rain, wind, water, crickets at the end of the last frame
        self.rng = np.random.default_rng([self.seed, episode_seed, 77])

    def _footstep(self, ground: int, rng: np.random.Generator) -> np.ndarray:
        sr = self.sr
        n = int(0.09 * sr)
        if ground in (ROCK, PATH):  # hard: a click and a thump
            x = _shaped_noise(n, sr, 800, 6000, rng) * _env(n, 2, 0.008 * sr)
            x += np.sin(2 * np.pi * 110 * np.arange(n) / sr).astype(np.float32) * _env(n, 4, 0.02 * sr)
        elif ground == FLOOR:  # wooden knock
            x = np.sin(2 * np.pi * 220 * np.arange(n) / sr).astype(np.float32) * _env(n, 2, 0.015 * sr) * 1.5
        elif ground == SAND:  # soft hiss
            x = _shaped_noise(n, sr, 2000, 8000, rng) * _env(n, int(0.01 * sr), 0.02 * sr) * 0.7
        elif ground == SNOW:  # crunch: grainy bursts
            grains = (rng.random(n) < 0.15).astype(np.float32)
            x = _shaped_noise(n, sr, 300, 5000, rng) * grains * _env(n, int(0.005 * sr), 0.035 * sr) * 2.0
        elif ground == FOREST:  # leaves and twigs
            x = _shaped_noise(n, sr, 500, 4000, rng) * _env(n, int(0.005 * sr), 0.03 * sr) * 0.9
        else:  # grass: soft and low
            x = _shaped_noise(n, sr, 150, 1800, rng) * _env(n, int(0.006 * sr), 0.02 * sr) * 0.8
        return x.astype(np.float32)

    def _chirp(self, rng: np.random.Generator) -> np.ndarray:
        sr = self.sr
        notes = []
        for _ in range(int(rng.integers(2, 5))):
            n = int(rng.uniform(0.04, 0.09) * sr)
            f0, f1 = rng.uniform(2200, 3800), rng.uniform(2500, 5000)
            f = np.linspace(f0, f1, n)
            notes.append(np.sin(2 * np.pi * np.cumsum(f) / sr) * np.sin(np.pi * np.arange(n) / n))
            notes.append(np.zeros(int(0.03 * sr)))
        return np.concatenate(notes).astype(np.float32)

    def frame(self, blend: Blend, footstep_ground: int | None, running: bool, water_near: float) -> np.ndarray:
        """The next ``samples_per_frame`` samples (float32 in [-1, 1])."""
        spf, sr = self.spf, self.sr
        idx = (self.sample + np.arange(spf)) % len(self.rain)
        w = dict(zip(WEATHERS, blend.weather))
        tw = dict(zip(TIMES, blend.time))
        wet = w["rain"] + w["storm"] + w["snow"]
        target = np.array([
            0.22 * w["rain"] + 0.35 * w["storm"],  # rain
            0.03 + 0.2 * w["storm"] + 0.1 * w["snow"] + 0.06 * w["fog"],  # wind
            0.25 * water_near,  # water nearby
            0.06 * tw["night"] * (1 - wet),  # crickets
        ], np.float32)
        ramp = np.linspace(0.0, 1.0, spf, endpoint=False, dtype=np.float32)[:, None]
        g = self.gains + (target - self.gains) * ramp  # (spf, 4): no zipper noise on changes
        out = (g[:, 0] * self.rain[idx] + g[:, 1] * self.wind[idx] + g[:, 2] * self.water[idx]
               + g[:, 3] * self.crickets[idx])
        self.gains = target
        if footstep_ground is not None and footstep_ground in self.steps:
            self.voices.append((self.steps[footstep_ground], 0, 0.5 if running else 0.35))
        day = 1.0 - tw["night"]
        if self.rng.random() < 0.5 / self.fps * day * max(0.0, 1 - 1.5 * wet):
            self.voices.append((self.chirps[int(self.rng.integers(len(self.chirps)))], 0, 0.12))
        # thunder: a flash that started THUNDER_DELAY_S ago is heard now
        t0 = (self.sample / sr) - THUNDER_DELAY_S
        b0, b1 = int(np.floor(t0 / LIGHTNING_BUCKET_S)), int(np.floor((t0 + spf / sr) / LIGHTNING_BUCKET_S))
        for b in range(b0 + 1, b1 + 1):
            if w["storm"] > 0.05 and hash01(self.seed + 907, b) < LIGHTNING_RATE:
                self.voices.append((self.thunder, 0, 0.8 * w["storm"]))
        kept = []
        for buf, pos, gain in self.voices:
            n = min(spf, len(buf) - pos)
            out[:n] += gain * buf[pos : pos + n]
            if pos + n < len(buf):
                kept.append((buf, pos + n, gain))
        self.voices = kept
        self.sample += spf
        return np.tanh(out).astype(np.float32)  # soft limit: never clips hard
