"""`worldstream train teacher`: the many-step Omni teacher, flow matching with diffusion forcing.

One flat loop: sample latent clips -> pick tasks and noise levels -> loss -> step -> EMA ->
log -> eval -> save. Every chunk gets its own noise level (diffusion forcing, Chen et al. 2024),
so the model learns to make the next chunk from any clean or noisy past; per-modality levels
turn one run into several tasks at once:

    joint         video and audio generated from text and actions (independent levels)
    video|audio   the audio is given clean: video follows the sound (rain heard -> rain seen)
    audio|video   the video is given clean: sound for the picture
    image->world  the first chunk's video is given clean
    continuation  the first chunks are given with a little noise (history corruption), the rest generated

Text and actions are dropped independently (to "" and to the null action) so classifier-free
guidance can scale each. Batches are bucketed by latent size: several resolutions in one run.

Runs single-process, or under ``torchrun`` with DDP (gloo on CPU, nccl on GPU): every rank
draws the same global batch and randomness and keeps its slice, so N processes take exactly
the step one process takes on the same global batch (tested with 2 CPU processes).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..checkpoint import load_json
from ..config import require_counts, to_dict
from ..data.latents import LatentClips, PromptBank
from ..device import autocast
from ..engine.generate import load_world_model, reads_latents
from ..engine.rollout import Conditioning, one_step_guesses
from ..diffusion.flow import (change_loss_weight, interpolate, sample_t_logit_normal, velocity_target,
                              x0_from_velocity)
from ..model.omni import (PREV_NOISE_MAX, Omni, best_move, degrade_at_level, degrade_prev, move_grid, omni_preset,
                          previous_frames)
from .still_runs import StillRuns
from .state import (cosine_lr, has_run, init_weights, optimizer_step, resume_run, save_run, schedule_step,
                    train_device)

TASKS = ("joint", "video|audio", "audio|video", "image->world", "continuation")


@dataclasses.dataclass(frozen=True)
class TeacherTrainConfig:
    dataset: str  # one dataset folder, or several separated by commas (different resolutions train together)
    latents: str = "default"  # name of the latent cache (worldstream encode --name)
    preset: str = "default"  # Omni preset; latent sizes and the action count come from the data
    steps: int = 2000
    batch: int = 8  # global batch (clips), split across DDP ranks
    chunks: int = 8  # chunks per clip
    lr: float = 3e-4
    warmup: int = 200
    ema: float = 0.999
    p_drop_text: float = 0.1
    p_drop_action: float = 0.1
    history_noise: float = 0.1  # largest noise level of given history (continuation)
    task_probs: tuple[float, ...] = (0.5, 0.15, 0.15, 0.1, 0.1)  # in the order of TASKS
    # share of clips drawn around a caption change (``LatentClips``): a prompt the history does not show yet
    change_share: float = 0.0
    audio_weight: float = 0.5
    eval_every: int = 250
    save_every_s: float = 60.0
    bf16: bool = True
    seed: int = 0
    # the attention view to train with (the model keeps it for streaming): 0 = unbounded
    window: int = 0
    sinks: int = 0
    memory_topk: int = 0
    init_from: str = ""  # start from this checkpoint's (EMA) weights, e.g. to fine-tune with a bounded view
    prev_frame: bool = False  # predict around the previous frame (``OmniConfig.prev_frame``)
    prev_shift: bool = False  # ... moved by a learned global shift (``OmniConfig.prev_shift``; shift-consistent latents)
    # ... or moved by a whole number of latent pixels a head names (``OmniConfig.move_reach``; pixel models): each
    # frame is made around the move that best explains it (``best_move``) and the head learns to name that move
    # by cross-entropy, weighted ``move_weight`` beside the frame's loss
    move_reach: int = 0
    move_weight: float = 0.05
    hold_centre: int = 0  # ``OmniConfig.hold_centre``: the centre square (the player) not moved with the ground
    move_near: int = 0  # ``OmniConfig.move_near``: the move head reads the n x n tokens around the player too
    # the noise levels each clip trains at: "diffusion", every chunk its own (diffusion forcing); "next", the
    # chunks before a random one clean and the rest pure noise (t = 1), as a 1-step student streams each frame
    # after clean history (the pixel probe's recipe, bench/pixel_vs_latent.py); the tasks still pick which
    # modality is given
    levels: str = "diffusion"
    # share of clips whose previous frame is degraded as a 1-step stream's own frames are (``degrade_prev``):
    # the model learns to pull a blurred, noisy last frame back to a sharp next one instead of copying the
    # blur, which compounds frame by frame in free-running (log.md, eighteenth session)
    prev_degrade: float = 0.0
    # tell the model each degraded frame's level (``OmniConfig.prev_level``): one level per chunk, drawn
    # uniformly in [0, 1], blur and noise together (``degrade_at_level``); streams degrade their own
    # frames at one fixed level (``RolloutConfig.prev_level``)
    prev_level: bool = False
    # share of clips whose previous frames are a student's one-step guesses of them from the real history
    # before (``engine.rollout.one_step_guesses``) instead of the real frames, the level saying so
    # (``OmniConfig.prev_own``; needs --prev-level): the stream's own loss of detail, not a stand-in
    prev_own: float = 0.0
    prev_own_from: str = ""  # the student that makes those guesses (a prev-frame student of the same data)
    prev_own_chain: bool = False  # the guesses chain through the previous frame (``one_step_guesses(chain=True)``)
    # rows of every global batch that are the model's own free runs of a still scene, their target the scene
    # (``train.still_runs``: self-forcing where the answer is known), and the most frames a run goes on
    still_rows: int = 0
    still_depth: int = 192
    samples: bool = True  # write a sample video (real history, then generated) at every evaluation
    # torch.compile the blocks' dense parts (``Omni.compile_dense``): 1.82 -> 1.47 s a step at batch 8 x 8
    # chunks on the 2-core CPU after ~60 s of compiling (log.md, tenth session); off for tiny runs
    compile: bool = False

    def __post_init__(self):
        require_counts(self, positive=("steps", "batch", "chunks", "eval_every"), nonnegative=("lr", "warmup"))
        if self.levels not in ("diffusion", "next"):
            raise ValueError(f"levels {self.levels!r}: use diffusion or next")
        if self.levels == "next" and self.chunks < 2:
            raise ValueError("levels next: a clip needs 2 or more chunks (clean history, then the next one)")
        if self.move_reach and not self.prev_frame:
            raise ValueError(f"move_reach {self.move_reach}: moving the previous frame needs --prev-frame")
        if (self.hold_centre or self.move_near) and not self.move_reach:
            raise ValueError("--hold-centre and --move-near belong to a whole-pixel move: give --move-reach too")
        if self.still_rows:
            if self.still_rows < 0 or self.still_rows >= self.batch:
                raise ValueError(f"still_rows {self.still_rows}: give fewer rows than the batch ({self.batch})")
            if self.levels != "next" or not self.prev_frame:
                raise ValueError("--still-rows: the runs are streamed one step a frame around the previous one; "
                                 "train with --levels next and --prev-frame")
            if self.prev_own > 0 or self.prev_degrade > 0:
                raise ValueError("--still-rows: the runs' previous frames are the model's own already; "
                                 "drop --prev-own and --prev-degrade")
            if self.still_depth < 1:
                raise ValueError(f"still_depth {self.still_depth}: give 1 or more frames")


def model_config(cfg: TeacherTrainConfig, clips: LatentClips):
    item = clips.items[0]
    n_actions = len(clips.ds.manifest["actions"]["names"])
    audio = item["audio"]
    prev_std = 0.0
    if cfg.prev_frame:  # a run on the latents it starts from keeps its preconditioning; others measure their data
        start = load_json(Path(cfg.init_from) / "config.json") if cfg.init_from else {}
        same = start.get("train", {}).get("latents", cfg.latents) == cfg.latents
        prev_std = (same and start.get("model", {}).get("prev_std")) or round(clips.frame_change_std(), 4)
    return dataclasses.replace(omni_preset(cfg.preset), latent_channels=item["video"].shape[1],
                               audio_channels=audio.shape[1] if audio is not None else 0,
                               audio_tokens_per_frame=clips.tokens_per_frame or 1, n_actions=max(1, n_actions),
                               window=cfg.window, sinks=cfg.sinks, memory_topk=cfg.memory_topk,
                               prev_frame=cfg.prev_frame, prev_std=prev_std, prev_level=cfg.prev_level,
                               prev_own=cfg.prev_own > 0, prev_shift=cfg.prev_shift, move_reach=cfg.move_reach,
                               hold_centre=cfg.hold_centre, move_near=cfg.move_near)


def draw_tasks(cfg: TeacherTrainConfig, B: int, K: int, video_shape: tuple | None = None,
               audio_shape: tuple | None = None) -> dict[str, torch.Tensor]:
    """Noise levels per chunk and modality, dropout flags and the noise itself, for the global
    batch (global RNG), so that DDP ranks can each keep their slice of the same draw."""
    tv = sample_t_logit_normal((B, K))
    ta = sample_t_logit_normal((B, K))
    task = torch.multinomial(torch.tensor(cfg.task_probs), B, replacement=True)
    split = torch.randint(1, max(2, K), (B,)) if cfg.levels == "next" else None
    given = torch.rand(B, K) * cfg.history_noise
    n_hist = torch.randint(1, max(2, K), (B,))
    hist = torch.arange(K)[None] < n_hist[:, None]
    tv = torch.where((task == 2)[:, None], torch.zeros_like(tv), tv)  # audio|video: video clean
    ta = torch.where((task == 1)[:, None], torch.zeros_like(ta), ta)  # video|audio: audio clean
    first = torch.zeros(B, K, dtype=torch.bool)
    first[:, 0] = True
    tv = torch.where((task == 3)[:, None] & first, torch.zeros_like(tv), tv)  # image->world
    cont = (task == 4)[:, None] & hist
    tv = torch.where(cont, given, tv)
    ta = torch.where(cont, given, ta)
    if cfg.levels == "next":  # history clean (a little noisy: continuation), then noise from the split on, unless given
        after = torch.arange(K)[None] >= split[:, None]
        before = torch.where(cont, given, torch.zeros_like(given))
        tv = torch.where(after, (task != 2).float()[:, None].expand(B, K), before)
        ta = torch.where(after, (task != 1).float()[:, None].expand(B, K), before)
    out = {"tv": tv, "ta": ta, "task": task, "drop_text": torch.rand(B) < cfg.p_drop_text,
           "drop_action": torch.rand(B) < cfg.p_drop_action}
    if video_shape is not None:
        out["eps_v"] = torch.randn(video_shape)
        if cfg.prev_frame and cfg.prev_degrade > 0:
            on = (torch.rand(B) < cfg.prev_degrade).float()
            if cfg.prev_level:
                level = on[:, None] * torch.rand(B, K)
                level[:, 0] = 0.0  # the first chunk's previous frame is zeros, not degraded
                out["prev_level"] = level
            else:
                out["prev_blur"] = on * torch.rand(B)
                out["prev_noise"] = on * torch.rand(B) * PREV_NOISE_MAX
            out["eps_p"] = torch.randn((B, K) + tuple(video_shape[2:]))
        if cfg.prev_own > 0:
            out["prev_own"] = torch.rand(B) < cfg.prev_own
    if audio_shape is not None:
        out["eps_a"] = torch.randn(audio_shape)
    return out


def teacher_loss(model, cfg: TeacherTrainConfig, clip, draws, prompts: PromptBank,
                 guesses: torch.Tensor | None = None, return_x0: bool = False) -> tuple:
    """``guesses`` (B, F, C, h, w): a student's one-step guesses of the clip's frames (``own_guesses``),
    the previous frames of the rows ``draws["prev_own"]`` picks. ``return_x0``: also return the frames
    the pass makes (B, F, C, h, w), detached: at t = 1 exactly what a one-step stream would make."""
    mc = model.module.cfg if hasattr(model, "module") else model.cfg
    dev = next(model.parameters()).device  # batches are drawn on the CPU (the same draws on any device), then moved
    clip = clip.to(dev)
    draws = {k: v.to(dev) for k, v in draws.items()}
    x0v, x0a = clip.video, clip.audio
    B, Fr = x0v.shape[:2]
    cf = mc.chunk_frames
    tv_f = draws["tv"].repeat_interleave(cf, dim=1)  # (B, F)
    eps_v = draws["eps_v"]
    xv = interpolate(x0v, eps_v, tv_f[..., None, None, None])
    actions = torch.where(draws["drop_action"][:, None], -1, clip.actions)
    caps = ["" if d else c for c, d in zip(clip.captions, draws["drop_text"].tolist())]
    text, mask, pooled = (t.to(dev) for t in prompts.batch(caps))
    kw = {}
    if x0a is not None:
        tpf = mc.audio_tokens_per_frame
        ta_t = draws["ta"].repeat_interleave(cf * tpf, dim=1)  # (B, F * tpf)
        eps_a = draws["eps_a"]
        kw = dict(audio=interpolate(x0a, eps_a, ta_t[..., None]), t_audio=draws["ta"])
    prev = previous_frames(x0v, cf) if mc.prev_frame else None
    if prev is not None and "prev_blur" in draws:
        prev = degrade_prev(prev, cf, draws["prev_blur"], draws["prev_noise"], draws["eps_p"], mc.prev_std)
    level = draws.get("prev_level")
    if prev is not None and level is not None:
        prev = degrade_at_level(prev, cf, level, draws["eps_p"], mc.prev_std)
    if prev is not None and mc.prev_own:
        own = torch.zeros(B, Fr // cf, device=dev)
        if "prev_own" in draws and draws["prev_own"].any():
            if guesses is None:
                raise ValueError("prev_own: pass the student's guesses (own_guesses) for the rows it picks")
            # chunk 1's previous frame is chunk 0's, which is real in a guess too: own from chunk 2 on
            own[:, 2:] = draws["prev_own"].float()[:, None]
            on = draws["prev_own"][:, None, None, None, None]
            prev = torch.where(on, previous_frames(guesses.to(dev, prev.dtype), cf), prev)
        level = own
    if mc.move_reach:  # each frame made around the whole-pixel move that best explains it; the head learns it
        made = (tv_f > 0).clone()  # (only frames that are made, after a real one: the first has zeros before it)
        made[:, :cf] = False
        right = torch.full((B, Fr), (2 * mc.move_reach + 1) ** 2 // 2, device=dev)  # (no move elsewhere)
        right[made] = best_move(prev[made], x0v[made], mc.move_reach, mc.hold_centre)
        kw["move"] = move_grid(mc.move_reach).to(dev)[right]
    with autocast(dev.type, cfg.bf16):
        pv, pa, logits = model(video=xv, t_video=draws["tv"], actions=actions, text=text, text_mask=mask,
                               text_pooled=pooled, prev=prev, prev_level=level, return_moves=True, **kw)
    # Given (clean) parts carry no loss. Normalise by the element count, not by the unmasked count,
    # so the mean over DDP ranks of per-rank losses is exactly the loss of the global batch.
    wv = (tv_f > 0).float()
    if mc.prev_frame:  # the same weight on the network's output at every level (``change_loss_weight``)
        wv = wv * change_loss_weight(tv_f, mc.prev_std)
    wv = wv[..., None, None, None]
    lv = ((pv.float() - velocity_target(x0v, eps_v)) ** 2 * wv).mean()
    parts = {"video": lv.item()}
    loss = lv
    if logits is not None:  # on the frames that are made
        on = made.float()
        ce = F.cross_entropy(logits.flatten(0, 1).float(), right.flatten(), reduction="none").view(B, Fr)
        loss = loss + cfg.move_weight * (ce * on).sum() / (B * Fr)
        parts["move_named"] = ((logits.argmax(-1) == right).float() * on).sum().item() / max(on.sum().item(), 1.0)
    if x0a is not None:
        wa = (ta_t > 0).float()[..., None]
        la = ((pa.float() - velocity_target(x0a, eps_a)) ** 2 * wa).mean()
        loss = loss + cfg.audio_weight * la
        parts["audio"] = la.item()
    if return_x0:
        return loss, parts, x0_from_velocity(xv, pv.detach().float(), tv_f[..., None, None, None])
    return loss, parts


@torch.no_grad()
def own_guesses(student, clip, draws, prompts: PromptBank, generator: torch.Generator,
                chain: bool = False, bf16: bool = True) -> torch.Tensor | None:
    """The student's one-step guesses of the clip's frames (``one_step_guesses``) for the rows
    ``draws["prev_own"]`` picks (the others keep their real frames); None when it picks none."""
    rows = draws.get("prev_own")
    if rows is None or not rows.any():
        return None
    dev = next(student.parameters()).device
    idx = rows.nonzero()[:, 0]
    text, mask, pooled = prompts.batch([clip.captions[i] for i in idx.tolist()])
    cond = Conditioning(text, mask, pooled, clip.actions[idx]).to(dev)
    v = clip.video[idx].to(dev)
    a = None if clip.audio is None else clip.audio[idx].to(dev)
    with autocast(dev.type, bf16):
        g = one_step_guesses(student, cond, v, a, 1, generator, chain=chain)
    out = clip.video.clone().to(dev)
    out[idx] = g.to(out.dtype)
    return out


def _lr(cfg: TeacherTrainConfig, step: int) -> float:
    return cosine_lr(cfg.lr, cfg.warmup, cfg.steps, step)


def _slice(clip, draws, rank: int, world: int):
    n = clip.video.shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    clip = dataclasses.replace(clip, video=clip.video[sl], audio=None if clip.audio is None else clip.audio[sl],
                               actions=clip.actions[sl], captions=clip.captions[sl], start=clip.start[sl])
    return clip, {k: v[sl] for k, v in draws.items()}


@torch.no_grad()
def heldout_loss(model, cfg: TeacherTrainConfig, clip, prompts: PromptBank) -> float:
    """Velocity MSE on fixed held-out clips at fixed noise (t = 0.5 everywhere, fixed eps)."""
    g = torch.get_rng_state()
    torch.manual_seed(1234)
    B, K = clip.video.shape[0], clip.video.shape[1] // model.cfg.chunk_frames
    draws = {"tv": torch.full((B, K), 0.5), "ta": torch.full((B, K), 0.5), "task": torch.zeros(B, dtype=torch.long),
             "drop_text": torch.zeros(B, dtype=torch.bool), "drop_action": torch.zeros(B, dtype=torch.bool),
             "eps_v": torch.randn(clip.video.shape)}
    if clip.audio is not None:
        draws["eps_a"] = torch.randn(clip.audio.shape)
    model.eval()
    loss, _ = teacher_loss(model, dataclasses.replace(cfg, bf16=False), clip, draws, prompts)
    torch.set_rng_state(g)
    return loss.item()


@torch.no_grad()
def write_sample(model, clip, prompts: PromptBank, ident: dict, fps: int, path: Path, history: int = 2,
                 frames: int = 24) -> None:
    """A sample video: real history of a held-out clip, then ``frames`` generated frames (Heun,
    6 steps, guidance 1.5 / 1.5: stronger prompt guidance washes colours out over a few
    seconds), decoded with the run's autoencoders, sound included."""
    from ..data.video import write_preview_mp4
    from ..engine.generate import load_autoencoders
    from ..engine.rollout import Conditioning, RolloutConfig, generate_chunk, make_branches, prefill

    model.eval()
    vae, aae = load_autoencoders({"latents": ident})
    cf = model.cfg.chunk_frames
    text, mask, pooled = prompts.batch(clip.captions[:1])
    hv = clip.video[:1, : history * cf]
    ha = None if clip.audio is None else clip.audio[:1, : history * cf * model.cfg.audio_tokens_per_frame]
    n = frames // cf
    acts = torch.cat([clip.actions[:1, : history * cf], clip.actions[:1, history * cf :][:, :1].repeat(1, n * cf)], 1)
    cond = Conditioning(text, mask, pooled, acts)
    rcfg = RolloutConfig(sampler="heun", steps=6, text_scale=1.5, action_scale=1.5)
    branches = make_branches(model, rcfg)
    prefill(model, branches, cond, hv, ha)
    g = torch.Generator().manual_seed(0)
    vs, as_ = [hv], [] if ha is None else [ha]
    for c in range(n):
        v, a = generate_chunk(model, branches, rcfg, cond, history + c, tuple(hv.shape[2:]), g)
        vs.append(v)
        if a is not None:
            as_.append(a)
    video = vae.decode(torch.cat([v.cpu() for v in vs], 1), {}).clamp(0, 1)[0]  # (the autoencoders load on the CPU)
    rgb = [(f.permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8") for f in video]
    pcm = (aae.decode(torch.cat([a.cpu() for a in as_], 1), {}).clamp(-1, 1)[0].numpy()
           if aae is not None and as_ else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_preview_mp4(path, rgb, pcm, fps, aae.cfg.sample_rate if aae is not None else 24000,
                      scale=max(1, 256 // max(rgb[0].shape[:2])))


def train_teacher(cfg: TeacherTrainConfig, out: str | Path, progress: bool = True,
                  max_seconds: float | None = None, device: str = "cpu",
                  budget_s: float | None = None) -> dict[str, Any]:
    """``device`` is where the model trains (batches are drawn on the CPU and moved; the saved run is
    the same on any device, so a run can resume on another). ``budget_s`` ends the run after that
    long with its learning rate decayed to the end (``schedule_step``); ``max_seconds`` only pauses it."""
    out = Path(out)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = train_device(device, world)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if cfg.batch % world:
        raise ValueError(f"global batch {cfg.batch} must be divisible by the {world} processes")
    if cfg.prev_level and cfg.prev_degrade <= 0 and cfg.prev_own <= 0:
        raise ValueError("prev_level: the model learns degradation levels from degraded previous frames; "
                         "set --prev-degrade (e.g. 0.5) or --prev-own, or drop --prev-level")
    if cfg.prev_own > 0 and not (cfg.prev_level and cfg.prev_own_from):
        raise ValueError(f"prev_own {cfg.prev_own}: the model hears whose previous frame it is through its level, and a "
                         "student makes the guesses; add --prev-level and --prev-own-from STUDENT")
    if cfg.prev_own_chain and cfg.prev_own <= 0:
        raise ValueError("prev_own_chain chains the student's guesses of previous frames: set --prev-own (e.g. 0.5)")
    if cfg.prev_own > 0 and cfg.prev_degrade > 0:
        raise ValueError("prev_own and prev_degrade give the level two meanings; use one of them")
    if cfg.prev_degrade > 0 and not cfg.prev_frame:
        raise ValueError(f"prev_degrade {cfg.prev_degrade}: degrading the previous frame needs a prev-frame model; "
                         "add --prev-frame, or drop --prev-degrade")
    torch.manual_seed(cfg.seed)  # same on every rank: same init, same global draws
    prompts = PromptBank()
    train = LatentClips(cfg.dataset, cfg.latents, "train", cfg.chunks, seed=cfg.seed, change_share=cfg.change_share)
    heldout = LatentClips(cfg.dataset, cfg.latents, "heldout", cfg.chunks, seed=cfg.seed + 1)
    mcfg = model_config(cfg, train)
    model = Omni(mcfg)
    if cfg.init_from:
        init_weights(model, cfg.init_from, "teacher")
    model.to(dev)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
    step, metrics = 0, {}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if has_run(out):
        meta = resume_run(out, cfg, model, ema, opt)
        train.rng.bit_generator.state = meta["sampler_rng"]
        step, metrics = int(meta["step"]), meta.get("metrics", {})
    if cfg.compile:
        model.compile_dense()  # the EMA copy (evaluation, samples, the saved weights) stays eager
    net = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
           if world > 1 else model)
    eval_clip = heldout.fixed(min(4, cfg.batch))
    latents_ident = train.ident
    guesser = None
    if cfg.prev_own > 0:
        guesser, gmeta = load_world_model(cfg.prev_own_from)
        if not guesser.cfg.prev_frame or guesser.cfg.latent_channels != mcfg.latent_channels:
            raise ValueError(f"prev_own_from {cfg.prev_own_from}: needs a prev-frame student of this data's latents")
        if not reads_latents(gmeta, latents_ident):
            raise ValueError(f"prev_own_from {cfg.prev_own_from}: its video autoencoder is not the one of these latents")
        guesser.requires_grad_(False).eval().to(dev)
    still = None
    if cfg.still_rows:
        names = list(train.ds.manifest["actions"]["names"])
        if "idle" not in names:
            raise ValueError(f"--still-rows: the runs hold every key idle, but this data's actions ({', '.join(names)}) "
                             "have no 'idle'")
        still = StillRuns(cfg.still_rows, cfg.chunks // mcfg.chunk_frames, mcfg.chunk_frames, cfg.still_depth,
                          names.index("idle"), cfg.seed)
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc=f"train teacher ({cfg.preset})", unit="step")
    t0 = t_save = time.perf_counter()
    while step < cfg.steps:
        net.train()
        clip = train.sample(cfg.batch)  # the global batch, identical on every rank
        draws = draw_tasks(cfg, cfg.batch, cfg.chunks // mcfg.chunk_frames, tuple(clip.video.shape),
                           None if clip.audio is None else tuple(clip.audio.shape))
        if still is not None:  # the last rows: the model's own runs of still scenes (global, like the draws)
            clip, draws = still.rows(clip), still.draws(draws)
        clip, draws = _slice(clip, draws, rank, world)
        guesses = None
        if guesser is not None:  # the same guesses after a resume: seeded by step and rank
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + rank)
            guesses = own_guesses(guesser, clip, draws, prompts, gen, cfg.prev_own_chain, cfg.bf16)
        loss, parts, *made = teacher_loss(net, cfg, clip, draws, prompts, guesses, return_x0=still is not None)
        if still is not None:  # each run's next own frame: the last chunk the pass made of its row
            made = made[0][:, -mcfg.chunk_frames:].contiguous()
            if world > 1:
                every = [torch.empty_like(made) for _ in range(world)]
                dist.all_gather(every, made)
                made = torch.cat(every)
            parts["still_mse"] = still.advance(made[-cfg.still_rows:])
        lr = _lr(cfg, schedule_step(step, cfg.steps, time.perf_counter() - t0, budget_s))
        optimizer_step(model, opt, loss, lr, ema, cfg.ema, step)
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v:.3f}" for k, v in parts.items()})
        if log is not None and step % 25 == 0:
            log.write(json.dumps({"step": step, "loss": loss.item(), **parts, "lr": lr}) + "\n")
        spent = budget_s is not None and time.perf_counter() - t0 > budget_s
        last = step == cfg.steps or spent
        if rank == 0 and (step % cfg.eval_every == 0 or last):
            metrics = {"step": step, "heldout_velocity_mse": heldout_loss(ema, cfg, eval_clip, prompts)}
            log.write(json.dumps({"eval": metrics}) + "\n")
            if cfg.samples:
                write_sample(ema, eval_clip, prompts, latents_ident, train.ds.manifest["fps"],
                             out / "samples" / f"step_{step:06d}.mp4")
            log.flush()
            if bar is not None:
                bar.write(f"step {step}: held-out velocity MSE {metrics['heldout_velocity_mse']:.4f}")
        out_of_time = max_seconds is not None and time.perf_counter() - t0 > max_seconds
        if rank == 0 and (last or out_of_time or time.perf_counter() - t_save > cfg.save_every_s):
            save_run(out, model, ema, opt, {"kind": "omni_teacher", "model": to_dict(mcfg), "train": to_dict(cfg),
                                            "step": step, "metrics": metrics, "latents": latents_ident,
                                            "actions": train.ds.manifest["actions"], "fps": train.ds.manifest["fps"],
                                            "latent_shape": list(train.items[0]["video"].shape[1:]),
                                            "latent_shapes": [list(k) for k in sorted(train.buckets)],
                                            "sampler_rng": train.rng.bit_generator.state,
                                            **({"budget_ended": True} if spent else {})})
            t_save = time.perf_counter()
        if out_of_time or last:
            break
    if bar is not None:
        bar.close()
    if log is not None:
        log.close()
    return metrics


def _torchrun_main() -> None:
    """Entry for ``torchrun -m worldstream.train.teacher --data ... --out ...`` (same flags as the CLI)."""
    from ..cli import build_parser

    import sys

    args = build_parser().parse_args(["train", "teacher", *sys.argv[1:]])
    args.fn(args)
    if dist.is_initialized():  # workers sometimes die at exit under gloo: leave cleanly
        dist.barrier()
        dist.destroy_process_group()
        os._exit(0)


if __name__ == "__main__":
    _torchrun_main()
