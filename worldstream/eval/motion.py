"""Judges that read generated frames: global scroll (action following) and a condition classifier.

Scroll: the camera follows the player, so walking east scrolls the scene west. The shift that
best aligns two frames (integer search, the player's tile masked out) gives the direction.
Condition classifier: a small CNN trained on real frames to tell weather and time of day; it
judges whether a prompt such as "it begins to snow" shows in generated frames.
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
            err = ((aa - bb) ** 2).mean(axis=2)[keep].mean()
            if best is None or err < best:
                best, arg = err, (dx, dy)
    return arg


def follows(dx: int, dy: int, direction: str) -> bool:
    """Did the view move the way the action says (any positive component along it, none against)?"""
    ux, uy = DIRS[direction]
    along = dx * ux + dy * uy
    return along > 0 and (ux != 0 or dx == 0 or abs(dx) <= abs(dy)) and (uy != 0 or dy == 0 or abs(dy) <= abs(dx))


class ConditionNet(nn.Module):
    """Tiny CNN: a 64x64 frame -> weather logits (5) and time-of-day logits (4)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.SiLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.SiLU(),
                                  nn.Conv2d(32, 64, 3, 2, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.weather = nn.Linear(64, len(WEATHERS))
        self.time = nn.Linear(64, len(TIMES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(F.interpolate(x, size=(64, 64), mode="area"))
        return self.weather(h), self.time(h)


def _frames_and_labels(dataset, split: str, per_episode: int, seed: int):
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


def train_condition_net(dataset, steps: int = 400, seed: int = 0) -> tuple[ConditionNet, dict[str, float]]:
    """Train on real training frames (fully blended conditions); report held-out accuracy."""
    torch.manual_seed(seed)
    x, w, t = _frames_and_labels(dataset, "train", 60, seed)
    xh, wh, th = _frames_and_labels(dataset, "heldout", 60, seed + 1)
    net = ConditionNet()
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    g = torch.Generator().manual_seed(seed)
    with torch.enable_grad():  # callers may be inside no_grad (evaluation code)
        _fit(net, opt, x, w, t, steps, g)
    net.eval()
    with torch.no_grad():
        lw, lt = net(xh)
    return net, {"weather_acc": (lw.argmax(1) == wh).float().mean().item(),
                 "time_acc": (lt.argmax(1) == th).float().mean().item(), "heldout_frames": len(xh)}


def _fit(net, opt, x, w, t, steps: int, g: torch.Generator) -> None:
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=g)
        lw, lt = net(x[idx])
        loss = F.cross_entropy(lw, w[idx]) + F.cross_entropy(lt, t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
