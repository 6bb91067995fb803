"""How well fixed rules fill the strip of new ground a whole-pixel move uncovers.

A model that predicts around its last frame moved by whole pixels (``pixel_vs_latent.py --kinds moved``)
must draw the strip the move leaves uncovered. This measures, on the recorded frame pairs of held-out
walks and the move that best explains each pair, the strip's PSNR (colours in [0, 1], pooled squared
error) for the repeated border (``move_frames``) and for a tile-periodic continuation: the strip copied
from the frame's own content P pixels further in (the overworld is drawn from 8-px tiles).

``--walk N`` also walks each start N frames with no network: the walk's own last frame moved by the
recording's best move, the uncovered strip left as the border, drawn, or taken from the ground the walk
showed there before where it did (``Ground``) and drawn elsewhere; PSNR against the recording and
sharpness at the bench's frames, and a contact sheet (recorded / border / drawn rows). What the strip's
fill alone does to a walk, the head and the network taken out.

    .venv/bin/python bench/strip_fill.py --data pipeline/data/overworld [--walk 192 --sheet strip_walk.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rollout_vs_still import AT, psnr, sheet_frames, starts  # noqa: E402

from worldstream.data.format import Dataset  # noqa: E402
from worldstream.data.png import grid, save_png  # noqa: E402
from worldstream.engine.ground import Ground, draw_uncovered, uncovered  # noqa: E402
from worldstream.engine.stream import to_frames  # noqa: E402
from worldstream.eval.stream import sharpness, streaks  # noqa: E402
from worldstream.model.omni import best_move, move_frames, move_grid  # noqa: E402


def periodic(frame: torch.Tensor, move: torch.Tensor, period: int) -> torch.Tensor:
    """``frame`` (C, h, w) moved by whole pixels ``move`` (dy, dx); what falls outside is read ``period``
    pixels (as many times as needed) further inside the frame."""
    def index(n: int, d: int) -> torch.Tensor:
        i = torch.arange(n) - d
        i = torch.where(i < 0, i + period * ((-i + period - 1) // period), i)
        return torch.where(i >= n, i - period * ((i - n) // period + 1), i)

    h, w = frame.shape[-2:]
    return frame[:, index(h, int(move[0]))][:, :, index(w, int(move[1]))]


def unit(frames: np.ndarray) -> torch.Tensor:
    """Recorded frames (F, H, W, 3) uint8 -> (F, 3, H, W) colours in [0, 1]."""
    return torch.from_numpy(np.asarray(frames)).float().permute(0, 3, 1, 2) / 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--starts", type=int, default=12)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--reach", type=int, default=3)
    ap.add_argument("--periods", default="8,16,24,32,48,64")
    ap.add_argument("--context", type=int, default=6, help="drawn: columns of known ground matched beside the strip")
    ap.add_argument("--rows", type=int, default=8, help="drawn: rows drawn at a time")
    ap.add_argument("--tol", type=float, default=0.1, help="drawn: draw among places within this of the best match")
    ap.add_argument("--walk", type=int, default=0, help="also walk N frames on the recording's best moves")
    ap.add_argument("--fills", default="border,drawn,remembered", help="--walk: the fills to walk")
    ap.add_argument("--sheet", default=None, help="--walk: write the contact sheet here (PNG)")
    a = ap.parse_args()
    if not set(a.fills.split(",")) <= {"border", "drawn", "remembered"}:
        raise SystemExit(f"--fills: {a.fills!r}; each must be border, drawn or remembered")
    if a.walk:
        return oracle_walks(a)
    moves = move_grid(a.reach)
    fills = ["border", "drawn"] + [int(p) for p in a.periods.split(",")]
    gen = torch.Generator().manual_seed(0)
    err = {f: [0.0, 0] for f in fills}
    for real, _, _, _ in starts(Dataset(a.data), a.starts, a.frames, seed=0):
        x = unit(real)
        best = best_move(x[:-1], x[1:], a.reach)
        for f in range(len(x) - 1):
            m = moves[best[f]]
            if (m == 0).all():
                continue
            strip = uncovered(m[None], *x.shape[-2:])[0]
            moved = move_frames(x[f][None, None], m[None, None])[0, 0]
            for fill in fills:
                if fill == "border":
                    y = moved
                elif fill == "drawn":
                    y = draw_uncovered(moved, x[f], m, gen, a.context, a.rows, tol=a.tol)
                else:
                    y = periodic(x[f], m, fill)
                e = (y - x[f + 1])[:, strip].square()
                err[fill][0] += e.sum().item()
                err[fill][1] += e.numel()
    print("| fill | strip PSNR (dB) |\n|---|---|")
    for fill, (e, n) in err.items():
        name = {"border": "repeated border", "drawn": "drawn where the neighbourhood matches"}.get(fill, f"copied from {fill} px in")
        print(f"| {name} | {10 * np.log10(n / e):.2f} |")


@torch.no_grad()
def oracle_walks(a) -> None:
    moves = move_grid(a.reach)
    at = [f for f in AT if f <= a.walk]
    res = {fill: {"psnr": [], "sharp": [], "streaks": []} for fill in a.fills.split(",")}
    rows, tests = [], starts(Dataset(a.data), a.starts, a.walk, seed=0)
    for i, (real, _, _, _) in enumerate(tests):
        x = unit(real)
        best = moves[best_move(x[:-1], x[1:], a.reach)]
        shown = [[real[f] for f in sheet_frames(a.walk)]]
        for fill in res:  # drawn: always drawn; remembered: the walk's memory first, drawn where it has none
            own = [x[0]]
            ground = None if fill == "border" else Ground(1, seed=i, remember=fill == "remembered", context=a.context,
                                                          rows=a.rows, tol=a.tol)
            for f in range(a.walk):
                y = move_frames(own[-1][None, None], best[f][None, None])[0, 0]
                own.append(y if ground is None else ground.fill(f + 1, own[-1][None], best[f][None], y[None])[0])
            got = to_frames(torch.stack(own)[None])[0]
            res[fill]["psnr"].append([psnr(got[f], real[f]) for f in at])
            res[fill]["sharp"].append([sharpness(got[f][None]) for f in at])
            res[fill]["streaks"].append([streaks(got[f][None]) for f in at])
            shown.append([got[f] for f in sheet_frames(a.walk)])
        if i < 2:
            rows += sum(shown, [])
    print(f"| fill | PSNR (dB) at frames {' / '.join(map(str, at))} | sharpness | streaks |\n|---|---|---|---|")
    for fill, r in res.items():
        print(f"| {fill} | " + " / ".join(f"{v:.1f}" for v in np.mean(r["psnr"], 0)) + " | "
              + " / ".join(f"{v:.3f}" for v in np.mean(r["sharp"], 0)) + " | "
              + " / ".join(f"{v:.1%}" for v in np.mean(r["streaks"], 0)) + " |")
    first = np.stack([t[0][0] for t in tests])
    print(f"real sharpness {sharpness(first):.3f}, streaks {streaks(first):.1%}")
    if a.sheet:
        save_png(a.sheet, grid(rows, cols=len(sheet_frames(a.walk))))


if __name__ == "__main__":
    main()
