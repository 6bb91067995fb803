"""Frames of an MP4 at given seconds, side by side, as one PNG (the pictures in README and docs/).

    .venv/bin/python bench/frame_strip.py tour.mp4 --at 0.5 2 3.5 5 6.5 8 9.5 11.5 --cols 4 --out docs/images/default_tour.png
"""
from __future__ import annotations

import argparse

import av
import numpy as np

from worldstream.data.png import grid, save_png


def frames_at(path: str, seconds: list[float]) -> list[np.ndarray]:
    with av.open(path) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate)
        want = {round(s * fps): s for s in seconds}
        got = {}
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                got[i] = f.to_ndarray(format="rgb24")
            if len(got) == len(want):
                break
    missing = [want[i] for i in want if i not in got]
    if missing:
        raise SystemExit(f"{path}: no frame at {missing} s (the video is shorter)")
    return [got[i] for i in sorted(got)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--at", type=float, nargs="+", required=True, help="seconds")
    ap.add_argument("--cols", type=int, default=0, help="frames per row (default: all in one row)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    frames = frames_at(a.video, a.at)
    save_png(a.out, grid(frames, cols=a.cols or len(frames)))
    print(f"wrote {a.out}: {len(frames)} frames")


if __name__ == "__main__":
    main()
