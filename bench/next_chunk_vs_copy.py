"""Can a world model copy? Its next-chunk prediction from clean real history against copying the last frame.

On held-out latent clips (``--history`` real chunks, then the one to predict) the model denoises the
next chunk from noise level t in one step (x0 = x_t - t v; at t = 1 that is its mean guess of the
next frame) and the error is compared, in the latent, with simply repeating the last frame. Split by
the action of the predicted frame: when the player stands (``idle``) the next frame is nearly the
last one, so a model that keeps a still world must come close to the copy there. A second set of
rows gives the history at noise 0.3 (what diffusion forcing mostly trains on) for comparison.

    .venv/bin/python bench/next_chunk_vs_copy.py --model pipeline/runs/teacher_view --data pipeline/data/overworld \\
        --latents pipeline --json docs/results/next_chunk_vs_copy.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from worldstream.data.latents import LatentClips, PromptBank
from worldstream.diffusion.flow import interpolate
from worldstream.device import autocast
from worldstream.engine.generate import load_world_model
from worldstream.model.omni import previous_frames


@torch.no_grad()
def measure(model, clips: LatentClips, prompts: PromptBank, batches: int, batch: int,
            levels=(1.0, 0.6, 0.3), history_levels=(0.0, 0.3)) -> dict:
    idle, copy, err = [], [], {}
    for _ in range(batches):
        c = clips.sample(batch)
        x0, K = c.video, c.video.shape[1]
        text, mask, pooled = prompts.batch(c.captions)
        idle.append(c.actions[:, -1] == 0)
        copy.append(((x0[:, -2] - x0[:, -1]) ** 2).mean((1, 2, 3)))
        prev = previous_frames(x0, model.cfg.chunk_frames) if model.cfg.prev_frame else None
        for th in history_levels:
            for t in levels:
                tv = torch.full((batch, K), th)
                tv[:, -1] = t
                xt = interpolate(x0, torch.randn_like(x0), tv[..., None, None, None])
                kw = {}
                if c.audio is not None:
                    ta = tv.repeat_interleave(c.audio.shape[1] // K, dim=1)[..., None]
                    kw = dict(audio=interpolate(c.audio, torch.randn_like(c.audio), ta), t_audio=tv)
                with autocast("cpu"):
                    v, _ = model(video=xt, t_video=tv, actions=c.actions, text=text, text_mask=mask,
                                 text_pooled=pooled, prev=prev, **kw)
                x0h = xt[:, -1] - t * v[:, -1].float()
                err.setdefault(f"history t={th}, next t={t}", []).append(((x0h - x0[:, -1]) ** 2).mean((1, 2, 3)))
    idle, copy = torch.cat(idle), torch.cat(copy)

    def split(e: torch.Tensor) -> dict:
        return {"all": e.mean().item(), "idle": e[idle].mean().item() if idle.any() else None,
                "moving": e[~idle].mean().item()}

    return {"clips": len(idle), "idle_clips": int(idle.sum()), "copy_last_frame": split(copy),
            **{k: split(torch.cat(v)) for k, v in err.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT, or a checkpoint folder")
    ap.add_argument("--data", required=True, help="dataset(s) with the model's latent cache")
    ap.add_argument("--latents", default="default", help="name of the latent cache")
    ap.add_argument("--history", type=int, default=8, help="real chunks before the predicted one")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json")
    a = ap.parse_args()
    prompts, res = PromptBank(), {}
    for spec in a.model:
        name, _, path = spec.rpartition("=")
        torch.manual_seed(0)  # the same clips and noise for every model
        clips = LatentClips(a.data, a.latents, "heldout", a.history + 1, seed=3)
        model, _ = load_world_model(path)
        res[name or path] = measure(model.eval(), clips, prompts, a.batches, a.batch)
    for name, r in res.items():
        print(f"\n{name}: {r['clips']} held-out clips, {r['idle_clips']} with the player standing; "
              "latent MSE of the next frame, all / standing / moving")
        for k, v in r.items():
            if isinstance(v, dict):
                print(f"| {k} | " + " | ".join("-" if x is None else f"{x:.4f}" for x in v.values()) + " |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
