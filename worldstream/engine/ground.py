"""The ground a stream has shown, for a model that predicts each frame around its last one moved by a
whole number of pixels (``OmniConfig.move_reach``).

Such a move keeps every grain of the ground the view already showed, but it uncovers a strip at one
edge that the last frame never showed. A regressor cannot draw new ground there: its squared-error
optimum is the border's colour, and the repeated border becomes stripes that take over a walk
(log.md, forty-third session). So the strip is not asked of the network:

* what the view showed there before comes back (``Ground``): whole-pixel moves add up exactly, so
  the sum of a stream's moves says where each frame stands in world pixels, and a canvas kept in
  those pixels holds every frame the stream made. Walking back shows the same places;
* the rest is drawn (``draw_uncovered``): copied from the place in the last frame whose neighbouring
  ground matches the ground beside the strip (Efros & Leung 1999, texture synthesis by
  non-parametric sampling), a block of rows at a time (image quilting, Efros & Freeman 2001), going
  on copying from where the last frame's strip came from while that still matches (Ashikhmin 2001's
  coherence), so the strip reads as ground and not as lines.

Measured in the pixel probe (``bench/pixel_vs_latent.py``, forty-fourth session): stripes on 26.6%
of a 192-frame walk's pixels with the repeated border, none with the drawn strip; out and back over
48 + 48 frames, the frame back at the start is 30.6 dB from the walk's own first frame with the
ground remembered, 19.8 dB with the border.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def uncovered(moves: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h, w) True where moving a frame by ``moves`` (B, 2) whole pixels (``model.omni.move_frames``)
    leaves only its repeated border: the strip of new ground that scrolls in."""
    dy, dx = moves[:, 0, None].long().cpu(), moves[:, 1, None].long().cpu()
    i, j = torch.arange(h)[None], torch.arange(w)[None]
    rows = (i < dy) | (i >= h + dy)
    cols = (j < dx) | (j >= w + dx)
    return rows[:, :, None] | cols[:, None, :]


def _draw_right(x: torch.Tensor, src: torch.Tensor, s: int, gen: torch.Generator, context: int, rows: int,
                overlap: int, tol: float, gap: int, keep_out: int,
                last: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (C, h, w) with its last ``s`` columns drawn anew, ``rows`` at a time, top to bottom: each block
    is what lies right of the place in ``src`` whose neighbourhood best matches the block's (the ``context``
    columns left of it and the ``overlap`` rows of the strip already drawn above it), drawn at random among
    the places within ``tol`` of the best. ``last`` (h, 2): where each row of this side's strip was copied
    from in the last frame, as an offset; a block goes on copying from there when that place matches too.
    Returns x and the offsets used.

    The squared distance of every place is |window|^2 - 2 window . kernel + |kernel|^2. The context part of
    every block is known before any block is drawn, so it is one correlation with a kernel per block; only the
    few pixels of the strip drawn above a block (overlap x s) wait for it: a second, small correlation then."""
    x = x.clone()
    C, h, w = x.shape
    k = context + s
    ncols = max(1, w - k + 1 - gap)
    offsets = torch.zeros(h, 2, dtype=torch.long) if last is None else last.clone()
    src_sq = src.square().sum(0)[None, None]
    spans = [(r, max(0, r - overlap), min(h, r + rows)) for r in range(0, h, rows)]  # (block, window top, end)
    ssd_ctx = {}  # block -> the context part of its distances at every place (h - n + 1, ncols)
    for n in sorted({end - top for _, top, end in spans}):
        group = [(r, top, end) for r, top, end in spans if end - top == n]
        kern = torch.stack([x[:, top:end, w - k : w - k + context] for _, top, end in group])  # (G, C, n, context)
        corr = F.conv2d(src[None], kern)[0, :, :, :ncols]
        box = F.conv2d(src_sq, torch.ones(1, 1, n, context))[0, 0, :, :ncols]
        for g, (r, _, _) in enumerate(group):
            ssd_ctx[r] = box - 2 * corr[g] + kern[g].square().sum()
    box_ov = {}  # overlap rows -> |window|^2 of every (ov x s) window of src
    for r, top, end in spans:
        n, ov = end - top, r - top
        ssd = ssd_ctx[r]
        if ov:  # the strip drawn above this block: |window|^2 - 2 window . kernel + |kernel|^2 again, one correlation
            if ov not in box_ov:
                box_ov[ov] = F.conv2d(src_sq, torch.ones(1, 1, ov, s))[0, 0]
            kern = x[None, :, top:r, w - s :]
            corr = F.conv2d(src[None], kern)[0, 0]
            part = box_ov[ov] - 2 * corr + kern.square().sum()
            ssd = ssd + part[: h - n + 1, context : context + ncols].clamp_min(0)
        # every window lies inside src with its continuation, so never at the context's own place (beyond the
        # edge); nor within ``gap`` px of it, where a match is the border shifted by a pixel or two: in ground
        # that is flat along the strip's direction it would copy the border again and grow the streak it avoids
        if keep_out:  # nor from the centre, where the camera keeps the player: a copied sprite would stay as ground
            ys, xs = (h - keep_out) // 2 - n + 1, (w - keep_out) // 2 - k + 1  # windows that overlap it
            ssd[max(0, ys) : (h + keep_out) // 2, max(0, xs) : (w + keep_out) // 2] = float("inf")
        good = ssd.min() * (1 + tol) + 1e-3 * (n * context + ov * s) * C
        y = c = None
        if last is not None:  # the window that continues last frame's copy
            oy, ox = last[r].tolist()
            y, c = top + oy, w - s + ox - context
            if not (0 <= y < ssd.shape[0] and 0 <= c < ssd.shape[1] and ssd[y, c] <= good):
                y = c = None
        if y is None:
            ok = (ssd <= good).flatten().nonzero()[:, 0]
            y, c = divmod(int(ok[torch.randint(len(ok), (1,), generator=gen)]), ssd.shape[1])
        x[:, r:end, w - s :] = src[:, y + r - top : y + n, c + context : c + k]
        offsets[r:end] = torch.tensor([y - top, c + context - (w - s)])
    return x, offsets


@torch.autocast("cpu", enabled=False)  # the distances in fp32 whatever autocast says: bf16 cancels them to noise
def draw_uncovered(moved: torch.Tensor, src: torch.Tensor, move: torch.Tensor, gen: torch.Generator,
                   context: int = 6, rows: int = 8, overlap: int = 4, tol: float = 0.1, gap: int = 4,
                   keep_out: int = 16, coherence: dict | None = None) -> torch.Tensor:
    """``moved`` (C, h, w), ``src`` moved by whole pixels ``move`` (dy, dx) with its border repeated, with
    the strip the move uncovers drawn as ground copied from ``src`` where its neighbourhood matches
    (``_draw_right``): columns first, then rows across the full width (the corner gets both). ``keep_out``:
    the side of the square at the frame's centre never copied from (the player; 0: none); ``coherence``: a
    stream's own dict, where each side's copy offsets are kept from frame to frame. On the CPU, in fp32. A frame
    too small to hold the match and its continuation keeps the repeated border."""
    dy, dx = int(move[0]), int(move[1])
    x, src, memo = moved.float().cpu(), src.float().cpu(), {} if coherence is None else coherence

    def side(x, f, g, key, s):
        if f(x).shape[-1] < context + s + gap + 1:  # too small a frame to match anything: the border stays
            return x
        out, memo[key] = _draw_right(f(x), f(src), s, gen, context, rows, overlap, tol, gap, keep_out, memo.get(key))
        return g(out)

    if dx:  # out[:, j] = src[:, j - dx]: dx < 0 uncovers the right columns, dx > 0 the left (flipped)
        f = (lambda t: t.flip(-1)) if dx > 0 else (lambda t: t)
        x = side(x, f, f, ("x", dx > 0), abs(dx))
    if dy:  # the same for rows, transposed
        f = (lambda t: t.transpose(-1, -2).flip(-1)) if dy > 0 else (lambda t: t.transpose(-1, -2))
        g = (lambda t: t.flip(-1).transpose(-1, -2)) if dy > 0 else (lambda t: t.transpose(-1, -2))
        x = side(x, f, g, ("y", dy > 0), abs(dy))
    return x.to(moved)


class Ground:
    """The ground a batch of ``streams`` has shown, each in its own canvas of world pixels, and the strip
    each new frame's move uncovers filled from it (``fill``).

    The frame's move is settled by the first pass that makes it (a sampler's later steps and the other
    guidance branches reuse that pass's filled frame), so a frame has one move and one place. The canvas
    holds ``size`` x ``size`` pixels (default 8 frames across) and is re-centred when the view nears its
    edge, dropping what lies farthest: memory stays flat however long the stream walks. ``remember=False``:
    the strip is always drawn. ``forget`` clears streams whose picture was replaced (a given image) or whose
    world changed look (a new prompt: remembered ground would bring back the old weather).
    """

    def __init__(self, streams: int, seed: int | list[int] = 0, size: int | None = None, remember: bool = True,
                 **draw_kw):
        self.streams, self.size, self.remember, self.draw_kw = streams, size, remember, draw_kw
        seeds = [seed + b for b in range(streams)] if isinstance(seed, int) else list(seed)
        if len(seeds) != streams:
            raise ValueError(f"Ground: {len(seeds)} seeds for {streams} streams")
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.coherence: list[dict] = [{} for _ in range(streams)]  # each stream's copy offsets (``draw_uncovered``)
        self.pix: torch.Tensor | None = None  # (S, C, size, size), made at the first frame
        self.seen: torch.Tensor | None = None  # (S, size, size) where the canvas holds ground
        self.pos: torch.Tensor | None = None  # (S, 2) the view's top-left in the canvas
        self.made = -1  # the newest frame whose move is settled
        self.filled: torch.Tensor | None = None  # (S, C, h, w) that frame's previous frame, moved and filled
        self.recalled = [0, 0]  # uncovered pixels taken from memory, all uncovered pixels

    def forget(self, rows: torch.Tensor | None = None) -> None:
        """Drop the remembered ground of the streams ``rows`` (S,) bool picks (all: None)."""
        if self.seen is None:
            return
        rows = torch.ones(self.streams, dtype=torch.bool) if rows is None else rows.cpu()
        self.seen[rows] = False
        for b in rows.nonzero()[:, 0].tolist():
            self.coherence[b] = {}

    def _start(self, C: int, h: int, w: int) -> None:
        size = self.size or 8 * max(h, w)
        if size < 2 * max(h, w):
            raise ValueError(f"Ground: a {size}-px canvas is too small for {h} x {w} frames; give at least {2 * max(h, w)}")
        self.size = size
        self.pix = torch.zeros(self.streams, C, size, size)
        self.seen = torch.zeros(self.streams, size, size, dtype=torch.bool)
        self.pos = torch.tensor([[(size - h) // 2, (size - w) // 2]] * self.streams)

    def _recentre(self, b: int, y: int, x: int, h: int, w: int) -> tuple[int, int]:
        """Move stream ``b``'s canvas content so that a view at (y, x) sits at its centre; returns the new place."""
        ny, nx = (self.size - h) // 2, (self.size - w) // 2
        sy, sx = ny - y, nx - x  # content moves by (sy, sx)
        pix = torch.zeros_like(self.pix[b])
        seen = torch.zeros_like(self.seen[b])
        src = (slice(max(0, -sy), self.size - max(0, sy)), slice(max(0, -sx), self.size - max(0, sx)))
        dst = (slice(max(0, sy), self.size - max(0, -sy)), slice(max(0, sx), self.size - max(0, -sx)))
        pix[:, dst[0], dst[1]] = self.pix[b][:, src[0], src[1]]
        seen[dst[0], dst[1]] = self.seen[b][src[0], src[1]]
        self.pix[b], self.seen[b] = pix, seen
        return ny, nx

    @torch.no_grad()
    def fill(self, frame: int, prev: torch.Tensor, move: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        """``moved`` (R, C, h, w), the previous frames ``prev`` (R, C, h, w) moved by whole pixels ``move``
        (R, 2) with the border repeated, with the strip the move uncovers filled: ground remembered there,
        else drawn. ``frame``: the index of the frame being made; R rows are the streams, or several
        copies of them one after the other (stacked guidance branches, the most conditioned last: its
        rows settle the frame). A frame already settled returns
        its filled previous frame as it was settled; one before it (a pass that commits a finished frame)
        is returned as given."""
        R, C, h, w = prev.shape
        S = self.streams
        if R % S:
            raise ValueError(f"Ground: {R} rows are not copies of its {S} streams")
        if frame < self.made:
            return moved
        if frame > self.made:
            if self.pix is None:
                self._start(C, h, w)
            filled = moved[R - S :].float().cpu().clone()
            p, m = prev[R - S :].float().cpu(), move[R - S :].round().long().cpu()
            for b in range(S):
                y, x = self.pos[b].tolist()
                self.pix[b, :, y : y + h, x : x + w] = p[b]
                self.seen[b, y : y + h, x : x + w] = True
                y, x = y - int(m[b, 0]), x - int(m[b, 1])  # the content moves by m: the view by -m
                if not (0 <= y <= self.size - h and 0 <= x <= self.size - w):
                    y, x = self._recentre(b, y + int(m[b, 0]), x + int(m[b, 1]), h, w)
                    y, x = y - int(m[b, 0]), x - int(m[b, 1])
                self.pos[b] = torch.tensor([y, x])
                strip = uncovered(m[b][None], h, w)[0]
                if not strip.any():
                    continue
                known = self.seen[b, y : y + h, x : x + w] & strip if self.remember else None
                if known is None or not bool(known.sum() == strip.sum()):  # (a strip all remembered is not drawn)
                    filled[b] = draw_uncovered(filled[b], p[b], m[b], self.gens[b], coherence=self.coherence[b],
                                               **self.draw_kw)
                if known is not None:
                    filled[b] = torch.where(known, self.pix[b, :, y : y + h, x : x + w], filled[b])
                    self.recalled[0] += int(known.sum())
                self.recalled[1] += int(strip.sum())
            self.made, self.filled = frame, filled
        return self.filled.to(moved).repeat(R // S, 1, 1, 1)


def ground_for(model, streams: int, seed: int | list[int] = 0) -> Ground | None:
    """A new ``Ground`` for ``streams`` rows when ``model`` moves its previous frame by whole pixels
    (``OmniConfig.move_reach``), else None (nothing to fill)."""
    return Ground(streams, seed=seed) if model.cfg.move_reach else None


class Together:
    """Several single-stream grounds stepped as one batch (``engine.batch.step_together``): row r of a pass
    is stream r (or a stacked copy of it); ``offsets[r]`` is added to the pass's frame index, since streams
    stacked together started at different times."""

    def __init__(self, grounds: list[Ground], offsets: list[int]):
        self.grounds, self.offsets = grounds, offsets

    def forget(self, rows: torch.Tensor | None = None) -> None:
        for r, g in enumerate(self.grounds):
            if rows is None or bool(rows[r]):
                g.forget()

    def fill(self, frame: int, prev: torch.Tensor, move: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        S = len(self.grounds)
        if prev.shape[0] % S:
            raise ValueError(f"Ground: {prev.shape[0]} rows are not copies of its {S} streams")
        idx = torch.arange(prev.shape[0])  # (each stream's rows in order, the most conditioned last)
        out = moved.clone()
        for r, (g, off) in enumerate(zip(self.grounds, self.offsets)):
            rows = idx[idx % S == r]
            out[rows] = g.fill(frame + off, prev[rows], move[rows], moved[rows])
        return out
