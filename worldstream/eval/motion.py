"""Judges that read generated frames: global scroll (action following) and a condition classifier.

Scroll: the camera follows the player, so walking east scrolls the scene west. The shift that
best aligns two frames (integer search, the player's tile masked out) gives the direction. Rain
streaks and snowflakes move by themselves: frames are median-filtered first (`despeckle`) and the
alignment error is L1, not squared (squared error on raw frames let a storm outvote the ground).
Walks are judged frame to frame and summed (`walks.py`): across 4 frames a tile-periodic texture
(8 px) moving 6 px reads as -2 px. Agreement with the game's own walks: 100% of 528 spans
(docs/log.md, 2026-11-30).
Condition classifier: an MLP over global frame statistics, trained on balanced frames rendered
by the world itself, tells weather and time of day; it judges whether a prompt such as "it
begins to snow" shows in generated frames.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..worlds.overworld.conditions import TIMES, WEATHERS

DIRS = {"n": (0, -1), "ne": (1, -1), "e": (1, 0), "se": (1, 1), "s": (0, 1), "sw": (-1, 1), "w": (-1, 0), "nw": (-1, -1)}


def scroll(a: np.ndarray, b: np.ndarray, max_shift: int = 6, mask_center: int = 12) -> tuple[int, int]:
    """(dx, dy) in pixels such that b[y, x] ~ a[y + dy, x + dx]: how far the view moved (player motion)."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    H, W = a.shape[:2]
    m = max_shift
    best, arg = None, (0, 0)
    keep = np.ones((H - 2 * m, W - 2 * m), bool)
    mask_center = min(mask_center, (min(H, W) - 2 * m) // 4)  # small frames keep most of the view
    cy, cx = H // 2 - m, W // 2 - m
    keep[max(cy - mask_center, 0) : cy + mask_center, max(cx - mask_center, 0) : cx + mask_center] = False
    bb = b[m : H - m, m : W - m]
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            aa = a[m + dy : H - m + dy, m + dx : W - m + dx]
            err = np.abs(aa - bb).sum(axis=2)[keep].mean()
            if best is None or err < best:
                best, arg = err, (dx, dy)
    return arg


def despeckle(frame: np.ndarray) -> np.ndarray:
    """3x3 median filter per channel: removes rain streaks and snowflakes, keeps ground edges."""
    x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)).permute(2, 0, 1)[None]
    H, W = frame.shape[:2]
    x = F.unfold(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3).view(3, 9, H * W).median(1).values
    return x.view(3, H, W).permute(1, 2, 0).numpy()


def follows(dx: int, dy: int, direction: str) -> bool:
    """Did the view move the way the action says (any positive component along it, none against)?"""
    ux, uy = DIRS[direction]
    along = dx * ux + dy * uy
    return along > 0 and (ux != 0 or dx == 0 or abs(dx) <= abs(dy)) and (uy != 0 or dy == 0 or abs(dy) <= abs(dx))


def frame_features(x: torch.Tensor) -> torch.Tensor:
    """Global statistics of frames (B, 3, H, W) in [0, 1] that weather and light change: colour
    moments, luminance percentiles, fine-detail energy (rain streaks, snowflakes; fog removes
    it), bright-pixel share, and a 4x4x4 colour histogram. Size-independent."""
    lum = x.mean(1, keepdim=True)
    hf = (lum - F.avg_pool2d(lum, 3, 1, 1, count_include_pad=False)).abs()
    q = (x.clamp(0, 0.999) * 4).long()
    idx = (q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2]).flatten(1)
    hist = torch.zeros(x.shape[0], 64).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float32)) / idx.shape[1]
    gx = (lum[..., 1:] - lum[..., :-1]).abs().mean((1, 2, 3))
    gy = (lum[..., 1:, :] - lum[..., :-1, :]).abs().mean((1, 2, 3))
    pct = torch.quantile(lum.flatten(1), torch.tensor([0.05, 0.5, 0.95]), dim=1).T
    d = lum - F.avg_pool2d(lum, 3, 1, 1, count_include_pad=False)  # isolated bright specks (snowflakes, rain drops)
    specks = torch.stack([(d > th).float().mean((1, 2, 3)) for th in (0.05, 0.1, 0.2)], 1)
    dd = (lum[..., 1:, 1:] - lum[..., :-1, :-1]).abs().mean((1, 2, 3))  # diagonal detail (slanted rain)
    da = (lum[..., 1:, :-1] - lum[..., :-1, 1:]).abs().mean((1, 2, 3))
    return torch.cat([x.mean((2, 3)), x.std((2, 3)), pct, hf.mean((1, 2, 3))[:, None], (hf > 0.1).float().mean((1, 2, 3))[:, None],
                      (lum > 0.85).float().mean((1, 2, 3))[:, None], gx[:, None], gy[:, None], specks, dd[:, None],
                      da[:, None], hist], dim=1)


class ConditionNet(nn.Module):
    """Frame features -> weather logits (5) and time-of-day logits (4); normalisation included."""

    def __init__(self, n_features: int = 83):
        super().__init__()
        self.register_buffer("mu", torch.zeros(n_features))
        self.register_buffer("sd", torch.ones(n_features))
        self.mlp = nn.Sequential(nn.Linear(n_features, 128), nn.SiLU(), nn.Linear(128, len(WEATHERS) + len(TIMES)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp((frame_features(x) - self.mu) / self.sd)
        return out[:, : len(WEATHERS)], out[:, len(WEATHERS) :]


def _real_frames(dataset, split: str, per_episode: int, seed: int):
    """Frames of a split whose conditions are fully blended in, with their weather/time labels."""
    rng = np.random.default_rng(seed)
    xs, ws, ts = [], [], []
    for ep in dataset.split(split):
        recs = ep.records()
        ok = [i for i, r in enumerate(recs) if max(r["state"]["blend"]["weather"]) > 0.99 and max(r["state"]["blend"]["time"]) > 0.99]
        if not ok:
            continue
        frames = ep.frames()
        for i in rng.choice(ok, size=min(per_episode, len(ok)), replace=False):
            xs.append(np.array(frames[i]))
            ws.append(WEATHERS.index(recs[i]["state"]["weather"]))
            ts.append(TIMES.index(recs[i]["state"]["time"]))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
    return x, torch.tensor(ws), torch.tensor(ts)


def _rendered_frames(dataset, n: int, seed: int):
    """Balanced labelled frames rendered by the dataset's own world (``view_at``): places the
    training episodes visited, every weather x time x season, random moments and headings.
    Balanced renders remove the confound of small datasets (a weather seen in few places).
    (Blurring half of them, for decoded frames, cost 4 points of held-out accuracy: not kept.)"""
    from ..config import from_dict
    from ..worlds.overworld.conditions import SEASONS, Conditions
    from ..worlds.overworld.world import Overworld, OverworldConfig

    world = Overworld(from_dict(OverworldConfig, dataset.manifest["record_config"]["world"]))
    rng = np.random.default_rng(seed)
    places = []
    for ep in dataset.split("train"):
        recs = ep.records()
        places += [(recs[i]["state"]["x"], recs[i]["state"]["y"]) for i in rng.choice(len(recs), 20)]
    xs, ws, ts = [], [], []
    for k in range(n):
        px, py = places[rng.integers(len(places))]
        c = Conditions(WEATHERS[k % len(WEATHERS)], TIMES[(k // len(WEATHERS)) % len(TIMES)], SEASONS[rng.integers(len(SEASONS))])
        xs.append(world.view_at(px, py, float(rng.uniform(0, 600)), c, heading=int(rng.integers(8))))
        ws.append(WEATHERS.index(c.weather))
        ts.append(TIMES.index(c.time))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
    return x, torch.tensor(ws), torch.tensor(ts)


def train_condition_net(dataset, steps: int = 2000, seed: int = 0, renders: int = 3000) -> tuple[ConditionNet, dict[str, float]]:
    """Train on balanced rendered frames of the dataset's world; report accuracy on the real
    held-out frames (fully blended conditions). Needs an `overworld` dataset."""
    if "world" not in dataset.manifest.get("record_config", {}):
        raise ValueError(f"{dataset.path}: the condition judge needs an overworld dataset (it renders its world)")
    torch.manual_seed(seed)
    x, w, t = _rendered_frames(dataset, renders, seed)
    xh, wh, th = _real_frames(dataset, "heldout", 60, seed + 1)
    net = ConditionNet()
    f = frame_features(x)
    net.mu.copy_(f.mean(0))
    net.sd.copy_(f.std(0) + 1e-6)
    opt = torch.optim.AdamW(net.mlp.parameters(), 3e-3, weight_decay=1e-2)
    with torch.enable_grad():  # callers may be inside no_grad (evaluation code)
        fn = (f - net.mu) / net.sd
        for _ in range(steps):
            out = net.mlp(fn)
            loss = F.cross_entropy(out[:, : len(WEATHERS)], w) + F.cross_entropy(out[:, len(WEATHERS) :], t)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        lw, lt = net(xh)
    return net, {"weather_acc": (lw.argmax(1) == wh).float().mean().item(),
                 "time_acc": (lt.argmax(1) == th).float().mean().item(), "heldout_frames": len(xh)}
