"""Does a model make a world, or only a picture? Free-running rollouts against a still picture.

From a real held-out frame, a model streams ``--frames`` frames with the episode's own actions and
caption; each generated frame is compared (PSNR) with the true frame at that time, and so is the
*start frame held still*. A model that keeps the place and moves it as the keys say beats the still
picture once the view has scrolled; one that dissolves falls below it. Prints a table, writes JSON.

``--hold``: the player stands (every action ``idle``), so the view should hold still, and each frame
is compared with the stream's own first frame (the start through the autoencoder). Only weather
particles, water and the light move in the game then, so a model that keeps the place stays near
the top of the scale; one that cannot even copy a still scene falls from the first frames on.

    .venv/bin/python bench/rollout_vs_still.py --data pipeline/data/overworld --model new=pipeline/bundle \\
        --model shipped=default --starts 12 --json docs/results/rollout_vs_still.json --sheet rollouts.png
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from worldstream.data.format import Dataset
from worldstream.data.png import grid, save_png
from worldstream.engine.stream import StreamConfig, World, recommended_rollout
from worldstream.eval.stream import sharpness

AT = (1, 2, 5, 12, 24, 48)  # frames after the start at which PSNR is reported
SHEET = (0, 2, 5, 8, 12, 18, 24, 36, 48)  # frames shown in the contact sheet


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def starts(ds: Dataset, n: int, frames: int, seed: int = 0) -> list[tuple]:
    """(frames[t0 : t0 + frames + 1], actions, caption) from held-out episodes, spread evenly."""
    rng = np.random.default_rng(seed)
    eps = ds.split("heldout")
    out = []
    for i in range(n):
        ep = eps[i % len(eps)]
        t0 = int(rng.integers(0, ep.n_frames - frames - 1))
        recs = ep.records()
        cap = next((r["caption"] for r in reversed(recs[: t0 + 1]) if r.get("caption")), "")
        out.append((np.array(ep.frames()[t0 : t0 + frames + 1]), ep.actions()[t0 + 1 : t0 + frames + 1], cap))
    return out


@torch.no_grad()
def run(world: World, clips: list[tuple], frames: int, compile: bool, hold: bool = False, **rollout) -> dict:
    """``rollout``: overrides of the checkpoint's recommended sampler (steps, history_noise, ...).
    ``hold``: stand still (action ``idle``) and compare with the stream's own first frame."""
    names = world.vocab.names
    rcfg = dataclasses.replace(recommended_rollout(world.meta), **rollout)
    model_p, still_p, sharp, shown = [], [], [], []
    for real, actions, caption in clips:
        s = world.stream(caption, image=real[0], seed=0, config=StreamConfig(rollout=rcfg, compile=compile))
        got = [s.step().frames[0, -1]]  # the start frame itself (through the autoencoder)
        for f in range(frames):  # actions[f] made frame f + 1
            act = "idle" if hold else names[int(actions[f])] if actions[f] >= 0 else None
            got.append(s.step(act).frames[0, -1])
        truth = [got[0]] * (frames + 1) if hold else real
        model_p.append([psnr(got[f], truth[f]) for f in AT if f <= frames])
        sharp.append([sharpness(got[f][None]) for f in AT if f <= frames])
        still_p.append([psnr(real[0], real[f]) for f in AT if f <= frames])
        shown.append([got[f] for f in SHEET if f <= frames])
    m, st = np.array(model_p), np.array(still_p)
    return {"at": [f for f in AT if f <= frames], "hold": hold, "model_psnr": m.mean(0).tolist(),
            "still_psnr": None if hold else st.mean(0).tolist(),
            "model_beats_still": None if hold else (m > st).mean(0).tolist(), "model_sharpness": np.array(sharp).mean(0).tolist(),
            "real_sharpness": sharpness(np.stack([c[0][0] for c in clips])), "starts": len(clips),
            "rollout": dataclasses.asdict(rcfg), "frames": shown}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset with held-out episodes (the model's resolution)")
    ap.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (default: the shipped model)")
    ap.add_argument("--starts", type=int, default=12)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--steps", type=int, help="sampler steps (default: the checkpoint's)")
    ap.add_argument("--history-noise", type=float, help="commit generated chunks at this noise level")
    ap.add_argument("--hold", action="store_true", help="stand still (idle) and compare with the first frame")
    ap.add_argument("--text-scale", type=float, help="prompt guidance (a teacher's default otherwise)")
    ap.add_argument("--action-scale", type=float, help="action guidance")
    ap.add_argument("--prev-level", type=float, help="a --prev-level model: degrade its previous frame at this level")
    ap.add_argument("--sheet", help="PNG: for the first --sheet-starts starts, the truth and each model's frames")
    ap.add_argument("--sheet-starts", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    clips = starts(Dataset(a.data), a.starts, a.frames)
    res = {}
    for spec in a.model:
        name, _, path = spec.partition("=")
        over = {k: v for k, v in (("steps", a.steps), ("history_noise", a.history_noise), ("text_scale", a.text_scale),
                                  ("action_scale", a.action_scale), ("prev_level", a.prev_level)) if v is not None}
        res[name] = run(World.load(None if path in ("", "default") else path), clips, a.frames, a.compile, a.hold, **over)
    at = next(iter(res.values()))["at"]
    print("| model | " + " | ".join(f"frame {f}" for f in at) + " |")
    print("|---|" + "---|" * len(at))
    for name, r in res.items():
        print(f"| {name}: PSNR dB | " + " | ".join(f"{x:.1f}" for x in r["model_psnr"]) + " |")
        if not a.hold:
            print(f"| {name}: beats the still picture | " + " | ".join(f"{x:.0%}" for x in r["model_beats_still"]) + " |")
        print(f"| {name}: sharpness | " + " | ".join(f"{x:.3f}" for x in r["model_sharpness"]) + " |")
    first = next(iter(res.values()))
    if not a.hold:
        print("| still picture: PSNR dB | " + " | ".join(f"{x:.1f}" for x in first["still_psnr"]) + " |")
    print(f"real start frames' sharpness: {first['real_sharpness']:.3f}")
    if a.sheet:  # rows: the truth (held: the start frame), then each model, per start; columns: frames SHEET after the start
        rows = []
        for i in range(min(a.sheet_starts, len(clips))):
            rows += [clips[i][0][0 if a.hold else f] for f in SHEET if f <= a.frames]
            for r in res.values():
                rows += r["frames"][i]
        save_png(a.sheet, grid(rows, cols=len([f for f in SHEET if f <= a.frames])))
        print(f"wrote {a.sheet}: per start, rows truth, " + ", ".join(res) + f"; frames {SHEET}")
    for r in res.values():
        del r["frames"]
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
