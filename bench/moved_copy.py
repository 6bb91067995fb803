"""How much of the next frame is the last one moved? The copy against the best-moved copy, per action.

On held-out latent clips, each frame is compared (latent MSE) with the frame before it as it is and
moved by the global shift (dy, dx), on a grid of half-pixel steps up to ``PREV_SHIFT_MAX`` latent
pixels, that brings it closest (``model.omni.move_frames``, the move an ``OmniConfig.prev_shift``
model learns). Per action it prints both errors, the mean best shift and its spread: a spread small
against the mean says the move follows from the key, so a model can learn it. ``--model`` (a
``prev_shift`` teacher or student) adds the shift that model guesses for each frame from the real
history before it (one pass at noise level 1) and its own distance from the best one. Run it on
shift-consistent latents (``train autoencoder --shift-weight``), where a 1-2 px scroll is a sub-cell
latent move; on aliasing latents no move helps.

    .venv/bin/python bench/moved_copy.py --data pipeline/data/overworld --latents shift --batches 8 \
        [--model pipeline/exp/mc/teacher]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from worldstream.data.format import Dataset
from worldstream.data.latents import LatentClips, PromptBank
from worldstream.engine.generate import load_world_model
from worldstream.model.omni import PREV_SHIFT_MAX, move_frames, previous_frames


@torch.no_grad()
def guessed_shifts(model, clip, prompts: PromptBank) -> torch.Tensor:
    """The shift (B, K - 1, 2) a ``prev_shift`` model gives each frame after the first, every frame at
    noise level 1 over the real history before it: one teacher-forced pass per frame, as a stream."""
    out = []
    hook = model.prev_shift_out.register_forward_hook(lambda m, i, o: out.append(PREV_SHIFT_MAX * torch.tanh(o.float())))
    try:
        text, mask, pooled = prompts.batch(clip.captions)
        v, K = clip.video, clip.video.shape[1]
        for k in range(1, K):
            video = torch.cat([v[:, :k], torch.randn_like(v[:, k : k + 1])], 1)
            t = torch.zeros(v.shape[0], k + 1)
            t[:, -1] = 1.0
            audio = None
            if model.cfg.audio_channels:
                tpf = model.cfg.audio_tokens_per_frame
                audio = torch.cat([clip.audio[:, : k * tpf], torch.randn_like(clip.audio[:, k * tpf : (k + 1) * tpf])], 1)
            model(video=video, t_video=t, actions=clip.actions[:, : k + 1], audio=audio, t_audio=t, text=text,
                  text_mask=mask, text_pooled=pooled, prev=previous_frames(video, model.cfg.chunk_frames))
        return torch.stack([o[:, -1] for o in out], 1)
    finally:
        hook.remove()


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Latent MSE per frame (N, C, h, w) -> (N,), away from the border a move repeats."""
    return (a - b)[..., 1:-1, 1:-1].pow(2).mean((1, 2, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--latents", default="shift")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--model", help="a prev_shift teacher or student: also its guessed shift per action")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.manual_seed(0)
    names = Dataset(Path(a.data)).manifest["actions"]["names"]
    clips = LatentClips(a.data, a.latents, "heldout", a.frames, seed=1)
    model = None
    if a.model:
        model, _ = load_world_model(a.model)
        if not model.cfg.prev_shift:
            raise SystemExit(f"{a.model} does not move its previous frame (train it with --prev-frame --prev-shift)")
        model.eval()
        prompts = PromptBank()
    step = 1 / 16
    n = int(round(PREV_SHIFT_MAX / step))
    grid = torch.tensor([(i * step, j * step) for i in range(-n, n + 1) for j in range(-n, n + 1)])
    rows: dict[str, list] = {}
    with torch.no_grad():
        for _ in range(a.batches):
            c = clips.sample(a.batch)
            v = c.video.float()
            prev, nxt = v[:, :-1].reshape(-1, 1, *v.shape[2:]), v[:, 1:].reshape(-1, *v.shape[2:])
            act = c.actions[:, 1:].reshape(-1)  # the action that made each next frame
            errs = torch.stack([distance(move_frames(prev, s.expand(len(prev), 1, 2))[:, 0], nxt) for s in grid], 1)
            i = errs.argmin(1)
            copy = distance(prev[:, 0], nxt)
            guess = guessed = None
            if model is not None:
                guess = guessed_shifts(model, c, prompts).reshape(-1, 2)
                guessed = distance(move_frames(prev, guess[:, None])[:, 0], nxt)
            for k in range(len(act)):
                name = names[int(act[k])] if act[k] >= 0 else "none"
                row = (float(copy[k]), float(errs[k, i[k]]), *grid[i[k]].tolist())
                if guess is not None:
                    row += (*guess[k].tolist(), float(guessed[k]))
                rows.setdefault(name, []).append(row)
    out = {}
    head = f"{'action':<12} {'n':>5} {'copy MSE':>9} {'moved MSE':>10} {'best dy':>8} {'(sd)':>6} {'best dx':>8} {'(sd)':>6}"
    print(head + (f" {'model dy':>9} {'model dx':>9} {'its MSE':>8}" if model is not None else ""))
    for name, r in sorted(rows.items(), key=lambda kv: -len(kv[1])) + [("all", [x for r in rows.values() for x in r])]:
        t = torch.tensor(r)
        m, sd = t.mean(0), t.std(0) if len(t) > 1 else torch.zeros(t.shape[1])
        out[name] = {"n": len(r), "copy": m[0].item(), "moved": m[1].item(), "dy": m[2].item(), "dy_sd": sd[2].item(),
                     "dx": m[3].item(), "dx_sd": sd[3].item()}
        line = f"{name:<12} {len(r):>5} {m[0]:>9.4f} {m[1]:>10.4f} {m[2]:>8.3f} {sd[2]:>6.3f} {m[3]:>8.3f} {sd[3]:>6.3f}"
        if model is not None:
            out[name].update({"model_dy": m[4].item(), "model_dx": m[5].item(), "model_moved": m[6].item()})
            line += f" {m[4]:>9.3f} {m[5]:>9.3f} {m[6]:>8.4f}"
        print(line)
    if a.json:
        Path(a.json).write_text(json.dumps({"latents": a.latents, "model": a.model, "step": step, "rows": out}, indent=1))


if __name__ == "__main__":
    main()
