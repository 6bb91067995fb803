"""The still runs as training sees them: a model's own free run of 4 still scenes, each frame made by the
training pass (``teacher_loss(return_x0=True)``: the last 4 own frames as history, the clip's sound given, the
move forced to the one that best explains the scene) exactly as ``--still-rows`` advances its slots.
PSNR against the scene (0-255 pixels) at a few depths; compare with ``bench/rollout_vs_still.py --hold``,
the stream itself (the head names the move, 8 pooled frames of memory, sound generated, held-out starts).

    .venv/bin/python docs/results/pixel48/train_view.py pipeline/runs/pixel45 [heldout]
    .venv/bin/python docs/results/pixel48/train_view.py pipeline/runs/pixel48 [heldout]

``heldout``: the scenes come from the held-out episodes (as the bench's starts do), not the training ones.
"""
import dataclasses
import math
import sys

import torch
from safetensors.torch import load_file

from worldstream.data.latents import LatentClips, PromptBank
from worldstream.engine.generate import load_world_model
from worldstream.train.still_runs import StillRuns
from worldstream.train.teacher import TeacherTrainConfig, draw_tasks, teacher_loss

torch.manual_seed(0)
model, meta = load_world_model(sys.argv[1])
model.eval()
std = next(v for k, v in load_file("pipeline/runs/pixels/model.safetensors").items() if "latent_std" in k)
cfg = TeacherTrainConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["train"].items()})
cfg = dataclasses.replace(cfg, still_rows=4, bf16=False)
split = sys.argv[2] if len(sys.argv) > 2 else "train"
clips = LatentClips(cfg.dataset, cfg.latents, split, cfg.chunks, seed=0)
runs = StillRuns(4, cfg.chunks, 1, depth=1000, idle=meta["actions"]["names"].index("idle"), seed=0)
prompts = PromptBank()
for step in range(96):
    clip = clips.sample(8)
    rows = runs.rows(clip)
    draws = runs.draws(draw_tasks(cfg, 8, cfg.chunks, tuple(clip.video.shape), tuple(clip.audio.shape)))
    with torch.no_grad():
        _, _, made = teacher_loss(model, cfg, rows, draws, prompts, return_x0=True)
    made = made[-4:, -1:]
    runs.advance(made)
    if step + 1 in (1, 2, 5, 12, 24, 48, 96):
        mse = ((made[:, 0] - runs.start[:, 0]) * std.view(1, 3, 1, 1)).square().mean().item()
        print(f"frame {step + 1}: PSNR {10 * math.log10(1 / mse):.1f} dB")
