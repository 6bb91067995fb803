"""Make docs/images/overworld_*.png: the built-in world under every condition, and at 16:9.

    .venv/bin/python bench/overworld_gallery.py
"""
from pathlib import Path

import numpy as np

from worldstream.data.png import grid, save_png
from worldstream.worlds.overworld import Conditions, Overworld, OverworldConfig

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def up(img: np.ndarray, k: int = 2) -> np.ndarray:
    return np.kron(img, np.ones((k, k, 1), np.uint8))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    world = Overworld(OverworldConfig(width=128, height=128))
    world.reset(seed=0)
    spots = [world.find_spawn(x, y) for x, y in ((40, 25), (-300, 120), (500, -260), (77, 640))]
    rows = [
        Conditions("clear", "noon", "summer"), Conditions("rain", "morning", "spring"),
        Conditions("storm", "sunset", "autumn"), Conditions("snow", "night", "winter"),
        Conditions("fog", "morning", "autumn"), Conditions("clear", "sunset", "winter"),
    ]
    tiles = [up(world.view_at(x, y, 7.3, c, heading=3)) for c in rows for (x, y) in spots]
    save_png(OUT / "overworld_conditions.png", grid(tiles, cols=len(spots)))
    wide = Overworld(OverworldConfig(width=256, height=144))
    x, y = wide.find_spawn(40, 25)
    save_png(OUT / "overworld_16x9.png", up(wide.view_at(x, y, 3.0, Conditions("clear", "morning", "spring")), 3))
    print(f"wrote {OUT}/overworld_conditions.png (rows: {', '.join(f'{c.weather} {c.time} {c.season}' for c in rows)})")


if __name__ == "__main__":
    main()
