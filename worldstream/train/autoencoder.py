"""`worldstream train autoencoder`: the video or audio autoencoder, resumable.

One flat loop in reading order: sample clips -> loss -> step -> EMA -> log -> eval -> save.
Re-running the same command resumes from the last save (model, EMA, optimizer, step, RNG
state) and stops when ``steps`` is reached; re-running with a larger ``--steps`` extends the run. The checkpoint folder holds::

    config.json              kind, model config, train config, step, metrics, RNG state of the sampler
    model.safetensors        EMA weights + latent normalisation: what `load_autoencoder` reads
    train_state.safetensors  raw weights, optimizer moments, torch RNG: only for resuming
    log.jsonl                one line per log/eval
    discriminator/           with ``adv_weight``: the patch critic and its optimizer, to resume

``decoder_only`` fine-tunes the video decoder of an autoencoder (``init_from``) and nothing else:
the encoder and the latent normalisation stay bit for bit, so every latent dataset and every world
model trained on them stay valid, and ``worldstream export --video-decoder`` can put the new
decoder into a world model's bundle. With ``adv_weight`` it is the decoder half of the VQGAN /
latent-diffusion recipe (a patch discriminator beside L1 + SSIM, ``tokenizers.patch_gan``): the
L1 + SSIM decoder returns the overworld's texture about 4x softer than it was given. With
``own_from`` it also learns to read a world model's own latents, which drift in ways the encoder's never
do, from rollouts paired with the recorded frames (``train.own_latents``).
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
import torch.nn.functional as F

from ..config import require_counts, to_dict
from ..data.loader import ClipSampler
from ..device import autocast
from ..tokenizers.audio_ae import AudioAE, audio_ae_preset
from ..tokenizers.losses import multi_res_stft_loss, psnr, si_snr, spectral_distance, ssim
from ..tokenizers.patch_gan import PatchDiscriminator, PatchDiscriminatorConfig, adaptive_weight, discriminator_hinge
from ..tokenizers.video_ae import VideoAE, video_ae_preset
from .state import cosine_lr, has_run, init_weights, optimizer_step, resume_run, save_run


@dataclasses.dataclass(frozen=True)
class AETrainConfig:
    """One autoencoder training run."""

    kind: str  # "video" or "audio"
    preset: str  # model preset: video tiny/f8/f16/f8t4, audio tiny/default
    dataset: str  # dataset folder (train split to train, heldout split to evaluate)
    steps: int = 4000
    batch: int = 4  # clips per step
    clip_frames: int = 4  # frames per clip (a multiple of the temporal factor)
    crop: int = 64  # video: train on random crops this size (fully convolutional; eval uses full frames)
    lr: float = 5e-4
    warmup: int = 100
    ema: float = 0.998
    ssim_weight: float = 0.3  # video: weight of (1 - SSIM) next to L1
    eval_every: int = 500
    save_every_s: float = 60.0  # checkpoint at least this often (wall clock)
    eval_clips: int = 8
    bf16: bool = True  # autocast the forward pass (AMX on CPU; checked against fp32 at eval)
    seed: int = 0
    # video: weight of the shift-consistency loss (0 = off). The f8 latent of a frame moved by 1 px
    # is 32% of the latent variance away from the unmoved latent moved by 1/8 cell, and by 4 px 83%,
    # about as far as an unrelated frame's (docs/tokenizers.md, fourteenth session), while the game scrolls 1-2 px a frame, so a
    # world model would have to learn the encoder's aliasing for every sub-latent-pixel phase. With
    # this loss a crop moved by (dy, dx) < 8 px must encode to the unmoved latent moved by
    # (dy, dx) / 8 latent pixels with bilinear interpolation, and that moved latent must decode to
    # the moved crop: translation equivariance in the spirit of EQ-VAE (Kouzelis et al. 2025).
    shift_weight: float = 0.0
    init_from: str = ""  # start from this autoencoder run's (EMA) weights, e.g. to add the shift loss
    # video: train the decoder alone (from ``init_from``); the encoder and latent normalisation are kept
    # exactly, so latents and the world models trained on them stay valid (module docstring)
    decoder_only: bool = False
    # video: weight of the patch discriminator's hinge push on decoded frames, on top of VQGAN's
    # gradient balance against L1 + SSIM (``tokenizers.patch_gan``); 0 = off
    adv_weight: float = 0.0
    disc_lr: float = 2e-4  # adversarial: the patch critic's learning rate
    # decoder-only: share of clips whose latents are first softened toward their 3x3 latent-pixel mean by a
    # random amount in [0, 1] (``soften_latents``): a world model's own latents are softer than the
    # encoder's, and the decoder is asked to return the real frame from them anyway
    latent_blur: float = 0.0
    # decoder-only: a world model (run, bundle or "default") whose own rollouts' latents the decoder also
    # learns to read, each paired with the recorded frames at the same times (``train.own_latents``)
    own_from: str = ""
    own_share: float = 0.0  # share of steps that decode the world model's own latents instead of the encoder's
    own_latents: str = "default"  # the latent cache of ``dataset`` its rollouts start from
    own_clips: int = 512  # own rollouts in the pool (made once, saved in the run folder)
    own_frames: int = 16  # frames per own rollout, the recorded first one included
    # > 1: own latents are paired with the recorded frames only at this coarser scale (L1 of k x k means),
    # the critic (``adv_weight``) judging their detail; 1: L1 + SSIM at full resolution, as for the encoder's
    own_lowpass: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("video", "audio"):
            raise ValueError(f"kind must be video or audio, got {self.kind!r}")
        if self.shift_weight < 0 or (self.shift_weight and self.kind != "video"):
            raise ValueError(f"shift_weight {self.shift_weight}: a weight >= 0, for the video autoencoder only")
        if (self.decoder_only or self.adv_weight) and self.kind != "video":
            raise ValueError("--decoder-only and --adv-weight are for the video autoencoder only")
        if self.decoder_only and not self.init_from:
            raise ValueError("--decoder-only fine-tunes a trained autoencoder's decoder: name it with --init-from")
        if self.latent_blur and not self.decoder_only:
            raise ValueError("--latent-blur trains the decoder on softened latents: with --decoder-only only")
        if not 0 <= self.latent_blur <= 1:
            raise ValueError(f"latent_blur {self.latent_blur}: a share of clips in [0, 1]")
        if (self.own_from or self.own_share) and not (self.decoder_only and self.own_from and 0 < self.own_share <= 1):
            raise ValueError("--own-from MODEL and --own-share S (0 < S <= 1) go together, with --decoder-only: the "
                             "decoder learns to read that world model's latents")
        if self.own_lowpass < 1 or (self.own_lowpass > 1 and not (self.own_from and self.adv_weight)):
            raise ValueError(f"--own-lowpass {self.own_lowpass}: a factor >= 1; above 1 it pairs only the coarse picture "
                             "of --own-from's latents and leaves their detail to the critic: needs --adv-weight")
        if self.shift_weight and (self.decoder_only or self.adv_weight):
            raise ValueError("the shift loss trains the encoder: not with --decoder-only or --adv-weight")
        require_counts(self, positive=("steps", "batch", "clip_frames", "eval_every", "own_clips", "own_frames"),
                       nonnegative=("lr", "warmup", "crop", "adv_weight", "disc_lr"))


DISC = "discriminator"  # sub-folder: the patch critic and its optimizer (to resume)
OWN = "own_pool"  # sub-folder: the world model's own rollouts (``own_from``), made once
OWN_HELDOUT = "own_pool_heldout"  # ... from held-out episodes, for the evaluation
OWN_EVAL_CLIPS = 16


def _build(cfg: AETrainConfig) -> torch.nn.Module:
    return VideoAE(video_ae_preset(cfg.preset)) if cfg.kind == "video" else AudioAE(audio_ae_preset(cfg.preset))


def _batch(cfg: AETrainConfig, sampler: ClipSampler, n: int, fixed: bool = False, align: int = 16) -> torch.Tensor:
    """Training clips (random crops); with the shift loss each crop is ``align`` px larger, the
    margin the moved copy is cut from (``_loss``)."""
    frames, audio = sampler.fixed(n) if fixed else sampler.sample(n)
    if cfg.kind == "video":
        size = cfg.crop + (align if cfg.shift_weight and not fixed else 0)
        if not fixed and cfg.crop and size <= min(frames.shape[2:4]):
            # a random crop on the latent grid: 4x cheaper steps at 64 px, so far more steps per hour
            # (measured: docs/log.md); eval and stats use full frames
            H, W = frames.shape[2:4]
            oy = int(sampler.rng.integers((H - size) // align + 1)) * align
            ox = int(sampler.rng.integers((W - size) // align + 1)) * align
            frames = frames[:, :, oy : oy + size, ox : ox + size]
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 1, 4, 2, 3).float() / 255.0  # (B, T, 3, H, W)
    return torch.from_numpy(audio)  # (B, L)


def shift_latent(z: torch.Tensor, fy: float, fx: float) -> torch.Tensor:
    """``z`` (..., h, w) moved by fractions fy, fx in [0, 1) of a latent pixel toward the origin,
    bilinear: (..., h - 1, w - 1), cell (i, j) read at (i + fy, j + fx)."""
    a, b = z[..., :-1, :-1], z[..., :-1, 1:]
    c, d = z[..., 1:, :-1], z[..., 1:, 1:]
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)


def shift_residual(z0: torch.Tensor, z1: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of ``z1`` (the latent of the moved frames) from ``zt`` (``z0``, the
    unmoved latent, moved the same by ``shift_latent``), away from the zero-padded border, as a
    share of ``z0``'s variance: the shift loss and ``latent_shift_error`` alike."""
    return (z1[..., 1:-1, 1:-1] - zt[..., 1:, 1:]).pow(2).mean() / z0.detach().var().clamp_min(1e-6)


def _loss(cfg: AETrainConfig, model, x: torch.Tensor, disc: PatchDiscriminator | None = None,
          own: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
    """(loss, logged parts, the decoded frames (N, 3, H, W) for the critic's step, or None without one).
    ``own``: a world model's normalised latents of the frames ``x``, decoded in place of the encoder's."""
    mc = model.cfg
    parts: dict[str, float] = {}
    moved = None
    if cfg.kind == "video" and cfg.shift_weight:
        s = mc.spatial
        ch, cw = x.shape[-2] - s, x.shape[-1] - s  # the crop, cut from a clip with an s-px margin (``_batch``)
        if min(ch, cw) < 4 * s:
            raise ValueError(f"the shift loss needs crops of at least {4 * s} px (4 latent pixels) plus a {s} px "
                             f"margin; got {tuple(x.shape[-2:])}: raise --crop or use larger frames")
        dy, dx = (int(v) for v in torch.randint(0, s, (2,)))
        if dy == dx == 0:
            dx = 1
        moved = (dy, dx)
        x = torch.cat([x[..., :ch, :cw], x[..., dy : dy + ch, dx : dx + cw]])  # unmoved and moved, one pass
    with autocast("cpu", cfg.bf16):
        if own is not None:  # (decoder-only; no latent noise: a world model's latents bring their own)
            z = own * model.latent_std[:, None, None] + model.latent_mean[:, None, None]
            y = model.decode_raw(z)
        elif cfg.latent_blur:  # (decoder-only: the encoder has no gradient to give)
            z = soften_latents(model.encode_raw(x), cfg.latent_blur)
            sigma = mc.latent_noise * torch.rand(z.shape[0], 1, 1, 1, 1) * z.detach().float().std()
            y = model.decode_raw(z + sigma * torch.randn_like(z))  # the noise ``VideoAE.forward`` adds
        else:
            y, z = model(x, noise=mc.latent_noise)
    y, z = y.float(), z.float()
    reg = mc.latent_l2 * z.pow(2).mean()
    if cfg.kind == "video":
        if own is not None and cfg.own_lowpass > 1:
            # only the coarse picture is paired: the own latent's fine detail is the model's guess, and the truth's
            # fine detail after it only asks for their mean, a blur (measured: log.md); the critic asks for texture
            k = cfg.own_lowpass
            l1 = F.l1_loss(F.avg_pool2d(y.flatten(0, 1), k), F.avg_pool2d(x.flatten(0, 1), k))
            loss = l1 + reg
            parts.update(l1_coarse=l1.item())
        else:
            l1 = F.l1_loss(y, x)
            s = ssim(y.flatten(0, 1).clamp(0, 1), x.flatten(0, 1))
            loss = l1 + cfg.ssim_weight * (1 - s) + reg
            parts.update(l1=l1.item(), ssim=s.item())
        if disc is not None:  # the decoder is also asked for frames the patch critic takes for real
            frames = y.flatten(0, 1)
            with autocast("cpu", cfg.bf16):
                gen = -disc(frames).float().mean()
            lam = adaptive_weight(loss, gen, model.dec_out.conv.weight)
            loss = loss + cfg.adv_weight * lam * gen
            parts.update(gen=gen.item(), adv_lambda=lam.item())
            return loss, parts, frames
        if moved is not None:
            z0, z1 = z.chunk(2)
            zt = shift_latent(z0, moved[0] / mc.spatial, moved[1] / mc.spatial)
            lat = shift_residual(z0, z1, zt)  # encoder side: the moved crop's latent is the moved latent
            # decoder side: the moved latent decodes to the moved crop (EQ-VAE), border excluded
            with autocast("cpu", cfg.bf16):
                yt = model.decode_raw(zt).float()
            e = mc.spatial
            dec = F.l1_loss(yt[..., e:-e, e:-e], x.chunk(2)[1][..., e : -2 * e, e : -2 * e])
            loss = loss + cfg.shift_weight * lat + dec
            parts.update(shift=lat.item(), shift_l1=dec.item())
        return loss, parts, None
    stft = multi_res_stft_loss(y, x)
    l1 = F.l1_loss(y, x)
    loss = stft + l1 + reg
    return loss, {"stft": stft.item(), "l1": l1.item()}, None


@torch.no_grad()
def latent_shift_error(model, x: torch.Tensor, shifts: tuple[int, ...] = (1, 2, 4)) -> dict[int, float]:
    """How far the latent of frames moved by s px (right and down together) is from the unmoved
    latent moved by s / spatial latent pixels (bilinear), as a share of the latent variance, away
    from the border: 0 for a perfectly translation-equivariant encoder, ~1 for one whose latent
    of a moved frame is unrelated to the unmoved one."""
    e = model.cfg.spatial
    H, W = x.shape[-2:]
    z0 = model.encode_raw(x[..., : H - e, : W - e])
    out = {}
    for s in shifts:
        z1 = model.encode_raw(x[..., s : H - e + s, s : W - e + s])
        out[s] = shift_residual(z0, z1, shift_latent(z0, s / e, s / e)).item()
    return out


@torch.no_grad()
def evaluate(kind: str, model, x: torch.Tensor) -> dict[str, float]:
    """Held-out reconstruction metrics in fp32 (what a user gets from encode -> decode); for video
    also the latent's shift error at 1, 2 and 4 px (``latent_shift_error``)."""
    model.eval()
    y = model.decode(model.encode(x))
    if kind == "video":
        yc = y.clamp(0, 1)
        shift = {f"shift_{s}px": v for s, v in latent_shift_error(model, x).items()}
        return {"psnr": psnr(yc, x), "ssim": ssim(yc.flatten(0, 1), x.flatten(0, 1)).item(),
                "sharpness": laplacian_sharpness(yc), "real_sharpness": laplacian_sharpness(x), **shift}
    return {"spectral_distance_db": spectral_distance(y, x), "si_snr_db": si_snr(y, x)}


@torch.no_grad()
def evaluate_own(model, pool) -> dict[str, float]:
    """How the decoder reads a world model's own rollouts (``train.own_latents``): each whole rollout
    decoded as it streams, its own frames (all, and the first 4) against the recorded ones."""
    model.eval()
    y = model.decode(pool.latents.float()).clamp(0, 1)[:, 1:]
    F = y.shape[1]
    x = torch.stack([torch.from_numpy(pool.frames(i, 1, F)) for i in range(len(pool.starts))])
    x = x.permute(0, 1, 4, 2, 3).float() / 255.0
    return {"own_psnr": psnr(y, x), "own_psnr_first4": psnr(y[:, :4], x[:, :4]),
            "own_sharpness": laplacian_sharpness(y), "own_real_sharpness": laplacian_sharpness(x)}


def soften_latents(z: torch.Tensor, share: float) -> torch.Tensor:
    """Latents (B, T, C, h, w) with a ``share`` of the clips moved toward their 3x3 latent-pixel mean by a
    random amount in [0, 1] each (torch's global RNG, so a resumed run draws the same)."""
    pick = (torch.rand(z.shape[0]) < share).float() * torch.rand(z.shape[0])
    smooth = F.avg_pool2d(z.flatten(0, 1), 3, 1, 1, count_include_pad=False).view_as(z)
    return torch.lerp(z, smooth, pick.view(-1, 1, 1, 1, 1).to(z.dtype))


def laplacian_sharpness(x: torch.Tensor) -> float:
    """Mean absolute Laplacian of luminance of frames (..., 3, H, W) in [0, 1], the measure
    ``eval.stream.sharpness`` takes of uint8 frames: falls as frames blur."""
    y = x.float().mean(-3)
    lap = 4 * y[..., 1:-1, 1:-1] - y[..., :-2, 1:-1] - y[..., 2:, 1:-1] - y[..., 1:-1, :-2] - y[..., 1:-1, 2:]
    return lap.abs().mean().item()


@torch.no_grad()
def set_latent_stats(model, x: torch.Tensor) -> None:
    """Per-channel mean/std of raw latents on training clips: encode() then returns ~unit variance."""
    model.eval()
    z = model.encode_raw(x).float()
    dims = [d for d in range(z.ndim) if d != 2]  # channels are dim 2 for video (B,T,C,h,w) and audio (B,L,C)
    model.latent_mean.copy_(z.mean(dim=dims))
    model.latent_std.copy_(z.std(dim=dims).clamp_min(1e-4))


def _lr(cfg: AETrainConfig, step: int) -> float:
    return cosine_lr(cfg.lr, cfg.warmup, cfg.steps, step)


def _save(out: Path, cfg: AETrainConfig, model, ema, opt, step: int, sampler: ClipSampler,
          stats_batch: torch.Tensor, metrics: dict[str, Any], disc=None, disc_opt=None) -> None:
    if not cfg.decoder_only:  # a decoder fine-tune keeps the normalisation its world models were trained with
        set_latent_stats(ema, stats_batch)
        model.latent_mean.copy_(ema.latent_mean)
        model.latent_std.copy_(ema.latent_std)
    if disc is not None:  # first, so a run cut between the two saves resumes the older autoencoder
        (out / DISC).mkdir(exist_ok=True)
        save_run(out / DISC, disc, disc, disc_opt, {"kind": "patch_discriminator", "model": to_dict(disc.cfg),
                                                    "train": to_dict(cfg), "step": step})
    kind = "video_ae" if cfg.kind == "video" else "audio_ae"
    save_run(out, model, ema, opt, {"kind": kind, "model": to_dict(model.cfg), "train": to_dict(cfg), "step": step,
                                    "metrics": metrics, "sampler_rng": sampler.rng.bit_generator.state})


def train_autoencoder(cfg: AETrainConfig, out: str | Path, progress: bool = True,
                      max_seconds: float | None = None) -> dict[str, Any]:
    """Train (or resume) until ``cfg.steps``; returns the final metrics. ``max_seconds`` stops
    early (after saving) so long runs can be split across sessions."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = _build(cfg)
    if cfg.kind == "video" and cfg.clip_frames % model.cfg.temporal:
        raise ValueError(f"clip_frames {cfg.clip_frames} must be a multiple of the temporal factor {model.cfg.temporal}")
    if cfg.kind == "audio" and cfg.clip_frames * model.cfg.samples_per_frame % model.cfg.hop:
        raise ValueError("clip length must be a multiple of the audio hop")
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    if cfg.init_from:
        init_weights(model, cfg.init_from, "autoencoder")
        ema.load_state_dict(model.state_dict())
    if cfg.decoder_only:  # no gradient, no update: the encoder stays bit for bit (AdamW skips gradless weights)
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith("enc"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.99),
                            weight_decay=0.0)
    disc = disc_opt = None
    if cfg.adv_weight:
        disc = PatchDiscriminator(PatchDiscriminatorConfig())
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9), weight_decay=0.0)
    video = cfg.kind == "video"
    train = ClipSampler(cfg.dataset, "train", cfg.clip_frames, seed=cfg.seed, with_frames=video, with_audio=not video)
    if not video and train.spf != model.cfg.samples_per_frame:
        raise ValueError(f"dataset has {train.spf} samples per frame; the audio AE expects {model.cfg.samples_per_frame}")
    heldout = ClipSampler(cfg.dataset, "heldout", cfg.clip_frames, seed=cfg.seed + 1, with_frames=video, with_audio=not video)
    eval_x = _batch(cfg, heldout, cfg.eval_clips, fixed=True)
    stats_x = _batch(cfg, train, 16, fixed=True)
    own_pool = own_eval = None
    if cfg.own_from:  # a world model's own latents, paired with the recorded frames (made once, then read)
        from . import own_latents

        own_latents.check_world_model(cfg.own_from, cfg.init_from)
        own_pool = own_latents.pool(out / OWN, cfg.own_from, cfg.dataset, cfg.own_latents, "train", cfg.own_clips,
                                    cfg.own_frames, cfg.seed, progress)
        own_eval = own_latents.pool(out / OWN_HELDOUT, cfg.own_from, cfg.dataset, cfg.own_latents, "heldout",
                                    OWN_EVAL_CLIPS, cfg.own_frames, cfg.seed + 1, progress)
    step, metrics = 0, {}
    if has_run(out):
        if disc is not None:
            resume_run(out / DISC, cfg, disc, disc, disc_opt)
        meta = resume_run(out, cfg, model, ema, opt)
        train.rng.bit_generator.state = meta["sampler_rng"]
        step, metrics = int(meta["step"]), meta.get("metrics", {})
    log = open(out / "log.jsonl", "a")
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.kind} AE ({cfg.preset})", unit="step")
    t_start = t_save = time.perf_counter()
    while step < cfg.steps:
        model.train()
        own = None
        pick = np.random.default_rng((cfg.seed, step)) if own_pool is not None else None  # by step: a resume draws the same
        if pick is not None and pick.random() < cfg.own_share:
            own, x = own_latents.draw(own_pool, pick, cfg.batch, cfg.clip_frames, cfg.crop, model.cfg.spatial,
                                      align=model.cfg.spatial)
        else:
            x = _batch(cfg, train, cfg.batch, align=model.cfg.spatial if video else 1)
        if disc is not None:
            disc.requires_grad_(False)  # the decoder's step reads the critic; only the critic's own step trains it
        loss, parts, fake = _loss(cfg, model, x, disc, own)
        optimizer_step(model, opt, loss, _lr(cfg, step), ema, cfg.ema, step)
        if disc is not None:
            disc.requires_grad_(True)
            with autocast("cpu", cfg.bf16):
                d_loss, d_parts = discriminator_hinge(disc, x.flatten(0, 1), fake)
            optimizer_step(disc, disc_opt, d_loss, cosine_lr(cfg.disc_lr, cfg.warmup, cfg.steps, step))
            parts.update(d_parts)
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", **{k: f"{v:.4f}" for k, v in parts.items()})
        if step % 50 == 0:
            log.write(json.dumps({"step": step, "loss": loss.item(), **parts, "lr": _lr(cfg, step)}) + "\n")
        last = step == cfg.steps
        if step % cfg.eval_every == 0 or last:
            metrics = {"step": step, **evaluate(cfg.kind, ema, eval_x)}
            if own_eval is not None:
                metrics.update(evaluate_own(ema, own_eval))
            log.write(json.dumps({"eval": metrics}) + "\n")
            log.flush()
            if bar is not None:
                bar.write(f"step {step}: held-out " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "step"))
        out_of_time = max_seconds is not None and time.perf_counter() - t_start > max_seconds
        if last or out_of_time or time.perf_counter() - t_save > cfg.save_every_s:
            _save(out, cfg, model, ema, opt, step, train, stats_x, metrics, disc, disc_opt)
            t_save = time.perf_counter()
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    log.close()
    if step >= cfg.steps and not (out / "model.safetensors").exists():
        _save(out, cfg, model, ema, opt, step, train, stats_x, metrics, disc, disc_opt)
    return metrics
