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

Distribution matching (``objective="dmd"``). On own-rollout batches the 1-step student's
prediction is pushed along the difference of two scores instead of regressed onto one answer
(DMD, Yin et al. 2024; DMD2's two-time-scale form; on autoregressive rollouts as in Self-Forcing):
the sample is noised to a random level, the guided teacher says where the data would take it and
a "fake" score model, trained alongside on the student's own samples, says where the student's
samples would; the student moves toward the first and away from the second. Regression keeps the
conditional mean, which is blurred wherever the future is uncertain; matching distributions asks
for samples as sharp as the teacher's. Teacher-forced batches keep the regression (and the 2-
and 4-step levels).

Adversarial post-training (``objective="adversarial"``, ``distill.discriminator``). On own-rollout
batches the student makes its 1-step frame after its own history (t = 1, exactly as it streams),
keeps the regression onto the teacher's answer as an anchor, and is pushed a fixed step along a
latent critic's gradient toward what real transitions of the world look like (AAPT, Lin et al.
2025); the critic learns real (previous, next, key) transitions from the clips against the
student's own. Run with the student as its own teacher (``--teacher default --teacher-sampler x0
--teacher-steps 1`` and guidance 1), the anchor is the student as it was, which keeps the guidance
already folded into it.

Moment anchoring (``moment_weight``). The free-running world drifts first in its frame-wide colour
(each latent channel's spatial mean leaves the data's range) and washes out (the spatial spread
shrinks; log.md, fourteenth and twenty-eighth sessions). After the student's own history the
teacher continues that drift, so nothing pulls it back. On own-rollout batches the student's 1-step
frame (t = 1) is also asked to match the recorded next frame's per-channel spatial mean and spread,
which its history's sink frame and the keys nearly determine: a few numbers per frame, so unlike
a per-pixel regression onto the recording (ninth session: the conditional mean, blurred) it does not
ask for a blur, only for the colours and contrast the recording keeps.

Detail anchoring (``detail_weight``). Moment anchoring holds the colours but not the detail: a
long stream's frames stay 6-9x softer than the real ones (log.md, thirty-sixth session). The same
few-numbers idea one level down: the 1-step frame's per-channel detail energy (mean absolute
difference of neighbouring latent pixels) is asked to match the recorded next frame's. It says how
much texture a frame of this world holds, not where, so like the moments it does not ask for the
conditional mean. Measured at weights 2 and 8 (log.md, thirty-eighth session): it lowers its
own mismatch in training but leaves the decoded long walk as soft as without it; off by default.
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

from ..config import require_counts, to_dict
from ..data.latents import LatentClips, PromptBank
from ..device import autocast
from ..diffusion.flow import guide, interpolate, randn, velocity_target, x0_from_velocity
from ..engine.generate import load_world_model, reads_latents
from ..engine.rollout import Conditioning, RolloutConfig, generate_chunk, make_branches, own_rollout, prefill
from ..model.omni import Omni, degrade_at_level, previous_frames
from ..train.state import cosine_lr, has_run, optimizer_step, resume_run, save_run, schedule_step, train_device
from ..weights import resolve
from .discriminator import DiscriminatorConfig, TransitionDiscriminator, discriminator_loss, generator_push

LEVELS = {1: (1.0,), 2: (1.0, 0.5), 4: (1.0, 0.75, 0.5, 0.25)}
REGRESSION = "regression"  # sub-folder: the student as it was when self-forcing began (a run of its own)
FAKE = "fake_score"  # sub-folder: the distribution-matching fake score and its optimizer (to resume)
DISC = "discriminator"  # sub-folder: the adversarial critic and its optimizer (to resume)
OBJECTIVES = ("regression", "dmd", "adversarial")


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
    rollout_steps: int = 1  # student steps per chunk while rolling out (as the shipped student streams)
    # share of clips drawn around a caption change (``LatentClips``): the teacher's answer to a prompt
    # the history does not show yet, which plain clips almost never ask for
    change_share: float = 0.0
    init_from: str = ""  # start from this student's (EMA) weights instead of the teacher's (train further)
    # own-rollout batches: "regression" onto the teacher's ODE endpoint, "dmd" or "adversarial"
    objective: str = "regression"
    fake_lr: float = 1e-4  # dmd: the fake score's learning rate
    fake_updates: int = 1  # dmd: fake-score steps per student step (DMD2 uses 5 on GPUs; each costs a pass here)
    adv_step: float = 0.1  # adversarial: the critic's push on each own 1-step frame, RMS in latent units
    disc_lr: float = 1e-4  # adversarial: the critic's learning rate
    disc_gamma: float = 1.0  # adversarial: R1 + R2 gradient penalty weight
    disc_width: int = 64  # adversarial: the critic's channels at full latent resolution
    disc_warmup: int = 0  # adversarial: steps in which only the critic learns (its early gradient is noise)
    # adversarial: weight of the regression onto the teacher (video and audio) on own-rollout batches;
    # after the student's own history the teacher's answer is itself dissolving (0: only the critic
    # judges them, as in AAPT)
    adv_anchor: float = 1.0
    # own rollouts of a random length, 2 to ``rollout_chunks`` chunks, instead of always the longest:
    # a stream's drift starts in its first frames, which a fixed length never trains on
    random_rollout_length: bool = False
    # a teacher trained with ``--prev-level``: the level at which the student's previous frame is degraded
    # (its own rollouts, the teacher's targets and its passes alike) and that its streams use
    prev_level: float = 0.0
    # own-rollout batches: weight of the match of the 1-step frame's per-channel spatial mean and spread to
    # the recorded next frame's (moment anchoring, above); 0: off. 1 pulls the mean as hard as the teacher's
    moment_weight: float = 0.0
    # own-rollout batches: weight of the match of the 1-step frame's per-channel detail energy (mean absolute
    # difference of neighbouring latent pixels, across and down) to the recorded next frame's (detail
    # anchoring, above); 0: off
    detail_weight: float = 0.0
    # own-rollout batches at t = 1 only (the 1-step frame the stream makes after its own history) instead of
    # every level's; teacher-forced batches keep all levels
    own_at_one: bool = False
    # > 0: the student streams with sinks refreshed every this many chunks (``OmniConfig.sink_every``),
    # and its own rollouts run so; an own-rollout batch then trains on the view a long stream has,
    # its history cut to the last sinks + j + window chunks (j < sink_every drawn), so the sinks are its
    # own frames j chunks before the window rather than the clip's real start. (An approximation: the
    # cut pass recomputes the sinks' keys from the cut, a stream keeps the keys they were made with.)
    sink_every: int = 0
    audio_weight: float = 0.5
    lr: float = 5e-5
    warmup: int = 50
    ema: float = 0.99
    eval_every: int = 100
    save_every_s: float = 60.0
    bf16: bool = True
    seed: int = 0

    def __post_init__(self):
        require_counts(self, positive=("steps", "batch", "history", "teacher_steps", "rollout_chunks", "rollout_steps", "eval_every"),
                       nonnegative=("lr", "warmup", "moment_weight", "detail_weight", "sink_every"))  # lr 0: weights kept (a test of --init-from)


def _levels(cfg: StudentTrainConfig) -> torch.Tensor:
    return torch.tensor(sorted({t for n in cfg.levels for t in LEVELS[n]}))


@torch.no_grad()
def teacher_target(teacher: Omni, cfg: StudentTrainConfig, cond: Conditioning, hist_v: torch.Tensor,
                   hist_a: torch.Tensor | None, noise: torch.Tensor,
                   own: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The guided teacher's clean next chunk after the given history, from the given noise
    (``own``: the history is the student's own rollout, which a ``prev_own`` teacher is told)."""
    rcfg = RolloutConfig(sampler=cfg.teacher_sampler, steps=cfg.teacher_steps, text_scale=cfg.text_scale,
                         action_scale=cfg.action_scale, prev_level=cfg.prev_level)
    branches = make_branches(teacher, rcfg, stacked=True)
    n = prefill(teacher, branches, cond, hist_v, hist_a, own=own and hist_v.shape[1] > teacher.cfg.chunk_frames)
    return generate_chunk(teacher, branches, rcfg, cond, n, tuple(hist_v.shape[2:]), noise=noise, commit=False)


def student_loss(student, cfg: StudentTrainConfig, cond: Conditioning, hist_v, hist_a, target_v, target_a, noise,
                 t: torch.Tensor, own: bool = False) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """x0 regression of the student's prediction for the chunk after the history, from the point
    at level t on the straight path between the noise and the teacher's answer (``own``: the
    history is the student's own rollout). Returns (loss, parts, the predicted clean video chunk
    with its gradient: at t = 1 the student's 1-step frame)."""
    mc = student.module.cfg if hasattr(student, "module") else student.cfg
    B = hist_v.shape[0]
    nv = target_v[0].numel()
    tv = t.view(B, 1, 1, 1, 1)
    xv = interpolate(target_v, noise[:, :nv].view_as(target_v), tv)
    video = torch.cat([hist_v, xv], 1)
    K = video.shape[1] // mc.chunk_frames
    t_chunks = torch.zeros(B, K, device=video.device)
    t_chunks[:, -1] = t
    kw = {}
    if target_a is not None:
        xa = interpolate(target_a, noise[:, nv:].view_as(target_a), t.view(B, 1, 1))
        kw = dict(audio=torch.cat([hist_a, xa], 1), t_audio=t_chunks)
    prev, level = _prev(mc, video, cfg.prev_level, own)
    with autocast(video.device.type, cfg.bf16):
        pv, pa = student(video=video, t_video=t_chunks, actions=cond.actions[:, : video.shape[1]], text=cond.text,
                         text_mask=cond.text_mask, text_pooled=cond.text_pooled, prev=prev, prev_level=level, **kw)
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
    return loss, parts, x0v


def _prev(mc, video: torch.Tensor, prev_level: float,
          own: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The previous frames of a pass over ``video`` (a clean history, then the chunk being made) and
    their levels: the last chunk's degraded at ``prev_level`` as a stream degrades it (global RNG),
    the history's clean (its tokens ignore it). A ``prev_own`` model's level is instead 1 where
    the last chunk's previous frame is the student's own (``own``, a rollout longer than its first,
    real chunk), else 0; nothing is degraded."""
    if not mc.prev_frame:
        return None, None
    prev = previous_frames(video, mc.chunk_frames)
    if mc.prev_own:
        level = torch.zeros(video.shape[0], video.shape[1] // mc.chunk_frames, device=video.device)
        level[:, -1] = float(own and level.shape[1] > 2)
        return prev, level
    if prev_level <= 0:
        return prev, None
    B, K = video.shape[0], video.shape[1] // mc.chunk_frames
    level = torch.zeros(B, K, device=video.device)
    level[:, -1] = prev_level
    eps = torch.randn((B, K) + tuple(video.shape[2:])).to(video.device)
    return degrade_at_level(prev, mc.chunk_frames, level, eps, mc.prev_std), level


def _last_velocity(model, bf16: bool, cond: Conditioning, hist_v, hist_a, xv, xa, t: torch.Tensor,
                   use_text: bool = True, use_actions: bool = True, prev_level: float = 0.0, own: bool = False):
    """The model's velocity for the chunk after a clean history: one pass over the whole sequence
    (the same block-causal view as streaming), the chunk at level t (B,)."""
    B, F = hist_v.shape[0], hist_v.shape[1] + xv.shape[1]
    mc = model.module.cfg if hasattr(model, "module") else model.cfg
    t_chunks = torch.zeros(B, F // mc.chunk_frames, device=xv.device)
    t_chunks[:, -1] = t
    actions = cond.actions[:, :F] if use_actions else torch.full_like(cond.actions[:, :F], -1)
    text = dict(text=cond.text, text_mask=cond.text_mask, text_pooled=cond.text_pooled) if use_text else \
        dict(text=None, text_mask=None, text_pooled=None)
    kw = {} if xa is None else dict(audio=torch.cat([hist_a, xa], 1), t_audio=t_chunks)
    video = torch.cat([hist_v, xv], 1)
    prev, level = _prev(mc, video, prev_level, own)
    with autocast(xv.device.type, bf16):
        pv, pa = model(video=video, t_video=t_chunks, actions=actions, prev=prev, prev_level=level, **text, **kw)
    return pv[:, -xv.shape[1]:].float(), None if xa is None else pa[:, -xa.shape[1]:].float()


def dmd_loss(student, fake, teacher, cfg: StudentTrainConfig, cond: Conditioning, hist_v, hist_a, noise,
             g: torch.Generator):
    """The student's 1-step sample after its own history, and the distribution-matching loss on it;
    returns (loss, parts, the detached sample for the fake score's update)."""
    B = hist_v.shape[0]
    cf = teacher.cfg.chunk_frames
    xv = noise[:, : cf * hist_v[0, 0].numel()].view(B, cf, *hist_v.shape[2:])
    xa = None if hist_a is None else noise[:, xv[0].numel():].view(B, -1, hist_a.shape[2])
    dev = hist_v.device
    one = torch.ones(B, device=dev)
    pv, pa = _last_velocity(student, cfg.bf16, cond, hist_v, hist_a, xv, xa, one, prev_level=cfg.prev_level, own=True)
    x0v = x0_from_velocity(xv, pv, 1.0)  # the sample (with grad)
    x0a = None if xa is None else x0_from_velocity(xa, pa, 1.0)
    with torch.no_grad():
        t = (0.02 + 0.96 * torch.rand(B, generator=g)).to(dev)  # (random numbers from the CPU generator)
        eps_v = randn(x0v.shape, generator=g, device=dev)
        eps_a = None if xa is None else randn(x0a.shape, generator=g, device=dev)
        tv, ta = t.view(B, 1, 1, 1, 1), t.view(B, 1, 1)
        ntv = interpolate(x0v.detach(), eps_v, tv)
        nta = None if xa is None else interpolate(x0a.detach(), eps_a, ta)
        args = (cond, hist_v, hist_a, ntv, nta, t)
        vu, vt, vb = (_last_velocity(teacher, cfg.bf16, *args, use_text=ut, use_actions=ua, prev_level=cfg.prev_level,
                                      own=True)
                      for ut, ua in ((False, False), (True, False), (True, True)))
        real = [None if u is None else guide(u, b_, c, cfg.text_scale, cfg.action_scale)
                for u, b_, c in zip(vu, vt, vb)]  # the guided teacher
        fk = _last_velocity(fake, cfg.bf16, *args, prev_level=cfg.prev_level, own=True)
        grads = []
        for x0, xt, tt, vr, vf in ((x0v, ntv, tv, real[0], fk[0]), (x0a, nta, ta, real[1], fk[1])):
            if x0 is None:
                grads.append(None)
                continue
            x0_real, x0_fake = x0_from_velocity(xt, vr, tt), x0_from_velocity(xt, vf, tt)
            dims = tuple(range(1, x0.dim()))
            w = 1.0 / (x0.detach() - x0_real).abs().mean(dims, keepdim=True).clamp_min(1e-4)  # DMD eq. 8's normaliser
            grads.append((x0_fake - x0_real) * w)
    lv = 0.5 * ((x0v - (x0v.detach() - grads[0])) ** 2).mean()
    loss, parts = lv, {"video": lv.item()}
    if x0a is not None:
        la = 0.5 * ((x0a - (x0a.detach() - grads[1])) ** 2).mean()
        loss = loss + cfg.audio_weight * la
        parts["audio"] = la.item()
    return loss, parts, (x0v.detach(), None if x0a is None else x0a.detach())


def fake_score_loss(fake, cfg: StudentTrainConfig, cond: Conditioning, hist_v, hist_a, sample_v, sample_a,
                    g: torch.Generator) -> torch.Tensor:
    """Flow matching of the fake score on the student's own samples (after the same history)."""
    B, dev = hist_v.shape[0], hist_v.device
    t = (0.02 + 0.96 * torch.rand(B, generator=g)).to(dev)
    eps_v = randn(sample_v.shape, generator=g, device=dev)
    xv = interpolate(sample_v, eps_v, t.view(B, 1, 1, 1, 1))
    xa = eps_a = None
    if sample_a is not None:
        eps_a = randn(sample_a.shape, generator=g, device=dev)
        xa = interpolate(sample_a, eps_a, t.view(B, 1, 1))
    pv, pa = _last_velocity(fake, cfg.bf16, cond, hist_v, hist_a, xv, xa, t, prev_level=cfg.prev_level, own=True)
    loss = ((pv - velocity_target(sample_v, eps_v)) ** 2).mean()
    if sample_a is not None:
        loss = loss + cfg.audio_weight * ((pa - velocity_target(sample_a, eps_a)) ** 2).mean()
    return loss


def _one_step_rows(x0v: torch.Tensor, real_v: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The predicted and recorded chunks (B, F, C, h, w) of the rows made in one step (t = 1, as the
    student streams), in fp32; None without such rows (the anchoring losses are then 0)."""
    one = t == 1
    return (x0v[one].float(), real_v[one].float()) if one.any() else None


def moment_loss(x0v: torch.Tensor, real_v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Squared mismatch of per-channel spatial means and spreads between predicted and recorded chunks
    (B, F, C, h, w), over the rows made in one step (t = 1, as the student streams); 0 without such rows."""
    rows = _one_step_rows(x0v, real_v, t)
    if rows is None:
        return x0v.sum() * 0.0
    p, r = rows[0].flatten(3), rows[1].flatten(3)
    return ((p.mean(-1) - r.mean(-1)) ** 2).mean() + ((p.std(-1) - r.std(-1)) ** 2).mean()


def detail_energy(z: torch.Tensor) -> torch.Tensor:
    """Per-channel detail energy of latents (..., C, h, w): the mean absolute difference of neighbouring
    latent pixels across and down, (..., C, 2). A blurred frame has less of it at any colour."""
    return torch.stack([(z[..., :, 1:] - z[..., :, :-1]).abs().mean((-2, -1)),
                        (z[..., 1:, :] - z[..., :-1, :]).abs().mean((-2, -1))], -1)


def detail_loss(x0v: torch.Tensor, real_v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Squared mismatch of per-channel detail energy between predicted and recorded chunks (B, F, C, h, w),
    over the rows made in one step (t = 1); 0 without such rows. Says how much detail, not where."""
    rows = _one_step_rows(x0v, real_v, t)
    if rows is None:
        return x0v.sum() * 0.0
    return ((detail_energy(rows[0]) - detail_energy(rows[1])) ** 2).mean()


def real_transitions(video: torch.Tensor, actions: torch.Tensor, n: int,
                     rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` real (previous frame, next frame, next frame's key) transitions from clips' latents
    (B, F, C, h, w) and keys (B, F), at random clips and frames: what the critic learns as real."""
    B, F = actions.shape
    b = torch.from_numpy(rng.integers(B, size=n))
    k = torch.from_numpy(rng.integers(1, F, size=n))
    return video[b, k - 1], video[b, k], actions[b, k]


def own_transitions(hist_v: torch.Tensor, chunk: torch.Tensor,
                    actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The transitions into each frame of a chunk made after a history (B, F, C, h, w): its first
    frame's previous is the history's last; ``actions`` (B, >= F + chunk frames) the keys. Flattened
    to (B * chunk frames, ...); the chunk keeps its gradient."""
    F, cf = hist_v.shape[1], chunk.shape[1]
    prev = torch.cat([hist_v[:, -1:].to(chunk.dtype), chunk[:, :-1].detach()], 1)
    return prev.flatten(0, 1), chunk.flatten(0, 1), actions[:, F : F + cf].flatten()


def _cond(prompts: PromptBank, clip, frames: int) -> Conditioning:
    text, mask, pooled = prompts.batch(clip.captions)
    return Conditioning(text, mask, pooled, clip.actions[:, :frames])


def _batch(cfg, student, teacher, clip, prompts, rng, g, own: bool, target: bool = True):
    """History (real or the student's own), the teacher's continuation after it (``target=False``:
    none, for distribution matching), noise, levels; and the clip frame the history starts at (not 0
    when ``sink_every`` cuts an own rollout)."""
    mc = student.cfg
    cf, tpf = mc.chunk_frames, mc.audio_tokens_per_frame
    n_hist = cfg.rollout_chunks if own else cfg.history
    if own and cfg.random_rollout_length:
        n_hist = int(rng.integers(2, cfg.rollout_chunks + 1))
    dev = next(student.parameters()).device  # clips and random numbers come from the CPU, then move
    clip = clip.to(dev)
    cond = _cond(prompts, clip, (n_hist + 1) * cf).to(dev)
    if own:
        first_a = None if clip.audio is None else clip.audio[:, : cf * tpf]
        hist_v, hist_a = own_rollout(student, cond, clip.video[:, :cf], first_a, n_hist, cfg.rollout_steps, g,
                                     prev_level=cfg.prev_level)
    else:
        hist_v = clip.video[:, : n_hist * cf]
        hist_a = None if clip.audio is None else clip.audio[:, : n_hist * cf * tpf]
    first = 0
    if own and cfg.sink_every:  # the refreshed view: its sinks are the own chunks j before the window
        keep = min(n_hist, mc.sinks + mc.window + int(rng.integers(cfg.sink_every)))
        first = (n_hist - keep) * cf
        hist_v = hist_v[:, first:]
        hist_a = None if hist_a is None else hist_a[:, first * tpf :]
        cond = dataclasses.replace(cond, actions=cond.actions[:, first:])
    B = hist_v.shape[0]
    shape_v = (B, cf, *hist_v.shape[2:])
    n_noise = int(np.prod(shape_v[1:])) + (0 if hist_a is None else cf * tpf * hist_a.shape[2])
    noise = randn((B, n_noise), generator=g, device=dev)
    if not target:
        target_v = target_a = None
    else:
        target_v, target_a = teacher_target(teacher, cfg, cond, hist_v, hist_a, noise, own)
    levels = _levels(cfg)
    t = levels[torch.from_numpy(rng.integers(len(levels), size=B))].to(dev)
    if own and cfg.own_at_one:  # drawn all the same, so a run's random stream does not depend on the switch
        t = torch.ones_like(t)
    return cond, hist_v, hist_a, target_v, target_a, noise, t, first


@torch.no_grad()
def heldout_error(student, teacher, cfg, clip, prompts) -> dict[str, float]:
    """x0 MSE of the student's one-pass prediction against the teacher's, per level, fixed noise."""
    g = torch.Generator().manual_seed(99)
    rng = np.random.default_rng(0)
    cond, hv, ha, tv, ta, noise, _, _ = _batch(cfg, student, teacher, clip, prompts, rng, g, own=False)
    out = {}
    for lvl in _levels(cfg).tolist():
        loss, parts, _ = student_loss(student, dataclasses.replace(cfg, bf16=False), cond, hv, ha, tv, ta, noise,
                                      torch.full((hv.shape[0],), lvl, device=hv.device))
        out[f"x0_mse_t{lvl:g}"] = parts["video"]
    return out


def adversarial_step(student, disc, disc_opt, cfg: StudentTrainConfig, batch, clip, rng: np.random.Generator,
                     step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """An own-rollout batch of adversarial post-training: the student's 1-step chunk after its own
    history, its loss (the anchor's regression plus the critic's push; the caller steps the
    student), and one critic update on real transitions against these."""
    cond, hist_v, hist_a, target_v, target_a, noise, t = batch
    t = torch.ones_like(t)  # the 1-step frame, exactly as the student streams it
    loss, parts, chunk = student_loss(student, cfg, cond, hist_v, hist_a, target_v, target_a, noise, t, own=True)
    fake = own_transitions(hist_v, chunk, cond.actions)
    push, logit = generator_push(disc, *fake, cfg.adv_step if step >= cfg.disc_warmup else 0.0)
    loss = cfg.adv_anchor * loss + push
    parts.update(push=push.item(), g_logit=logit)
    dev = hist_v.device
    real = tuple(x.to(dev) for x in real_transitions(clip.video, clip.actions, fake[0].shape[0], rng))
    d_loss, d_parts = discriminator_loss(disc, real, tuple(x.detach() for x in fake), cfg.disc_gamma)
    optimizer_step(disc, disc_opt, d_loss, cosine_lr(cfg.disc_lr, cfg.warmup, cfg.steps, step))
    parts.update(d_loss=d_loss.item(), **d_parts)
    return loss, parts


def _absolute_latents(latents: dict[str, Any], base: Path) -> dict[str, Any]:
    """The teacher's autoencoder entries with a bundle's relative paths made absolute, so a student of
    a bundle (the shipped default as its own teacher) finds them from its own run folder."""
    return {k: v if v is None or Path(v["path"]).is_absolute() else dict(v, path=str((base / v["path"]).resolve()))
            for k, v in latents.items()}


def train_student(cfg: StudentTrainConfig, out: str | Path, progress: bool = True,
                  max_seconds: float | None = None, device: str = "cpu",
                  budget_s: float | None = None) -> dict[str, Any]:
    """``device``: where the teacher, the student (and the fake score) run; ``budget_s`` as ``train_teacher``."""
    out = Path(out)
    dev = train_device(device, 1)
    torch.manual_seed(cfg.seed)
    teacher, tmeta = load_world_model(cfg.teacher)
    tmeta = dict(tmeta, latents=_absolute_latents(tmeta["latents"], resolve(cfg.teacher)))
    teacher.requires_grad_(False)
    if cfg.prev_level > 0 and not teacher.cfg.prev_level:
        raise ValueError(f"prev_level {cfg.prev_level}: the teacher {cfg.teacher} was not trained to be told how degraded "
                         "its previous frame is (train it with --prev-frame --prev-degrade 0.5 --prev-level); "
                         "leave --prev-level at 0")
    student = Omni(teacher.cfg)
    if cfg.init_from:
        init, _ = load_world_model(cfg.init_from)
        if init.cfg != teacher.cfg:
            raise ValueError(f"init_from {cfg.init_from}: its model config differs from the teacher's; a student "
                             "trains further only with the teacher it was distilled from (or one of the same shape)")
        student.load_state_dict(init.state_dict())
    else:
        student.load_state_dict(teacher.state_dict())
    if cfg.sink_every:
        mc = student.cfg
        if not (mc.window and mc.sinks):
            raise ValueError(f"sink_every {cfg.sink_every}: the model has no bounded view with sinks "
                             f"(window {mc.window}, sinks {mc.sinks}); leave --sink-every at 0")
        if cfg.rollout_chunks < mc.sinks + mc.window + cfg.sink_every:
            raise ValueError(f"sink_every {cfg.sink_every}: own rollouts of {cfg.rollout_chunks} chunks never refresh "
                             f"the sinks and leave no room for the view; use --rollout-chunks "
                             f"{mc.sinks + mc.window + cfg.sink_every} or more")
        student.cfg = dataclasses.replace(mc, sink_every=cfg.sink_every)
    teacher.to(dev), student.to(dev)
    ema = copy.deepcopy(student).requires_grad_(False)
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective {cfg.objective!r}: use one of {', '.join(OBJECTIVES)}")
    if cfg.objective == "dmd" and cfg.fake_updates < 1:
        raise ValueError("dmd needs fake_updates >= 1: the fake score must follow the student's samples")
    fake = fake_opt = None
    if cfg.objective == "dmd":  # the fake score starts as the teacher (DMD2) and follows the student's samples
        fake = Omni(teacher.cfg)
        fake.load_state_dict(teacher.state_dict())
        fake.to(dev)
        fake_opt = torch.optim.AdamW(fake.parameters(), lr=cfg.fake_lr, betas=(0.9, 0.95), weight_decay=0.0)
    disc = disc_opt = None
    if cfg.objective == "adversarial":
        dcfg = DiscriminatorConfig(latent_channels=teacher.cfg.latent_channels, n_actions=teacher.cfg.n_actions,
                                   width=cfg.disc_width)
        disc = TransitionDiscriminator(dcfg).to(dev)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.0, 0.99), weight_decay=0.0)
    # networks trained beside the student, each saved (with its optimizer) in a sub-folder to resume:
    # (folder, network, optimizer, what its config.json records besides the run's settings and step)
    beside = [(FAKE, fake, fake_opt, {"kind": "dmd_fake_score"})] if fake is not None else []
    if disc is not None:
        beside.append((DISC, disc, disc_opt, {"kind": "adversarial_critic", "model": to_dict(disc.cfg)}))
    cf = teacher.cfg.chunk_frames
    frames = (max(cfg.history, cfg.rollout_chunks) + 1) * cf
    train = LatentClips(cfg.dataset, cfg.latents, "train", frames, seed=cfg.seed, change_share=cfg.change_share)
    heldout = LatentClips(cfg.dataset, cfg.latents, "heldout", frames, seed=cfg.seed + 1)
    if not reads_latents(tmeta, train.ident):
        raise ValueError(f"latent cache {cfg.latents!r} was not made with the teacher's video autoencoder; "
                         "encode the data with the teacher's autoencoders")
    prompts = PromptBank()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    step, metrics = 0, {}
    out.mkdir(parents=True, exist_ok=True)
    if has_run(out):
        for folder, net, net_opt, _ in beside:
            resume_run(out / folder, cfg, net, net, net_opt)
        meta = resume_run(out, cfg, student, ema, opt)
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
                "rollout": {"sampler": "x0", "steps": min(2, max(cfg.levels)), "text_scale": 1.0, "action_scale": 1.0,
                            **({"prev_level": cfg.prev_level} if cfg.prev_level else {})},
                "sampler_rng": train.rng.bit_generator.state, "draw_rng": rng.bit_generator.state,
                "noise_rng": g.get_state().tolist(), **({"budget_ended": True} if spent else {})}

    t0 = t_save = time.perf_counter()
    spent = False  # the time budget ended the run (config.json says so: ``train all`` then moves on)
    while step < cfg.steps:
        own = step >= cfg.self_forcing_from and rng.random() < cfg.self_forcing_share
        dmd = own and cfg.objective == "dmd"
        clip = train.sample(cfg.batch)
        student.eval()  # the rollout and the teacher target run without dropout / grad
        # in bf16 as the student streams (its own rollouts are then the ones it makes live); the
        # targets move by 6e-5 (teacher forced) and 1e-3 (own history) in MSE, against the student's
        # own 0.004-0.035 from the teacher, for ~20% less time on this CPU (docs/log.md, thirtieth session)
        with autocast(dev.type, cfg.bf16):
            *batch, first = _batch(cfg, student, teacher, clip, prompts, rng, g, own, target=not dmd)
        student.train()
        at = schedule_step(step, cfg.steps, time.perf_counter() - t0, budget_s)
        lr = cosine_lr(cfg.lr, cfg.warmup, cfg.steps, at)
        if dmd:
            cond, hist_v, hist_a, _, _, noise, _ = batch
            loss, parts, sample = dmd_loss(student, fake, teacher, cfg, cond, hist_v, hist_a, noise, g)
            optimizer_step(student, opt, loss, lr, ema, cfg.ema, step)
            fake.train()
            for _ in range(cfg.fake_updates):
                fl = fake_score_loss(fake, cfg, cond, hist_v, hist_a, *sample, g)
                optimizer_step(fake, fake_opt, fl, cosine_lr(cfg.fake_lr, cfg.warmup, cfg.steps, at))
            parts["fake"] = fl.item()
        elif own and disc is not None:
            loss, parts = adversarial_step(student, disc, disc_opt, cfg, batch, clip, rng, step)
            optimizer_step(student, opt, loss, lr, ema, cfg.ema, step)
        else:
            loss, parts, x0v = student_loss(student, cfg, *batch, own=own)
            if own:  # the recorded chunk after the rollout's history; logged at weight 0 too, to compare
                n_hist = first + batch[1].shape[1]
                real_next = clip.video[:, n_hist : n_hist + cf].to(x0v.device)
                lm = moment_loss(x0v, real_next, batch[-1])
                ld = detail_loss(x0v, real_next, batch[-1])
                loss = loss + cfg.moment_weight * lm + cfg.detail_weight * ld
                parts["moments"], parts["detail"] = lm.item(), ld.item()
            optimizer_step(student, opt, loss, lr, ema, cfg.ema, step)
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", own=int(own) + int(dmd))
        log.write(json.dumps({"step": step, "loss": loss.item(), "own": own, "dmd": dmd, **parts,
                              "lr": lr}) + "\n")
        spent = budget_s is not None and time.perf_counter() - t0 > budget_s
        last = step == cfg.steps or spent
        if step % cfg.eval_every == 0 or last:
            metrics = {"step": step, **heldout_error(ema, teacher, cfg, eval_clip, prompts)}
            log.write(json.dumps({"eval": metrics}) + "\n")
            log.flush()
        out_of_time = max_seconds is not None and time.perf_counter() - t0 > max_seconds
        if step == cfg.self_forcing_from < cfg.steps:  # the regression-only student, for comparison (log.md)
            (out / REGRESSION).mkdir(exist_ok=True)
            save_run(out / REGRESSION, student, ema, opt, meta())
        if last or out_of_time or time.perf_counter() - t_save > cfg.save_every_s:
            for folder, net, net_opt, record in beside:  # first: a run cut between saves resumes the older student
                (out / folder).mkdir(exist_ok=True)
                save_run(out / folder, net, net, net_opt, {**record, "train": to_dict(cfg), "step": step})
            save_run(out, student, ema, opt, meta())
            t_save = time.perf_counter()
        if out_of_time or last:
            break
    if bar is not None:
        bar.close()
    log.close()
    return metrics
