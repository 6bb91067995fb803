"""Conditions a person can ask for in words: weather, time of day and season.

A condition is a one-hot target; what is rendered is a blend that moves toward the target over
``blend_seconds`` so changes are smooth (about a second). Every change comes with a caption
drawn from many paraphrases, so that a text encoder learns meaning rather than strings.
"""
from __future__ import annotations

import dataclasses

import numpy as np

WEATHERS = ("clear", "rain", "snow", "fog", "storm")
TIMES = ("morning", "noon", "sunset", "night")
SEASONS = ("spring", "summer", "autumn", "winter")
KINDS = {"weather": WEATHERS, "time": TIMES, "season": SEASONS}


@dataclasses.dataclass(frozen=True)
class Conditions:
    """A target condition: one value per kind."""

    weather: str = "clear"
    time: str = "noon"
    season: str = "summer"

    def __post_init__(self) -> None:
        for kind, values in KINDS.items():
            v = getattr(self, kind)
            if v not in values:
                raise ValueError(f"unknown {kind} {v!r}; choose one of {list(values)}")

    def replace(self, **kw: str) -> "Conditions":
        return dataclasses.replace(self, **kw)


@dataclasses.dataclass
class Blend:
    """Blend weights per kind (each sums to 1), moving linearly toward a target."""

    weather: np.ndarray
    time: np.ndarray
    season: np.ndarray

    @staticmethod
    def of(c: Conditions) -> "Blend":
        return Blend(*(_onehot(getattr(c, k), vals) for k, vals in KINDS.items()))

    def step(self, target: Conditions, rate: float) -> "Blend":
        """Move each weight vector toward the target by at most ``rate`` in L1/2 (one frame)."""
        out = {}
        for kind, vals in KINDS.items():
            cur = getattr(self, kind)
            tgt = _onehot(getattr(target, kind), vals)
            delta = tgt - cur
            dist = np.abs(delta).sum() / 2.0
            out[kind] = tgt.copy() if dist <= rate else cur + delta * (rate / dist)
        return Blend(**out)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {k: {v: round(float(w), 4) for v, w in zip(vals, getattr(self, k))} for k, vals in KINDS.items()}


def _onehot(value: str, values: tuple[str, ...]) -> np.ndarray:
    v = np.zeros(len(values))
    v[values.index(value)] = 1.0
    return v


# ---------------------------------------------------------------------------------------------
# Captions. Paraphrases per value; full-scene templates combine them. Kept varied on purpose:
# the text encoder should map "it begins to snow", "snowfall" and "a snowy evening" together.

WEATHER_CHANGE = {
    "clear": ["the sky clears", "the clouds part and the sun comes out", "clear skies",
              "the weather turns fair", "the rain stops", "it clears up", "a bright, clear day",
              "the storm passes and the air is calm", "blue skies return", "fine weather"],
    "rain": ["it starts to rain", "rain begins to fall", "a light rain", "rainy weather",
             "drizzle sets in", "showers roll in", "it begins raining", "the rain comes down",
             "a wet, rainy day", "raindrops start falling"],
    "snow": ["it begins to snow", "snowfall", "snow starts falling", "a snowy day",
             "flakes of snow drift down", "it is snowing", "snow flurries", "heavy snow",
             "the snow comes down softly", "winter snow begins"],
    "fog": ["fog rolls in", "a thick mist", "it gets foggy", "mist covers the land",
            "a hazy, foggy day", "the fog thickens", "visibility drops in the fog",
            "a misty morning haze", "grey fog everywhere", "fog creeps over the ground"],
    "storm": ["a storm breaks", "thunder and lightning", "a thunderstorm", "a violent storm",
              "stormy weather", "lightning flashes and rain pours", "the storm arrives",
              "heavy rain with thunder", "a wild storm rages", "thunder rumbles overhead"],
}
TIME_CHANGE = {
    "morning": ["morning comes", "the sun rises", "dawn breaks", "early morning",
                "a fresh morning", "daybreak", "the morning light", "sunrise"],
    "noon": ["it is midday", "noon", "the sun is high", "bright daylight", "the middle of the day",
             "full daylight", "a sunny afternoon", "broad daylight"],
    "sunset": ["the sun sets", "sunset", "dusk falls", "evening comes", "the golden hour",
               "a warm evening glow", "twilight", "the sky turns orange at sunset"],
    "night": ["night falls", "it gets dark", "nighttime", "the middle of the night",
              "darkness covers the land", "a dark night", "it is night", "the stars come out"],
}
SEASON_CHANGE = {
    "spring": ["spring arrives", "springtime", "flowers bloom in spring", "a spring day",
               "the season turns to spring", "fresh green spring"],
    "summer": ["summer comes", "summertime", "a hot summer day", "high summer",
               "the season turns to summer", "lush green summer"],
    "autumn": ["autumn arrives", "fall", "the leaves turn orange", "an autumn day",
               "the season turns to autumn", "red and golden autumn leaves"],
    "winter": ["winter comes", "wintertime", "a cold winter day", "the land is covered in snow",
               "the season turns to winter", "frozen winter"],
}
# Adjectives for full-scene captions ("a snowy winter evening").
_WEATHER_ADJ = {"clear": ["clear", "calm", "fair", "cloudless"], "rain": ["rainy", "wet", "drizzly"],
                "snow": ["snowy", "snowing"], "fog": ["foggy", "misty", "hazy"],
                "storm": ["stormy", "thundery"]}
_TIME_NOUN = {"morning": ["morning", "dawn"], "noon": ["day", "afternoon", "midday"],
              "sunset": ["evening", "dusk", "sunset"], "night": ["night", "nighttime"]}
_SCENE_TEMPLATES = [
    "a {w} {s} {t}", "a {w} {t} in {s}", "{s}, {w} {t}", "top-down view of a world on a {w} {s} {t}",
    "exploring the land on a {w} {t} in {s}", "a {w} {t}, {s}",
    "a little adventurer walks through a {w} {s} {t}",
]


def change_caption(kind: str, value: str, rng: np.random.Generator) -> str:
    """A caption for one condition changing, drawn from the paraphrases."""
    table = {"weather": WEATHER_CHANGE, "time": TIME_CHANGE, "season": SEASON_CHANGE}[kind]
    options = table[value]
    return options[int(rng.integers(len(options)))]


def scene_caption(c: Conditions, rng: np.random.Generator) -> str:
    """A caption describing the whole scene, e.g. 'a snowy winter evening'."""
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    tmpl = pick(_SCENE_TEMPLATES)
    return tmpl.format(w=pick(_WEATHER_ADJ[c.weather]), t=pick(_TIME_NOUN[c.time]), s=c.season)


# ---------------------------------------------------------------------------------------------
# Lightning is a pure function of time so that the picture (flash) and the sound (thunder a
# moment later) agree, and any moment can be re-rendered.

LIGHTNING_BUCKET_S = 0.125  # flashes start on a 1/8 s grid
LIGHTNING_RATE = 0.012  # chance per bucket: about one flash every 10 s in a full storm


def lightning(seed: int, t: float) -> float:
    """Flash brightness in [0, 1] at time t (before weighting by how stormy it is)."""
    from .noise import hash01

    b = int(np.floor(t / LIGHTNING_BUCKET_S))
    strength = 0.0
    for back, level in ((0, 1.0), (1, 0.45)):  # a flash and its fading afterglow
        if hash01(seed + 907, b - back) < LIGHTNING_RATE:
            strength = max(strength, level)
    return strength
