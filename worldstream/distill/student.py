"""`worldstream train student`: distil the many-step guided teacher into a 1, 2 or 4 step student.

Trajectory folding. The student starts as a copy of the teacher and learns to jump from noise
(or from a point on the straight path between that noise and the answer) to the clean next
chunk that the teacher's guided ODE reaches from the same noise. Pairs (noise, teacher endpoint)
define straight paths, as in rectified-flow distillation (Liu et al. 2023, "InstaFlow"); the
student is trained at the noise levels its 1-, 2- and 4-step samplers visit (1; 1, 0.5; 1, 0.75,
0.5, 0.25) and samples with ``diffusion.flow.sample_x0``.

Guidance rectification. The target is the *guided* teacher (text and action scales together),
so the student runs one conditional pass per step and no guidance pass.

Self-forcing. After ``self_forcing_from`` steps, a share of batches come from the student's own
autoregressive rollouts, made by the engine's rollout function with the student's bounded view
(window, sinks, memory) and long enough to evict into memory: the teacher then continues from
the student's own history, so the student learns to correct its own drift (as Self-Forcing,
Huang et al. 2025, trains on its own rollouts; here with the teacher's ODE endpoint as target
instead of a distribution-matching score).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import to_dict
from ..data.latents import LatentClips, PromptBank
from ..diffusion.flow import interpolate, randn
from ..engine.generate import load_world_model
from ..engine.rollout import Conditioning, RolloutConfig, generate_chunk, make_branches, prefill
from ..model.omni import Omni
from ..train.state import cosine_lr, has_run, optimizer_step, resume_run, save_run

LEVELS = {1: (1.0,), 2: (1.0, 0.5), 4: (1.0, 0.75, 0.5, 0.25)}
REGRESSION = "regression"  # sub-folder: the student as it was when self-forcing began (a run of its own)


@dataclasses.dataclass(frozen=True)
class StudentTrainConfig:
    teacher: str  # teacher checkpoint folder
    dataset: str  # one or more dataset folders, comma-separated, with the teacher's latent cache
    latents: str = "default"
    steps: int = 1000
    batch: int = 4
    history: int = 8  # real chunks before the predicted one (teacher-forced batches)
    levels: tuple[int, ...] = (1, 2, 4)  # step counts to train for
    teacher_sampler: str = "heun"
    teacher_steps: int = 8
    text_scale: float = 1.5  # guidance folded into the student (stronger washes colours out: log.md)
    action_scale: float = 2.0
    self_forcing_from: int = 200
    self_forcing_share: float = 0.5
    rollout_chunks: int = 16  # own-rollout length (longer than the window: exercises eviction)
    rollout_steps: int = 2  # student steps per chunk while rolling out
    audio_weight: float = 0.5
    lr: float = 5e-5
    warmup: int = 50
    ema: float = 0.99
    eval_every: int = 100
    save_every_s: float = 60.0
    bf16: bool = True
    seed: int = 0


def _levels(cfg: StudentTrainConfig) -> torch.Tensor:
    return torch.tensor(sorted({t for n in cfg.levels for t in LEVELS[n]}))


@torch.no_grad()
def teacher_target(teacher: Omni, cfg: StudentTrainConfig, cond: Conditioning, hist_v: torch.Tensor,
                   hist_a: torch.Tensor | None, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The guided teacher's clean next chunk after the given history, from the given noise."""
    rcfg = RolloutConfig(sampler=cfg.teacher_sampler, steps=cfg.teacher_steps, text_scale=cfg.text_scale,
                         action_scale=cfg.action_scale)
    branches = make_branches(teacher, rcfg)
    n = prefill(teacher, branches, cond, hist_v, hist_a)
    return generate_chunk(teacher, branches, rcfg, cond, n, tuple(hist_v.shape[2:]), noise=noise, commit=False)


@torch.no_grad()
def own_rollout(student: Omni, cond: Conditioning, first_v: torch.Tensor, first_a: torch.Tensor | None,
                n_chunks: int, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The student's own history: one real chunk, then ``n_chunks - 1`` of its own, through the
    engine's rollout function with its bounded view."""
    rcfg = RolloutConfig(sampler="x0", steps=steps, text_scale=1.0, action_scale=1.0)
    branches = make_branches(student, rcfg)
    prefill(student, branches, cond, first_v, first_a)
    vs, as_ = [first_v], [] if first_a is None else [first_a]
    for c in range(1, n_chunks):
        v, a = generate_chunk(student, branches, rcfg, cond, c, tuple(first_v.shape[2:]), generator)
        vs.append(v)
        if a is not None:
            as_.append(a)
    return torch.cat(vs, 1), (torch.cat(as_, 1) if as_ else None)


def student_loss(student, cfg: StudentTrainConfig, cond: Conditioning, hist_v, hist_a, target_v, target_a, noise,
                 t: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """x0 regression of the student's prediction for the chunk after the history, from the point
    at level t on the straight path between the noise and the teacher's answer."""
    mc = student.module.cfg if hasattr(student, "module") else student.cfg
    B = hist_v.shape[0]
    nv = target_v[0].numel()
    tv = t.view(B, 1, 1, 1, 1)
    xv = interpolate(target_v, noise[:, :nv].view_as(target_v), tv)
    video = torch.cat([hist_v, xv], 1)
    K = video.shape[1] // mc.chunk_frames
    t_chunks = torch.zeros(B, K)
    t_chunks[:, -1] = t
    kw = {}
    if target_a is not None:
        xa = interpolate(target_a, noise[:, nv:].view_as(target_a), t.view(B, 1, 1))
        kw = dict(audio=torch.cat([hist_a, xa], 1), t_audio=t_chunks)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16 and video.device.type == "cpu"):
        pv, pa = student(video=video, t_video=t_chunks, actions=cond.actions[:, : video.shape[1]], text=cond.text,
                         text_mask=cond.text_mask, text_pooled=cond.text_pooled, **kw)
    n_last = target_v.shape[1]
    x0v = xv - tv * pv[:, -n_last:].float()
    lv = ((x0v - target_v) ** 2).mean()
    loss, parts = lv, {"video": lv.item()}
    if target_a is not None:
        na = target_a.shape[1]
        x0a = xa - t.view(B, 1, 1) * pa[:, -na:].float()
        la = ((x0a - target_a) ** 2).mean()
        loss = loss + cfg.audio_weight * la
        parts["audio"] = la.item()
    return loss, parts


def _cond(prompts: PromptBank, clip, frames: int) -> Conditioning:
    text, mask, pooled = prompts.batch(clip.captions)
    return Conditioning(text, mask, pooled, clip.actions[:, :frames])


def _batch(cfg, student, teacher, clip, prompts, rng, g, own: bool):
    """History (real or the student's own), the teacher's target after it, noise, levels."""
    mc = student.cfg
    cf, tpf = mc.chunk_frames, mc.audio_tokens_per_frame
    n_hist = cfg.rollout_chunks if own else cfg.history
    cond = _cond(prompts, clip, (n_hist + 1) * cf)
    if own:
        first_a = None if clip.audio is None else clip.audio[:, : cf * tpf]
        hist_v, hist_a = own_rollout(student, cond, clip.video[:, :cf], first_a, n_hist, cfg.rollout_steps, g)
    else:
        hist_v = clip.video[:, : n_hist * cf]
        hist_a = None if clip.audio is None else clip.audio[:, : n_hist * cf * tpf]
    B = hist_v.shape[0]
    shape_v = (B, cf, *hist_v.shape[2:])
    n_noise = int(np.prod(shape_v[1:])) + (0 if hist_a is None else cf * tpf * hist_a.shape[2])
    noise = randn((B, n_noise), generator=g)
    target_v, target_a = teacher_target(teacher, cfg, cond, hist_v, hist_a, noise)
    levels = _levels(cfg)
    t = levels[torch.from_numpy(rng.integers(len(levels), size=B))]
    return cond, hist_v, hist_a, target_v, target_a, noise, t


@torch.no_grad()
def heldout_error(student, teacher, cfg, clip, prompts) -> dict[str, float]:
    """x0 MSE of the student's one-pass prediction against the teacher's, per level, fixed noise."""
    g = torch.Generator().manual_seed(99)
    rng = np.random.default_rng(0)
    cond, hv, ha, tv, ta, noise, _ = _batch(cfg, student, teacher, clip, prompts, rng, g, own=False)
    out = {}
    for lvl in _levels(cfg).tolist():
        loss, parts = student_loss(student, dataclasses.replace(cfg, bf16=False), cond, hv, ha, tv, ta, noise,
                                   torch.full((hv.shape[0],), lvl))
        out[f"x0_mse_t{lvl:g}"] = parts["video"]
    return out


def train_student(cfg: StudentTrainConfig, out: str | Path, progress: bool = True,
                  max_seconds: float | None = None) -> dict[str, Any]:
    out = Path(out)
    torch.manual_seed(cfg.seed)
    teacher, tmeta = load_world_model(cfg.teacher)
    teacher.requires_grad_(False)
    student = Omni(teacher.cfg)
    student.load_state_dict(teacher.state_dict())
    ema = copy.deepcopy(student).requires_grad_(False)
    cf = teacher.cfg.chunk_frames
    frames = (max(cfg.history, cfg.rollout_chunks) + 1) * cf
    train = LatentClips(cfg.dataset, cfg.latents, "train", frames, seed=cfg.seed)
    heldout = LatentClips(cfg.dataset, cfg.latents, "heldout", frames, seed=cfg.seed + 1)
    if train.ident.get("video_ae", {}).get("sha256") != tmeta["latents"]["video_ae"]["sha256"]:
        raise ValueError(f"latent cache {cfg.latents!r} was not made with the teacher's video autoencoder; "
                         "encode the data with the teacher's autoencoders")
    prompts = PromptBank()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    step, metrics = 0, {}
    out.mkdir(parents=True, exist_ok=True)
    if has_run(out):
        meta = resume_run(out, to_dict(cfg), student, ema, opt)
        train.rng.bit_generator.state = meta["sampler_rng"]
        rng.bit_generator.state = meta["draw_rng"]
        g.set_state(torch.tensor(meta["noise_rng"], dtype=torch.uint8))
        step, metrics = int(meta["step"]), meta.get("metrics", {})
    eval_clip = heldout.fixed(min(4, cfg.batch))
    log = open(out / "log.jsonl", "a")
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc="distil student", unit="step")
    def meta() -> dict[str, Any]:  # config.json of the run as it stands now
        return {"kind": "omni_student", "model": to_dict(student.cfg), "train": to_dict(cfg), "step": step,
                "metrics": metrics, "latents": tmeta["latents"], "actions": tmeta["actions"], "fps": tmeta["fps"],
                "latent_shape": tmeta["latent_shape"], "teacher": str(cfg.teacher),
                "rollout": {"sampler": "x0", "steps": min(2, max(cfg.levels)), "text_scale": 1.0, "action_scale": 1.0},
                "sampler_rng": train.rng.bit_generator.state, "draw_rng": rng.bit_generator.state,
                "noise_rng": g.get_state().tolist()}

    t0 = t_save = time.perf_counter()
    while step < cfg.steps:
        own = step >= cfg.self_forcing_from and rng.random() < cfg.self_forcing_share
        clip = train.sample(cfg.batch)
        student.eval()  # the rollout and the teacher target run without dropout / grad
        batch = _batch(cfg, student, teacher, clip, prompts, rng, g, own)
        student.train()
        loss, parts = student_loss(student, cfg, *batch)
        lr = cosine_lr(cfg.lr, cfg.warmup, cfg.steps, step)
        optimizer_step(student, opt, loss, lr, ema, cfg.ema, step)
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", own=int(own))
        log.write(json.dumps({"step": step, "loss": loss.item(), "own": own, **parts, "lr": lr}) + "\n")
        last = step == cfg.steps
        if step % cfg.eval_every == 0 or last:
            metrics = {"step": step, **heldout_error(ema, teacher, cfg, eval_clip, prompts)}
            log.write(json.dumps({"eval": metrics}) + "\n")
            log.flush()
        out_of_time = max_seconds is not None and time.perf_counter() - t0 > max_seconds
        if step == cfg.self_forcing_from < cfg.steps:  # the regression-only student, for comparison (log.md)
            (out / REGRESSION).mkdir(exist_ok=True)
            save_run(out / REGRESSION, student, ema, opt, meta())
        if last or out_of_time or time.perf_counter() - t_save > cfg.save_every_s:
            save_run(out, student, ema, opt, meta())
            t_save = time.perf_counter()
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    log.close()
    return metrics
