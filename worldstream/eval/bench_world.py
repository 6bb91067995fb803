"""`worldstream bench world`: how fast the built-in world renders and records.

Measures, on one core (the recorder's workers each use one): frames per second of the
renderer alone at several sizes and conditions, of a full world step (render + sound + ground
truth), and of recording to disk (step + lossless encode + audio + records); and the size on
disk per hour of data.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path


from ..worlds.overworld.conditions import Blend, Conditions
from ..worlds.overworld.world import Overworld, OverworldConfig

SIZES = ((128, 128), (160, 120), (256, 144), (256, 256), (854, 480))
CONDITIONS = {
    "clear noon": Conditions(),
    "storm sunset": Conditions(weather="storm", time="sunset"),
    "snowy night": Conditions(weather="snow", time="night", season="winter"),
    "fog morning": Conditions(weather="fog", time="morning", season="autumn"),
}


def _render_fps(world: Overworld, blend: Blend, n: int) -> float:
    r = world.renderer
    x, y = world.x, world.y
    r.view(x, y, 0.0, blend)  # warm the chunk cache and atlas
    t0 = time.perf_counter()
    for i in range(n):
        r.view(x + 0.125 * i, y + 0.05 * i, i / 24, blend, heading=2, step=i % 2)
    return n / (time.perf_counter() - t0)


def bench_world(frames: int = 600, record_frames: int = 1440) -> dict:
    """All measurements as a dict (also printed as tables by the CLI)."""
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target says
        pinned = True
    except (AttributeError, OSError):
        pinned = False
    out: dict = {"pinned_to_one_core": pinned, "render": [], "step": {}, "record": {}}
    for w, h in SIZES:
        world = Overworld(OverworldConfig(width=w, height=h))
        row = {"size": f"{w}x{h}"}
        for name, c in CONDITIONS.items():
            n = frames if w * h <= 256 * 256 else frames // 6
            row[name] = round(_render_fps(world, Blend.of(c), n), 1)
        out["render"].append(row)
    world = Overworld(OverworldConfig())
    from ..worlds.overworld.policy import explore

    t0 = time.perf_counter()
    for _ in explore(world, 1, frames):
        pass
    out["step"] = {"size": "128x128", "fps": round(frames / (time.perf_counter() - t0), 1),
                   "what": "explorer policy + physics + render + audio + ground truth"}
    from ..data.record import RecordConfig, record

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RecordConfig(world=OverworldConfig(), episodes=1, frames=record_frames)
        t0 = time.perf_counter()
        record(Path(tmp) / "ds", cfg, workers=1, progress=False)
        dt = time.perf_counter() - t0
        ep = Path(tmp) / "ds" / "episodes" / "000000"
        sizes = {f.name: f.stat().st_size for f in ep.iterdir()}
        hours = record_frames / 24 / 3600
        out["record"] = {
            "size": "128x128", "frames": record_frames, "fps_one_worker": round(record_frames / dt, 1),
            "mb_per_hour": {k: round(v / hours / 1e6, 1) for k, v in sizes.items()},
            "mb_per_hour_total": round(sum(sizes.values()) / hours / 1e6, 1),
        }
    return out


def format_tables(res: dict) -> str:
    cols = list(CONDITIONS)
    lines = ["Render speed, frames/s on one core" + ("" if res["pinned_to_one_core"] else " (not pinned)"), "",
             "| size | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in res["render"]:
        lines.append(f"| {row['size']} | " + " | ".join(f"{row[c]:.0f}" for c in cols) + " |")
    s = res["step"]
    lines += ["", f"Full world step at {s['size']} ({s['what']}): {s['fps']:.0f} frames/s", ""]
    r = res["record"]
    lines += [f"Recording at {r['size']} (one worker, incl. lossless encode): {r['fps_one_worker']:.0f} frames/s",
              f"Size on disk per hour: {r['mb_per_hour_total']:.0f} MB " + json.dumps(r["mb_per_hour"])]
    return "\n".join(lines)


def _main() -> None:  # python -m worldstream.eval.bench_world
    res = bench_world()
    print(format_tables(res))


if __name__ == "__main__":
    _main()
