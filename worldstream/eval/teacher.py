"""`worldstream eval teacher`: next-frame PSNR, action following and prompt adherence, on held-out data.

* Teacher-forced next-frame PSNR: the true latents of the previous chunks are committed to the
  cache, the model makes the next chunk (true action and prompt), and the decoded frame is
  compared with the real frame. The autoencoder's own reconstruction of that frame (same
  streaming context) is reported next to it: the ceiling.
* Action following: from real history, walk each of 8 ways for 2 s from ``walk_starts`` starts
  each; the judge (`motion.scroll`) reads how the view moved in each 4-frame span, and the span
  counts if it moved as the game itself moves from the same start (stopping at water and rocks
  included; `walks`). Reported with its 95% interval, split into spans where the game moves and
  where it stops, and next to the judge's agreement on the game's own frames (the ceiling).
* Prompt adherence: from real history under the episode's prompt (``prompt_starts`` held-out
  starts per prompt), switch the prompt to a condition ("it begins to snow", "night falls", ...)
  and generate 3 s; a condition classifier trained on real frames says how many of the last 2 s
  show it, next to the rate without the change, averaged over the starts.
* Audio: from real history, 2 s continued under the true actions and prompt; spectral distance
  (dB) of the generated sound to the real sound of that span, next to the audio autoencoder's own
  reconstruction (the ceiling).

Takes a checkpoint folder or a loaded ``World`` (whose view settings, e.g. a memory budget, it
keeps), and optionally a trained condition judge to share between models. The model runs on its
device (a checkpoint folder is loaded onto ``device``); the metrics are computed on the CPU.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.format import Dataset, DatasetError
from ..data.latents import LatentClips, PromptBank, dataset_paths
from ..data.png import grid, save_png
from ..data.video import write_preview_mp4
from ..engine.generate import load_autoencoders, load_world_model
from ..engine.ground import ground_for
from ..engine.rollout import Conditioning, RolloutConfig, generate_chunk, make_branches, prefill
from ..tokenizers.actions import ActionVocab
from ..tokenizers.losses import psnr, spectral_distance, ssim
from ..worlds.overworld.conditions import TIMES, WEATHERS
from .motion import train_condition_net
from .walks import WalkScore, game_walk, replayable, score_walk, wilson

PROMPTS = {"it begins to snow": ("weather", "snow"), "night falls": ("time", "night"),
           "a thunderstorm": ("weather", "storm"), "fog rolls in": ("weather", "fog")}


def _rgb(x: torch.Tensor) -> list[np.ndarray]:
    return [(f.clamp(0, 1).permute(1, 2, 0).float().cpu().numpy() * 255 + 0.5).astype(np.uint8) for f in x]


def _history(model, clip, chunks: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first ``chunks`` chunks of a clip's video and audio latents, on the model's device."""
    dev = next(model.parameters()).device
    frames = chunks * model.cfg.chunk_frames
    audio = None if clip.audio is None else clip.audio[:, : frames * model.cfg.audio_tokens_per_frame].to(dev)
    return clip.video[:, :frames].to(dev), audio


def _prompt_starts(lat: LatentClips, i: int, kind: str, value: str, frame: int, n: int, tries: int = 60) -> list:
    """``n`` held-out starts for prompt ``i`` whose world is not already in the asked-for condition
    at the switch (``frame`` of the clip): a start where it already snows would count for "it
    begins to snow" with or without the prompt (before the twelfth session, 2 of the 3 starts of
    "fog rolls in" were foggy already). Seeds as before, the ones in the condition skipped; a
    dataset whose records have no condition blend keeps all. Returns (starts, how many of them
    are in the condition anyway: only where ``tries`` seeds found too few others)."""
    names = WEATHERS if kind == "weather" else TIMES
    out, there = [], []
    for j in range(tries):
        clip = lat.fixed(1, seed=300 + i + len(PROMPTS) * j)
        ep, first = clip.start[0]
        blend = ep.records()[first + frame].get("state", {}).get("blend", {}).get(kind)
        (out if blend is None or blend[names.index(value)] < 0.5 else there).append(clip)
        if len(out) == n:
            break
    filled = there[: n - len(out)]
    return out + filled, len(filled)


@torch.no_grad()
def _continue(model, vae, rcfg, cond_hist, cond_new, clip_v, clip_a, n_new, seed, aae=None):
    """Prefill real history, then generate n_new chunks under cond_new; decoded frames of the new
    part (and its sound, (L,) float, when ``aae`` is given)."""
    branches = make_branches(model, rcfg, stacked=True)
    n_hist = prefill(model, branches, cond_hist, clip_v, clip_a)
    state, astate = {}, {}
    vae.decode(clip_v, state)  # the decoders' causal state follows the real history
    if aae is not None and clip_a is not None:
        aae.decode(clip_a, astate)
    g = torch.Generator().manual_seed(seed)
    ground = ground_for(model, clip_v.shape[0], seed)  # a whole-pixel move model fills what its moves uncover
    frames, pcm = [], []
    for c in range(n_new):
        v, a = generate_chunk(model, branches, rcfg, cond_new, n_hist + c, tuple(clip_v.shape[2:]), g, ground=ground)
        frames += _rgb(vae.decode(v, state)[0])
        if aae is not None and a is not None:
            pcm.append(aae.decode(a, astate)[0].float().cpu())
    if aae is None:
        return frames
    return frames, torch.cat(pcm) if pcm else None


@torch.no_grad()
def eval_teacher(checkpoint, dataset: str | Path, rcfg: RolloutConfig, clips: int = 12,
                 history: int = 4, out: str | Path | None = None, walk_frames: int = 48,
                 prompt_frames: int = 72, classifier_steps: int = 2000,
                 classifier_renders: int = 3000, judge=None, audio_frames: int = 48,
                 walk_starts: int = 4, prompt_starts: int = 3, device: str = "cpu") -> dict[str, Any]:
    t_start = time.perf_counter()
    from ..engine.stream import World
    from ..weights import resolve

    if isinstance(checkpoint, World):
        model, meta, vae, aae = checkpoint.model, checkpoint.meta, checkpoint.vae, checkpoint.aae
        checkpoint = meta.get("path", "world")
    else:
        checkpoint = resolve(checkpoint)
        model, meta = load_world_model(checkpoint)
        vae, aae = load_autoencoders(meta, checkpoint)
        model, vae = model.to(device), vae.to(device)
        aae = None if aae is None else aae.to(device)
    ds = Dataset(dataset_paths(dataset)[0])  # the condition judge learns from the first dataset's frames
    vocab = ActionVocab(tuple(meta["actions"]["names"]))
    cf = model.cfg.chunk_frames
    lat = LatentClips(dataset, meta["train"]["latents"], "heldout", (history + 1) * cf, seed=7)
    prompts = PromptBank()
    res: dict[str, Any] = {"checkpoint": str(checkpoint), "rollout": vars(rcfg), "history_chunks": history}
    # 1. teacher-forced next frame
    gen_p, ae_p, gen_s, ae_s, examples = [], [], [], [], []
    for k in range(clips):
        clip = lat.fixed(1, seed=100 + k)
        text, mask, pooled = prompts.batch(clip.captions)
        cond = Conditioning(text, mask, pooled, clip.actions)
        hv, ha = _history(model, clip, history)
        branches = make_branches(model, rcfg, stacked=True)
        prefill(model, branches, cond, hv, ha)
        v, _ = generate_chunk(model, branches, rcfg, cond, history, tuple(clip.video.shape[2:]), torch.Generator().manual_seed(k),
                              ground=ground_for(model, 1, k))
        s1 = {}
        vae.decode(hv, s1)
        s2 = dict(s1)  # layers replace (never mutate) their saved history, so a shallow copy forks the stream
        gen = vae.decode(v, s1)[0].clamp(0, 1).float().cpu()
        rec = vae.decode(clip.video[:, history * cf :].to(hv.device), s2)[0].clamp(0, 1).float().cpu()
        episode, start = clip.start[0]
        real = torch.from_numpy(np.array(episode.frames()[start + history * cf : start + (history + 1) * cf])).permute(0, 3, 1, 2).float() / 255
        gen_p.append(psnr(gen, real))
        ae_p.append(psnr(rec, real))
        gen_s.append(ssim(gen, real).item())
        ae_s.append(ssim(rec, real).item())
        if k < 4:
            examples += [_rgb(real)[0], _rgb(rec)[0], _rgb(gen)[0]]
    res["next_frame_psnr_db"] = float(np.mean(gen_p))
    res["next_frame_psnr_ae_ceiling_db"] = float(np.mean(ae_p))
    res["next_frame_ssim"] = float(np.mean(gen_s))
    res["next_frame_ssim_ae_ceiling"] = float(np.mean(ae_s))
    # 2. action following: 2 s of walking each of 8 ways from real history, several starts per
    # way, scored per span against the game replayed from the same start (`walks`)
    dirs = ("n", "ne", "e", "se", "s", "sw", "w", "nw")
    total, ceiling, per_dir = WalkScore(), WalkScore(), {}
    videos = {}
    n_new = walk_frames // cf
    for k in range(walk_starts * len(dirs)):
        d = dirs[k % len(dirs)]
        clip = lat.fixed(1, seed=200 + k)
        text, mask, pooled = prompts.batch(clip.captions)
        hist_cond = Conditioning(text, mask, pooled, clip.actions)
        acts = torch.cat([clip.actions[:, : history * cf], torch.full((1, n_new * cf), vocab.index(f"walk_{d}"))], 1)
        frames = _continue(model, vae, rcfg, hist_cond, Conditioning(text, mask, pooled, acts),
                           *_history(model, clip, history), n_new, k)
        if k < len(dirs):
            videos[f"walk_{d}"] = frames
        episode, start = clip.start[0]
        truth = None
        if replayable(episode):
            game = game_walk(episode, start + history * cf - 1, [f"walk_{d}"] * len(frames))
            truth = game.positions
            ceiling.add(score_walk(game.frames, d, truth))
        s = score_walk(frames, d, truth)
        total.add(s)
        per_dir.setdefault(d, WalkScore()).add(s)
    res["action_following"] = total.rate
    res["action_following_spans"] = total.spans
    res["action_following_ci95"] = wilson(total.moving_ok + total.stopped_ok, total.spans)
    res["action_following_moving"] = [total.moving_ok, total.moving]
    res["action_following_stopped"] = [total.stopped_ok, total.stopped]
    res["action_following_judge_ceiling"] = ceiling.rate if ceiling.spans else None
    res["action_following_by_direction"] = {d: round(v.rate, 3) for d, v in per_dir.items()}
    res["action_following_loose"] = total.along / max(total.spans, 1)  # moved along the key, obstacles ignored (before 2026-11-30)
    # 3. prompt adherence
    net, acc = judge or train_condition_net(ds, steps=classifier_steps, renders=classifier_renders)
    res["condition_classifier"] = acc
    adherence = {}
    n_new = prompt_frames // cf
    for i, (p, (kind, value)) in enumerate(PROMPTS.items()):
        rates = {"with_prompt": [], "without": []}
        starts, in_condition = _prompt_starts(lat, i, kind, value, history * cf - 1, prompt_starts)
        for j, clip in enumerate(starts):
            text, mask, pooled = prompts.batch(clip.captions)
            hist_cond = Conditioning(text, mask, pooled, clip.actions)
            acts = torch.cat([clip.actions[:, : history * cf], torch.full((1, n_new * cf), vocab.index("idle"))], 1)
            for label, prompt in (("with_prompt", p), ("without", clip.captions[0])):
                t2, m2, p2 = prompts.batch([prompt])
                frames = _continue(model, vae, rcfg, hist_cond, Conditioning(t2, m2, p2, acts),
                                   *_history(model, clip, history), n_new, 0)
                x = torch.from_numpy(np.stack(frames[len(frames) // 3 :])).permute(0, 3, 1, 2).float() / 255
                lw, lt = net(x)
                pred = lw.argmax(1) if kind == "weather" else lt.argmax(1)
                target = (WEATHERS if kind == "weather" else TIMES).index(value)
                rates[label].append((pred == target).float().mean().item())
                if label == "with_prompt" and j == 0:
                    videos[p.replace(" ", "_")] = frames
        # the mean over starts, and per start (frames of one start are not independent samples)
        adherence[p] = {k: float(np.mean(v)) for k, v in rates.items()}
        adherence[p].update({f"{k}_per_start": v for k, v in rates.items()})
        adherence[p]["starts_in_condition_already"] = in_condition
    res["prompt_adherence"] = adherence
    # 4. sound: continue under the true actions and prompt; spectral distance to the real sound
    if aae is not None and audio_frames > 0:
        n_new, long = audio_frames // cf, None
        while long is None and n_new >= 1:  # as long a span as the held-out episodes hold
            try:
                long = LatentClips(dataset, meta["train"]["latents"], "heldout", (history + n_new) * cf, seed=11)
            except DatasetError:
                n_new //= 2
        sd, sd_ae = [], []
        for k in range(max(1, clips // 3) if long is not None else 0):
            clip = long.fixed(1, seed=400 + k)
            if clip.audio is None:
                break
            text, mask, pooled = prompts.batch(clip.captions)
            cond = Conditioning(text, mask, pooled, clip.actions)
            _, pcm = _continue(model, vae, rcfg, cond, cond, *_history(model, clip, history), n_new, k, aae=aae)
            episode, start = clip.start[0]
            a0 = (start + history * cf) * episode.manifest["samples_per_frame"]
            real_pcm = torch.from_numpy(np.array(episode.audio()[a0 : a0 + len(pcm)]))
            ha = _history(model, clip, history)[1]
            astate = {}
            aae.decode(ha, astate)
            rec_pcm = aae.decode(clip.audio[:, ha.shape[1] :].to(ha.device), astate)[0].float().cpu()[: len(pcm)]
            sd.append(spectral_distance(pcm[None], real_pcm[None]))
            sd_ae.append(spectral_distance(rec_pcm[None], real_pcm[None]))
        if sd:
            res["audio_spectral_distance_db"] = float(np.mean(sd))
            res["audio_spectral_distance_ae_ceiling_db"] = float(np.mean(sd_ae))
    res["seconds"] = time.perf_counter() - t_start
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_png(out / "next_frame_examples.png", grid([np.kron(e, np.ones((2, 2, 1), np.uint8)) for e in examples], cols=3))
        for name, frames in videos.items():
            write_preview_mp4(out / f"{name}.mp4", frames, None, meta["fps"], 24000, scale=3)
        (out / "teacher.json").write_text(json.dumps(res, indent=1, default=str))
    return res
