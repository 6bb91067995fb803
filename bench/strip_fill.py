"""How well fixed rules fill the strip of new ground a whole-pixel move uncovers.

A model that predicts around its last frame moved by whole pixels (``pixel_vs_latent.py --kinds moved``)
must draw the strip the move leaves uncovered. This measures, on the recorded frame pairs of held-out
walks and the move that best explains each pair, the strip's PSNR (colours in [0, 1], pooled squared
error) for the repeated border (``move_frames``) and for a tile-periodic continuation: the strip copied
from the frame's own content P pixels further in (the overworld is drawn from 8-px tiles).

    .venv/bin/python bench/strip_fill.py --data pipeline/data/overworld
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from pixel_vs_latent import best_move, move_grid, uncovered  # noqa: E402
from rollout_vs_still import starts  # noqa: E402

from worldstream.data.format import Dataset  # noqa: E402
from worldstream.model.omni import move_frames  # noqa: E402


def periodic(frame: torch.Tensor, move: torch.Tensor, period: int) -> torch.Tensor:
    """``frame`` (C, h, w) moved by whole pixels ``move`` (dy, dx); what falls outside is read ``period``
    pixels (as many times as needed) further inside the frame."""
    def index(n: int, d: int) -> torch.Tensor:
        i = torch.arange(n) - d
        i = torch.where(i < 0, i + period * ((-i + period - 1) // period), i)
        return torch.where(i >= n, i - period * ((i - n) // period + 1), i)

    h, w = frame.shape[-2:]
    return frame[:, index(h, int(move[0]))][:, :, index(w, int(move[1]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--starts", type=int, default=12)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--reach", type=int, default=3)
    ap.add_argument("--periods", default="8,16,24,32,48,64")
    a = ap.parse_args()
    moves = move_grid(a.reach)
    fills = ["border"] + [int(p) for p in a.periods.split(",")]
    err = {f: [0.0, 0] for f in fills}
    for real, _, _, _ in starts(Dataset(a.data), a.starts, a.frames, seed=0):
        x = torch.from_numpy(np.asarray(real)).float().permute(0, 3, 1, 2) / 255
        best = best_move(x[:-1], x[1:], moves, a.reach)
        for f in range(len(x) - 1):
            m = moves[best[f]]
            if (m == 0).all():
                continue
            strip = uncovered(m[None], *x.shape[-2:])[0]
            for fill in fills:
                y = move_frames(x[f][None, None], m[None, None])[0, 0] if fill == "border" else periodic(x[f], m, fill)
                e = (y - x[f + 1])[:, strip].square()
                err[fill][0] += e.sum().item()
                err[fill][1] += e.numel()
    print("| fill | strip PSNR (dB) |\n|---|---|")
    for fill, (e, n) in err.items():
        name = "repeated border" if fill == "border" else f"copied from {fill} px in"
        print(f"| {name} | {10 * np.log10(n / e):.2f} |")


if __name__ == "__main__":
    main()
