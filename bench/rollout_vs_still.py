"""Does a model make a world, or only a picture? Free-running rollouts against a still picture.

From a real held-out frame, a model streams ``--frames`` frames with the episode's own actions and
caption; each generated frame is compared (PSNR) with the true frame at that time, and so is the
*start frame held still*. A model that keeps the place and moves it as the keys say beats the still
picture once the view has scrolled; one that dissolves falls below it. Prints a table, writes JSON.

Colour: how far each frame's mean colour is from the truth's (per channel, 0-255, averaged), and the
PSNR once each frame's per-channel means are moved onto the truth's: the share of the loss that is a
global colour shift (the light, the season's palette) rather than a lost place. ``--per-start`` lists
each start's caption and true conditions (weather, time, season) beside its shift.
``--scene-captions`` conditions every start on a full-scene caption of its true conditions ("a
stormy autumn morning") instead of the latest recorded one, often a change that names one
condition ("a wild storm rages"): does the colour drift come from what the caption leaves unsaid?

Long walks (``--frames`` up to 478: frames 96, 192 and 384 are reported when reached, with a long
contact sheet; the starts then come from earlier in each episode, so they are other starts than a
shorter run's of the same seed): the **tether** is how many dB closer each generated frame stays to
the stream's first frame than the true frame is to the true start. A stream that leaves its start as
the player does keeps it near 0; one held to where it began (by its sinks) grows it.

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
from worldstream.eval.stream import sharpness, streaks
from worldstream.model.omni import centre_square

AT = (1, 2, 5, 12, 24, 48, 96, 192, 384)  # frames after the start at which PSNR is reported (up to --frames)
SHEET = (0, 2, 5, 8, 12, 18, 24, 36, 48)  # frames shown in the contact sheet (longer walks: LONG_SHEET)
LONG_SHEET = (0, 12, 24, 48, 96, 144, 192, 288, 384)


def sheet_frames(frames: int) -> list[int]:
    """The frames a contact sheet shows for a walk of ``frames`` (its columns)."""
    return [f for f in (LONG_SHEET if frames > 48 else SHEET) if f <= frames]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def player_psnr(a: np.ndarray, truth: np.ndarray, side: int = 8) -> float:
    """PSNR of the ``side`` x ``side`` square at the frame's centre, where the overworld's camera draws the player
    (its 8 x 8 sprite at the default zoom): a sprite that drifts off centre or fades into ghosts loses it."""
    ys, xs = centre_square(*a.shape[:2], side)
    return psnr(a[ys, xs], truth[ys, xs])


def colour_shift(a: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute difference of the per-channel mean colours (0-255)."""
    return float(np.abs(a.reshape(-1, 3).mean(0) - truth.reshape(-1, 3).mean(0)).mean())


def matched_psnr(a: np.ndarray, truth: np.ndarray) -> float:
    """PSNR after moving ``a``'s per-channel means onto the truth's."""
    a = a.astype(np.float64) + truth.reshape(-1, 3).mean(0) - a.reshape(-1, 3).mean(0)
    return psnr(np.clip(a, 0, 255), truth)


def conditions(record: dict) -> str:
    state = record.get("state") or {}
    return "/".join(str(state.get(k, "?")) for k in ("weather", "time", "season"))


def scene_captioned(clips: list[tuple], seed: int = 0) -> list[tuple]:
    """The starts with a full-scene caption of each one's true conditions in place of its own."""
    from worldstream.worlds.overworld.conditions import Conditions, scene_caption

    rng = np.random.default_rng(seed)
    out = []
    for real, actions, _, cond in clips:
        w, t, s = cond.split("/")
        out.append((real, actions, scene_caption(Conditions(weather=w, time=t, season=s), rng), cond))
    return out


def starts(ds: Dataset, n: int, frames: int, seed: int = 0) -> list[tuple]:
    """(frames[t0 : t0 + frames + 1], actions, caption, conditions at t0) from held-out episodes, spread evenly."""
    rng = np.random.default_rng(seed)
    eps = ds.split("heldout")
    short = min(ep.n_frames for ep in eps)
    if short < frames + 2:
        raise SystemExit(f"{ds.path}: a held-out episode has {short} frames; --frames must be below {short - 1}")
    out = []
    for i in range(n):
        ep = eps[i % len(eps)]
        t0 = int(rng.integers(0, ep.n_frames - frames - 1))
        recs = ep.records()
        cap = next((r["caption"] for r in reversed(recs[: t0 + 1]) if r.get("caption")), "")
        out.append((np.array(ep.frames()[t0 : t0 + frames + 1]), ep.actions()[t0 + 1 : t0 + frames + 1], cap,
                    conditions(recs[t0])))
    return out


@torch.no_grad()
def run(world: World, clips: list[tuple], frames: int, compile: bool, hold: bool = False, **rollout) -> dict:
    """``rollout``: overrides of the checkpoint's recommended sampler (steps, history_noise, ...).
    ``hold``: stand still (action ``idle``) and compare with the stream's own first frame."""
    names = world.vocab.names
    rcfg = dataclasses.replace(recommended_rollout(world.meta), **rollout)
    model_p, still_p, sharp, shown, shift, matched, tether, streak, player = [], [], [], [], [], [], [], [], []
    for real, actions, caption, _ in clips:
        s = world.stream(caption, image=real[0], seed=0, config=StreamConfig(rollout=rcfg, compile=compile))
        got = [s.step().frames[0, -1]]  # the start frame itself (through the autoencoder)
        for f in range(frames):  # actions[f] made frame f + 1
            act = "idle" if hold else names[int(actions[f])] if actions[f] >= 0 else None
            got.append(s.step(act).frames[0, -1])
        truth = [got[0]] * (frames + 1) if hold else real
        model_p.append([psnr(got[f], truth[f]) for f in AT if f <= frames])
        sharp.append([sharpness(got[f][None]) for f in AT if f <= frames])
        streak.append([streaks(got[f][None]) for f in AT if f <= frames])
        player.append([player_psnr(got[f], truth[f]) for f in AT if f <= frames])
        shift.append([colour_shift(got[f], truth[f]) for f in AT if f <= frames])
        matched.append([matched_psnr(got[f], truth[f]) for f in AT if f <= frames])
        still_p.append([psnr(real[0], real[f]) for f in AT if f <= frames])
        if not hold:  # tether: how much closer to the start frame the stream stays than the truth does (dB);
            # a stream that follows a walk away from the start keeps it near 0, one held to its start grows it
            tether.append([psnr(got[f], got[0]) - psnr(real[f], real[0]) for f in AT if f <= frames])
        shown.append([got[f] for f in sheet_frames(frames)])
    m, st = np.array(model_p), np.array(still_p)
    return {"at": [f for f in AT if f <= frames], "hold": hold, "model_psnr": m.mean(0).tolist(),
            "still_psnr": None if hold else st.mean(0).tolist(),
            "model_beats_still": None if hold else (m > st).mean(0).tolist(), "model_sharpness": np.array(sharp).mean(0).tolist(),
            "model_streaks": np.array(streak).mean(0).tolist(), "player_psnr": np.array(player).mean(0).tolist(),
            "real_sharpness": sharpness(np.stack([c[0][0] for c in clips])), "starts": len(clips),
            "colour_shift": np.array(shift).mean(0).tolist(), "matched_psnr": np.array(matched).mean(0).tolist(),
            "tether_db": None if hold else np.array(tether).mean(0).tolist(),
            "per_start": [{"caption": c[2], "conditions": c[3], "psnr": p, "colour_shift": sh, "matched_psnr": mp}
                          for c, p, sh, mp in zip(clips, model_p, shift, matched)],
            "rollout": dataclasses.asdict(rcfg), "frames": shown}


@torch.no_grad()
def out_and_back(world: World, ds: Dataset, n_starts: int, n: int, compile: bool, seed: int = 0, **rollout) -> dict:
    """Out and back: from held-out starts the model walks ``n`` frames one way and ``n`` back (east, north, west,
    south in turn), each frame scored against the game replayed from the same place under the same keys
    (``eval.walks.game_walk``: where the game stops the player at water or rocks, so does the truth); the frame
    back at the start is also scored against the stream's own first frame (does it show the same place again,
    whether or not its moves were right). The walks of ``bench/pixel_vs_latent.py --revisit``, for any checkpoint."""
    from worldstream.eval.walks import game_walk, replayable

    ways = (("walk_e", "walk_w"), ("walk_n", "walk_s"), ("walk_w", "walk_e"), ("walk_s", "walk_n"))
    rcfg = dataclasses.replace(recommended_rollout(world.meta), **rollout)
    rng = np.random.default_rng(seed)
    eps = [ep for ep in ds.split("heldout") if replayable(ep)]
    at = sorted({1, n // 2, n, n + n // 2, 2 * n})
    got_p, still_p, own_back, shown, player = [], [], [], [], []
    for i in range(n_starts):
        ep = eps[i % len(eps)]
        t0 = int(rng.integers(0, ep.n_frames - 1))
        keys = [ways[i % 4][0]] * n + [ways[i % 4][1]] * n
        truth = np.stack([ep.frames()[t0]] + game_walk(ep, t0, keys).frames)
        cap = next((r["caption"] for r in reversed(ep.records()[: t0 + 1]) if r.get("caption")), "")
        s = world.stream(cap, image=truth[0], seed=0, config=StreamConfig(rollout=rcfg, compile=compile))
        got = [s.step().frames[0, -1]] + [s.step(k).frames[0, -1] for k in keys]
        got_p.append([psnr(got[f], truth[f]) for f in at])
        still_p.append([psnr(truth[0], truth[f]) for f in at])
        own_back.append(psnr(got[2 * n], got[0]))
        player.append([player_psnr(got[f], truth[f]) for f in at])
        shown.append([truth[f] for f in at] + [got[f] for f in at])
    return {"at": at, "psnr": np.mean(got_p, 0).tolist(), "still_psnr": np.mean(still_p, 0).tolist(),
            "own_return_psnr": float(np.mean(own_back)), "player_psnr": np.mean(player, 0).tolist(), "starts": n_starts,
            "rollout": dataclasses.asdict(rcfg),
            "frames": shown}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset with held-out episodes (the model's resolution)")
    ap.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (default: the shipped model)")
    ap.add_argument("--starts", type=int, default=12)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0, help="which starts are drawn (another seed: a fresh set to check on)")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--steps", type=int, help="sampler steps (default: the checkpoint's)")
    ap.add_argument("--history-noise", type=float, help="commit generated chunks at this noise level")
    ap.add_argument("--hold", action="store_true", help="stand still (idle) and compare with the first frame")
    ap.add_argument("--text-scale", type=float, help="prompt guidance (a teacher's default otherwise)")
    ap.add_argument("--action-scale", type=float, help="action guidance")
    ap.add_argument("--prev-level", type=float, help="a --prev-level model: degrade its previous frame at this level")
    ap.add_argument("--sheet", help="PNG: for the first --sheet-starts starts, the truth and each model's frames")
    ap.add_argument("--sheet-starts", type=int, default=3)
    ap.add_argument("--scene-captions", action="store_true",
                    help="caption each start with a full-scene caption of its true conditions")
    ap.add_argument("--per-start", action="store_true", help="each start's caption, conditions and colour shift")
    ap.add_argument("--device", default="cpu", help="where the models stream (cuda: a GPU)")
    ap.add_argument("--revisit", type=int, default=0, metavar="N",
                    help="instead: walk N frames out and N back from each start, scored against the game replayed "
                         "under the same keys and against the stream's own first frame")
    ap.add_argument("--json")
    a = ap.parse_args()
    clips = starts(Dataset(a.data), a.starts, a.frames if not a.revisit else 2, a.seed)
    if a.scene_captions:
        clips = scene_captioned(clips)
    worlds = {}  # every model loaded and checked before the first one streams
    for spec in a.model:
        name, _, path = spec.partition("=")
        world = worlds[name] = World.load(None if path in ("", "default") else path).to(a.device)
        if (world.height, world.width) != clips[0][0].shape[1:3]:
            raise SystemExit(f"{name}: the model streams {world.width}x{world.height}, {a.data} holds "
                             f"{clips[0][0].shape[2]}x{clips[0][0].shape[1]} frames; use data at the model's resolution")
    over = {k: v for k, v in (("steps", a.steps), ("history_noise", a.history_noise), ("text_scale", a.text_scale),
                              ("action_scale", a.action_scale), ("prev_level", a.prev_level)) if v is not None}
    if a.revisit:
        res = {name: out_and_back(world, Dataset(a.data), a.starts, a.revisit, a.compile, a.seed, **over)
               for name, world in worlds.items()}
        at = next(iter(res.values()))["at"]
        print(f"out {a.revisit} frames and back, {a.starts} starts: PSNR dB at frame " + " / ".join(map(str, at)))
        for name, r in res.items():
            print(f"| {name} | against the game: " + " / ".join(f"{x:.1f}" for x in r["psnr"])
                  + f" | back at the start against its own first frame: {r['own_return_psnr']:.1f} | the player (centre"
                  + " 8 x 8 px): " + " / ".join(f"{x:.1f}" for x in r["player_psnr"]) + " |")
        print("| the start held still | " + " / ".join(f"{x:.1f}" for x in next(iter(res.values()))["still_psnr"]) + " |")
        if a.sheet:
            rows = [f for r in res.values() for start in r["frames"][: a.sheet_starts] for f in start]
            save_png(a.sheet, grid(rows, cols=len(at)))
        if a.json:
            Path(a.json).write_text(json.dumps({k: {x: y for x, y in r.items() if x != "frames"} for k, r in res.items()},
                                               indent=1))
        return
    res = {name: run(world, clips, a.frames, a.compile, a.hold, **over) for name, world in worlds.items()}
    at = next(iter(res.values()))["at"]
    print("| model | " + " | ".join(f"frame {f}" for f in at) + " |")
    print("|---|" + "---|" * len(at))
    for name, r in res.items():
        print(f"| {name}: PSNR dB | " + " | ".join(f"{x:.1f}" for x in r["model_psnr"]) + " |")
        if not a.hold:
            print(f"| {name}: beats the still picture | " + " | ".join(f"{x:.0%}" for x in r["model_beats_still"]) + " |")
        print(f"| {name}: sharpness | " + " | ".join(f"{x:.3f}" for x in r["model_sharpness"]) + " |")
        print(f"| {name}: streaks | " + " | ".join(f"{x:.1%}" for x in r["model_streaks"]) + " |")
        print(f"| {name}: the player (centre 8 x 8 px) PSNR dB | " + " | ".join(f"{x:.1f}" for x in r["player_psnr"]) + " |")
        print(f"| {name}: colour shift (0-255) | " + " | ".join(f"{x:.1f}" for x in r["colour_shift"]) + " |")
        print(f"| {name}: PSNR, colour means matched | " + " | ".join(f"{x:.1f}" for x in r["matched_psnr"]) + " |")
        if not a.hold:
            print(f"| {name}: tether (dB closer to the start than the truth) | "
                  + " | ".join(f"{x:+.1f}" for x in r["tether_db"]) + " |")
    first = next(iter(res.values()))
    if not a.hold:
        print("| still picture: PSNR dB | " + " | ".join(f"{x:.1f}" for x in first["still_psnr"]) + " |")
    print(f"real start frames' sharpness: {first['real_sharpness']:.3f}")
    if a.per_start:  # frame 12 (or the last reported): where the drift shows
        k = at.index(12) if 12 in at else len(at) - 1
        for name, r in res.items():
            for i, d in enumerate(r["per_start"]):
                print(f"{name} start {i}: {d['conditions']:22s} shift {d['colour_shift'][k]:5.1f}  PSNR "
                      f"{d['psnr'][k]:5.1f} -> {d['matched_psnr'][k]:5.1f} matched at frame {at[k]}  caption {d['caption']!r}")
    if a.sheet:  # rows: the truth (held: the start frame), then each model, per start; columns: frames SHEET after the start
        rows = []
        sheet = sheet_frames(a.frames)
        for i in range(min(a.sheet_starts, len(clips))):
            rows += [clips[i][0][0 if a.hold else f] for f in sheet]
            for r in res.values():
                rows += r["frames"][i]
        save_png(a.sheet, grid(rows, cols=len(sheet)))
        print(f"wrote {a.sheet}: per start, rows truth, " + ", ".join(res) + f"; frames {sheet}")
    for r in res.values():
        del r["frames"]
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
