"""How far does a model's view move when a key is held? Whole-pixel scroll over spans, two ways.

From held-out start frames a model streams ``--frames`` frames holding one key (walk_e, walk_s); the
view's scroll is measured (``eval.motion.scroll`` on despeckled frames) once between the first and
the last frame, and once summed frame by frame as ``eval.walks`` judges a span (``frame_scrolls``).
The game moves 1 px a frame walking (the scroll is seen up to 6 px, so keep --frames at 5). A model
that moves less than a pixel a frame scrolls in the first measure and reads 0 in the second, so the two together say whether a low action-following score is a model that
stands or one that moves slowly.

    .venv/bin/python bench/view_scroll.py --data pipeline/data/overworld --model mc=pipeline/exp/mc/student \\
        --model shipped=default --starts 12 --frames 5
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rollout_vs_still import starts
from worldstream.data.format import Dataset
from worldstream.engine.stream import StreamConfig, World, recommended_rollout
from worldstream.eval.motion import despeckle, scroll
from worldstream.eval.walks import frame_scrolls


def measure(world: World, clips: list[tuple], keys: tuple[str, ...], frames: int) -> dict:
    out = {}
    for key in keys:
        ends, summed = [], []
        for real, _, caption, _ in clips:
            s = world.stream(caption, image=real[0], seed=0, config=StreamConfig(rollout=recommended_rollout(world.meta)))
            f = [s.step().frames[0, -1]] + [s.step(key).frames[0, -1] for _ in range(frames)]
            ends.append(scroll(despeckle(f[0]), despeckle(f[-1])))
            summed.append(np.sum(frame_scrolls(f), axis=0))
        out[key] = {"ends_dx_dy": np.mean(ends, 0).tolist(), "per_frame_dx_dy": np.mean(summed, 0).tolist()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", action="append", required=True, help="name=checkpoint (or 'default')")
    ap.add_argument("--starts", type=int, default=12)
    ap.add_argument("--frames", type=int, default=5, help="frames a key is held (scroll is seen up to 6 px: the game walks 5 px in 5 frames)")
    ap.add_argument("--keys", default="walk_e,walk_s")
    ap.add_argument("--json")
    a = ap.parse_args()
    keys = tuple(a.keys.split(","))
    clips = starts(Dataset(Path(a.data)), a.starts, a.frames + 4)
    print(f"| model | " + " | ".join(f"{k}: first->last frame, px (dx, dy) | {k}: summed frame by frame" for k in keys) + " |")
    print("|---|" + "---|---|" * len(keys))
    res = {}
    for spec in a.model:
        name, _, path = spec.partition("=")
        r = res[name] = measure(World.load(path or name), clips, keys, a.frames)
        cells = [f"{tuple(round(x, 2) for x in r[k][m])}" for k in keys for m in ("ends_dx_dy", "per_frame_dx_dy")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"frames": a.frames, "starts": a.starts, "models": res}, indent=1))


if __name__ == "__main__":
    main()
