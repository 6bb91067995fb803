"""Long-stream measurements of the streaming engine: flat cost, drift, revisits, latency.

* ``long_stream``: one stream for N minutes under a random walk with changing actions. Per
  chunk: wall time; every few seconds: process memory (RSS) and cache size; per minute: frame
  statistics against real frames (sharpness, colour-histogram distance, the condition judge's
  verdicts). Flatness is the least-squares slope of time and memory per minute.
* ``revisits``: held-out episodes where the recorder looped back to a place seen 10-60 s
  earlier. The stream starts from the real frame before the first visit (image restart) and
  follows the real actions; the returning view is compared with the first visit in the same
  stream and with the world's true view, with the memory bank on (retrieval by key
  similarity), off, and on with the true positions given (retrieval by position first).
* ``latency``: input-to-frame for actions (an event pushed at a random moment during a chunk
  applies to the next chunk: time from push to that chunk's frames), and prompt-to-visible:
  chunks until the condition judge sees the prompted condition, with and without re-encoding
  the window under the new prompt.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.format import Dataset
from ..engine.events import Event
from ..engine.rollout import RolloutConfig
from ..engine.stream import StreamConfig, World
from ..tokenizers.losses import psnr
from ..worlds.overworld.conditions import TIMES, WEATHERS
from .motion import train_condition_net


def rss_mb() -> float:
    """Resident memory of this process now (Linux), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else 0.0


def sharpness(frames: np.ndarray) -> float:
    """Mean absolute Laplacian of luminance (frames (N, H, W, 3) uint8): falls as frames blur."""
    y = frames.astype(np.float32).mean(-1) / 255
    lap = 4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2] - y[:, 1:-1, 2:]
    return float(np.abs(lap).mean())


def streaks(frames: np.ndarray, run: int = 8, tol: int = 2) -> float:
    """Share of pixels on a streak (frames (N, H, W, 3) uint8): a run of ``run`` or more pixels along a row (or
    a column), each within ``tol`` colour levels of the next, that differ by more than that from the row beside
    them. A whole-pixel move's repeated border becomes such streaks as a walk goes on (forty-second session), a
    network's small change to it included; recorded ground, drawn with grain, has few: tile edges, flat roofs,
    the night's smooth light (up to 3% of a frame)."""
    f = frames.astype(np.int16)

    def along_rows(f: np.ndarray) -> np.ndarray:  # (N, H, W) True on a horizontal streak
        same = np.abs(f[:, :, 1:] - f[:, :, :-1]).max(-1) <= tol
        starts = np.lib.stride_tricks.sliding_window_view(same, run - 1, axis=2).all(-1)  # a run starts at j
        on = np.zeros(f.shape[:3], dtype=bool)
        for k in range(run):
            on[:, :, k : k + starts.shape[2]] |= starts
        differ = np.abs(f[:, 1:] - f[:, :-1]).max(-1) > tol
        across = np.zeros_like(on)
        across[:, 1:] |= differ
        across[:, :-1] |= differ
        return on & across

    return float((along_rows(f) | along_rows(f.transpose(0, 2, 1, 3)).transpose(0, 2, 1)).mean())


def colour_hist(frames: np.ndarray, bins: int = 8) -> np.ndarray:
    q = (frames.reshape(-1, 3).astype(np.int32) * bins) // 256
    h = np.bincount(q[:, 0] * bins * bins + q[:, 1] * bins + q[:, 2], minlength=bins**3).astype(np.float64)
    return h / h.sum()


def hist_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance between two colour histograms (0 same, 1 disjoint)."""
    return float(0.5 * np.abs(a - b).sum())


def _real_frames(dataset: Dataset, n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    eps = dataset.split("heldout")
    for ep in eps:
        fr = ep.frames()
        for i in rng.choice(len(fr), size=min(len(fr), n // len(eps)), replace=False):
            out.append(np.array(fr[i]))
    return np.stack(out)


def _judge(net, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        lw, lt = net(x)
    return lw.argmax(1).numpy(), lt.argmax(1).numpy()


@torch.no_grad()
def long_stream(world: World, dataset: str | Path, minutes: float, rollout: RolloutConfig, prompt: str = "",
                seed: int = 0, sample_every_s: float = 5.0, progress: bool = True,
                judge_renders: int = 3000, memory_chunks: int = 256, judge=None, compile: bool = False) -> dict[str, Any]:
    ds = Dataset(dataset)
    real = _real_frames(ds)
    real_hist, real_sharp = colour_hist(real), sharpness(real)
    net, judge_acc = judge or train_condition_net(ds, renders=judge_renders)
    rw, rt = _judge(net, real)
    ep = ds.split("heldout")[0]  # start from a real held-out frame and its caption (image-to-world)
    start = np.array(ep.frames()[0])
    prompt = prompt or next((r["caption"] for r in ep.records() if r.get("caption")), "")
    cfg = StreamConfig(rollout=rollout, memory_chunks=memory_chunks, compile=compile)
    if compile:
        world.warm_up(cfg)
    s = world.stream(prompt, image=start, seed=seed, config=cfg)
    rng = np.random.default_rng(seed)
    walk = [n for n in world.vocab.names if n.startswith(("walk", "run"))] + ["idle"]
    n_chunks = int(minutes * 60 * world.fps / world.frames_per_chunk)
    every = max(1, int(sample_every_s * world.fps / world.frames_per_chunk))
    per_min = int(60 * world.fps / world.frames_per_chunk)
    samples, minute_frames, per_minute, snapshots = [], [], [], [start]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_chunks, unit="chunk", desc="stream")
    action = "idle"
    seconds = []  # every chunk's (a stream itself keeps only its recent ones)
    for c in range(n_chunks):
        if rng.random() < 1 / (2 * world.fps):  # a new action about every 2 s
            action = walk[rng.integers(len(walk))]
        chunk = s.step(action)
        seconds.append(chunk.seconds)
        if c % max(1, per_min // 120) == 0:  # ~120 frames a minute for the statistics
            minute_frames.append(chunk.frames[0, -1])
        if c % every == 0:
            cache = s.branches[0].cache
            samples.append({"chunk": c, "minute": c / per_min, "rss_mb": rss_mb(), "cache_mb": sum(
                b.cache.nbytes() for b in s.branches) / 2**20, "cache_tokens": cache.n_tokens})
        if (c + 1) % per_min == 0 or c == n_chunks - 1:
            f = np.stack(minute_frames)
            snapshots.append(f[-1].copy())  # a view would keep the whole minute's stack alive (~6 MB a minute)
            jw, jt = _judge(net, f)
            per_minute.append({"minute": len(per_minute) + 1, "sharpness": sharpness(f),
                               "hist_distance_to_real": hist_distance(colour_hist(f), real_hist),
                               "judge_weather": {w: float((jw == i).mean()) for i, w in enumerate(WEATHERS)},
                               "judge_time": {t: float((jt == i).mean()) for i, t in enumerate(TIMES)}})
            minute_frames = []
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    t = np.array(seconds) * 1000
    minute = np.arange(len(t)) / per_min
    warm = slice(min(len(t) - 1, per_min // 6), None)  # after the cache has filled
    sm = np.array([x["minute"] for x in samples])
    # memory slopes after the first minute (the window and the bank fill in its first ~20 s, and a
    # fit from minute 0 reads that filling as growth); short runs: every sample after the first (minute 0)
    fit_from = 1.0 if minutes >= 2 else 0.0
    settled = (sm >= fit_from) & (sm > 0)
    return {
        "checkpoint": world.meta["path"], "minutes": minutes, "chunks": n_chunks, "rollout": dataclasses.asdict(rollout),
        "view": {k: getattr(world.model.cfg, k) for k in ("window", "sinks", "memory_topk", "memory_tokens")},
        "ms_per_chunk": {"p50": float(np.percentile(t[warm], 50)), "p95": float(np.percentile(t[warm], 95)),
                         "p99": float(np.percentile(t[warm], 99)), "first": float(t[0])},
        "slope_ms_per_chunk_per_minute": _slope(minute[warm], t[warm]),
        "slope_rss_mb_per_minute": _slope(sm[settled], np.array([x["rss_mb"] for x in samples])[settled]),
        "slope_cache_mb_per_minute": _slope(sm[settled], np.array([x["cache_mb"] for x in samples])[settled]),
        "slopes_fitted_from_minute": fit_from,
        "samples": samples, "per_minute": per_minute,
        "real": {"sharpness": real_sharp, "judge_weather": {w: float((rw == i).mean()) for i, w in enumerate(WEATHERS)},
                 "judge_time": {t_: float((rt == i).mean()) for i, t_ in enumerate(TIMES)}},
        "judge_heldout_accuracy": judge_acc, "ms_per_chunk_all": t.tolist(), "prompt": prompt,
        "snapshots": snapshots,  # the start frame, then the last sampled frame of every minute (arrays)
    }


def _to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def revisits(world: World, dataset: str | Path, rollout: RolloutConfig, episodes: int = 2, seconds: float = 100.0,
             lead: float = 2.0, bins: tuple = ((5, 20), (20, 40), (40, 75)), progress: bool = True,
             modes: tuple[str, ...] = ("memory_on", "memory_off", "memory_by_position")) -> dict[str, Any]:
    """Returning views vs first visits, memory bank on and off (same seeds); a model without a bank (a pixel
    model's memory is its stream's ground, ``engine.ground``) streams once, as ``memory_on``."""
    ds = Dataset(dataset)
    eps = ds.split("heldout")[:episodes]
    fps = world.fps
    topk = world.model.cfg.memory_topk
    if not topk:  # no memory bank to switch off or to steer by position: the three modes are one stream
        modes = ("memory_on",)
    modes = {m: t for m, t in (("memory_on", topk), ("memory_off", 0), ("memory_by_position", topk)) if m in modes}
    out: dict[str, Any] = {"checkpoint": world.meta["path"], "dataset": str(dataset), "pairs": []}
    base_cfg = world.model.cfg
    for ep in eps:
        recs = ep.records()
        frames = ep.frames()
        n = min(len(recs), int(seconds * fps))
        pairs = [(r["state"]["revisit_of"], i) for i, r in enumerate(recs[:n]) if r["state"].get("revisit_of") is not None]
        if not pairs:
            continue
        n = max(b for _, b in pairs) + 1  # follow the episode until its last return
        t0 = max(0, min(p[0] for p in pairs) - int(lead * fps))
        caption = next((r["caption"] for r in reversed(recs[: t0 + 1]) if r.get("caption")), "")
        gen: dict[str, list[np.ndarray]] = {}
        for mode, topk in modes.items():
            world.model.cfg = dataclasses.replace(base_cfg, memory_topk=topk)
            s = world.stream(caption, image=np.array(frames[t0]), seed=0, config=StreamConfig(rollout=rollout))
            got = []
            it = range(t0, n)
            if progress:
                from tqdm import tqdm
                it = tqdm(it, desc=f"{ep.name} {mode}", unit="frame")
            for i in it:
                a = recs[i].get("action")
                pos = (recs[i]["state"]["x"], recs[i]["state"]["y"]) if mode == "memory_by_position" else None
                got.append(s.step(a if a is not None else "idle", position=pos).frames[0, -1])
            gen[mode] = got
        world.model.cfg = base_cfg
        for first, back in pairs:
            gap = (back - first) / fps
            b = next((f"{lo}-{hi}s" for lo, hi in bins if lo <= gap <= hi), None)
            if b is None or first < t0:
                continue
            rec = {"episode": ep.name, "first": first, "back": back, "gap_s": gap, "bin": b,
                   "true_first_vs_true_back_db": psnr(_to_tensor([frames[first]]), _to_tensor([frames[back]]))}
            for mode, g in gen.items():
                rec[f"{mode}_back_vs_first_db"] = psnr(_to_tensor([g[back - t0]]), _to_tensor([g[first - t0]]))
                rec[f"{mode}_back_vs_true_db"] = psnr(_to_tensor([g[back - t0]]), _to_tensor([frames[back]]))
            out["pairs"].append(rec)
    summary = {}
    for lo, hi in bins:
        b = f"{lo}-{hi}s"
        rows = [p for p in out["pairs"] if p["bin"] == b]
        if rows:
            summary[b] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k.endswith("_db")}
            summary[b]["pairs"] = len(rows)
    out["summary"] = summary
    return out


@torch.no_grad()
def latency(world: World, dataset: str | Path, rollout: RolloutConfig, trials: int = 20,
            prompt_trials: int = 4, max_chunks: int = 72, seed: int = 0, judge_renders: int = 3000) -> dict[str, Any]:
    """Input-to-frame latency of actions (ms) and prompt-to-visible-change (chunks and ms)."""
    rng = np.random.default_rng(seed)
    s = world.stream("", seed=seed, config=StreamConfig(rollout=rollout))
    for _ in range(3):
        s.step()  # warm up
    lat = []
    for k in range(trials):
        ms = s.timings[-1]
        pushed = {}

        def press(k=k):
            pushed["t"] = time.perf_counter()
            s.act("walk_e" if k % 2 else "walk_w")

        timer = threading.Timer(rng.uniform(0, ms), press)
        timer.start()
        s.step()  # the chunk during which the key is pressed
        timer.join()
        s.step()  # the chunk that applies it
        lat.append((time.perf_counter() - pushed["t"]) * 1000)
    ds = Dataset(dataset)
    net, _ = train_condition_net(ds, renders=judge_renders)
    changes = {"night falls": ("time", "night"), "it begins to snow": ("weather", "snow")}
    prompt_res = {}
    for recache in (True, False):
        chunks_needed, ms_needed = [], []
        for k in range(prompt_trials):
            p, (kind, value) = list(changes.items())[k % len(changes)]
            ep = ds.split("heldout")[k % len(ds.split("heldout"))]
            rec0 = ep.records()[0]
            if rec0["state"][kind] == value:
                continue
            st = world.stream(rec0.get("caption") or "", image=np.array(ep.frames()[0]), seed=k,
                              config=StreamConfig(rollout=rollout, recache=recache))
            for _ in range(4):
                st.step("idle")
            st.prompt(p)
            t0 = time.perf_counter()
            seen = None
            run = 0
            for c in range(max_chunks):
                f = st.step("idle").frames[0, -1:]
                jw, jt = _judge(net, f)
                hit = (jt[0] == TIMES.index(value)) if kind == "time" else (jw[0] == WEATHERS.index(value))
                run = run + 1 if hit else 0
                if run >= 3:  # shown for 3 chunks in a row
                    seen = c - 2
                    break
            chunks_needed.append(seen)  # None: not shown within max_chunks
            ms_needed.append((time.perf_counter() - t0) * 1000 if seen is not None else None)
        finite = [c for c in chunks_needed if c is not None]
        prompt_res["recache" if recache else "no_recache"] = {
            "trials": len(chunks_needed), "shown": len(finite), "chunks": chunks_needed,
            "chunks_p50": float(np.percentile(finite, 50)) if finite else None,
            "chunks_p95": float(np.percentile(finite, 95)) if finite else None}
    return {"checkpoint": world.meta["path"], "rollout": dataclasses.asdict(rollout),
            "action_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)), "all": lat},
            "ms_per_chunk_p50": float(np.median(list(s.timings)[3:])) * 1000, "prompt_to_visible": prompt_res}


def plot_long_stream(res: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
    t = np.array(res["ms_per_chunk_all"])
    per_min = len(t) / res["minutes"]
    x = np.arange(len(t)) / per_min
    k = max(1, int(per_min // 12))
    med = np.array([np.median(t[i : i + k]) for i in range(0, len(t), k)])
    ax[0].plot(x[::k][: len(med)], med)
    ax[0].set(xlabel="minute", ylabel="ms per chunk (median of 5 s)", title="time per chunk")
    sm = np.array([s["minute"] for s in res["samples"]])
    ax[1].plot(sm, [s["rss_mb"] for s in res["samples"]], label="process RSS")
    ax[1].plot(sm, [s["cache_mb"] for s in res["samples"]], label="KV cache")
    ax[1].set(xlabel="minute", ylabel="MB", title="memory")
    ax[1].legend()
    pm = res["per_minute"]
    m = [p["minute"] for p in pm]
    ax[2].plot(m, [p["sharpness"] / res["real"]["sharpness"] for p in pm], label="sharpness / real")
    ax[2].plot(m, [p["hist_distance_to_real"] for p in pm], label="colour hist. distance to real")
    ax[2].set(xlabel="minute", title="drift")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
