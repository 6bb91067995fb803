"""Is the f8 latent what makes a walking world dissolve? The same world model trained on the same
clips for the same wall time, once on the video autoencoder's latents and once on raw pixels.

Why: a walking view scrolls 1 px a frame, an eighth of a latent cell, and the f8 autoencoder
aliases under such moves (a frame moved by 2 px encodes almost half as far from the unmoved
latent as an unrelated frame does; log.md, fourteenth session), so predicting the next latent is
learning a different non-linear map at each of 8 sub-cell phases. In pixels the same move is a
fixed linear map of a patch and its neighbour, and no decoder caps the detail (the shipped one
returns texture 4x softer than it was given; thirty-eighth session). JiT (Li & He 2025, "Back to
Basics: Let Denoising Generative Models Denoise") shows patch-16 transformers that predict clean
pixels directly work.

Both models are the shipped world model's shape (``Omni``, width 256, depth 8, 64 tokens a
frame: latents 16 x 16 x 16 in 2 x 2 patches, pixels 128 x 128 x 3 in 16 x 16 patches, no
text, no sound, window 4), their output read as the clean frame (x-prediction, ``XPred``), trained
as the 1-step student streams: each frame's clean guess from pure noise (t = 1) given 1-5 clean
frames before it and the recorded actions, regressed onto the recorded frame; a share
``--own`` of batches gives it its own guesses as the history, made without gradient from one
recorded frame (self-forcing; the recorded frame is the target). With ``--adv-weight`` (pixels
only) the shipped decoder's patch critic (``tokenizers/patch_gan.py``) also judges every guess
against the recorded frames, balanced against the regression as VQGAN balances it: a 1-step
regressor renders the mean of the frames that could come next, and the critic asks for grain that
looks real instead (as adversarial distillation does, Sauer et al. 2023). With ``--flow MEAN`` it learns
every noise level instead (flow matching, levels logit-normal as JiT draws them, the v-loss), so it can
be walked as a many-step sampler (``--sampler euler --steps 8``) that draws detail the 1-step guess
averages away; ``--hist-noise`` noises its history frames in training and ``--walk-hist-noise`` commits
a walk's own frames at a level (GameNGen's context noise). ``--kinds moved`` predicts pixels around the
last frame moved by a whole number of pixels that a head names (``OmniConfig.move_reach``: global motion
compensation), the strip the move uncovers filled by ``--ground`` (``engine.ground``).
Then 48-frame walks from one held-out frame under the recorded keys, as ``bench/rollout_vs_still.py``
measures them.

    .venv/bin/python bench/pixel_vs_latent.py --data pipeline/data/overworld --latents pipeline \\
        --minutes 22 --lr 5e-4 --out pipeline/exp/pixels40   # then again with --resume --minutes 20
    # the critic, 25 min on from a copy of that pixel model, and its control without the critic:
    .venv/bin/python bench/pixel_vs_latent.py ... --kinds pixel --resume --minutes 25 --lr 2e-4 \
        --adv-weight 0.5 --out pipeline/exp/adv41   # control: the same without --adv-weight
    # own-history batches that walk 12 frames before the guess, against that control:
    .venv/bin/python bench/pixel_vs_latent.py ... --kinds pixel --resume --minutes 25 --lr 2e-4 \
        --own-frames 12 --frames 192 --out pipeline/exp/own41
    # a flow model from a copy of that control (45 min), walked with Euler; then with context noise (30 min more)
    .venv/bin/python bench/pixel_vs_latent.py ... --kinds pixel --resume --minutes 45 --lr 2e-4 --flow 0.8 \
        --sampler euler --steps 8 --out pipeline/exp/flow42
    .venv/bin/python bench/pixel_vs_latent.py ... --kinds pixel --resume --minutes 30 --lr 2e-4 --flow 0.8 \
        --hist-noise 0.3 --walk-hist-noise 0.1 --sampler euler --steps 8 --out pipeline/exp/flowh42
    # the control's trunk predicting around its last frame moved (copy its pixel.safetensors to moved.safetensors)
    .venv/bin/python bench/pixel_vs_latent.py ... --kinds moved --resume --minutes 38 --lr 2e-4 --out pipeline/exp/moved42
    # a moved model's walks with the uncovered strip drawn from matching ground, and also remembered (``Ground``);
    # then out and back against the game replayed under the same keys
    .venv/bin/python bench/pixel_vs_latent.py ... --kinds moved --resume --minutes 0 --frames 192 --ground remembered --out DIR
    .venv/bin/python bench/pixel_vs_latent.py ... --kinds moved --resume --minutes 0 --revisit 48 --ground remembered --out DIR
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rollout_vs_still import AT, psnr, sheet_frames, starts  # noqa: E402

from worldstream.checkpoint import load_tensors, save_tensors  # noqa: E402
from worldstream.data.format import Dataset  # noqa: E402
from worldstream.data.latents import LatentClips  # noqa: E402
from worldstream.data.png import grid, save_png  # noqa: E402
from worldstream.diffusion.flow import SAMPLERS, interpolate, sample_t_logit_normal  # noqa: E402
from worldstream.device import autocast  # noqa: E402
from worldstream.engine.generate import load_autoencoders, load_world_model  # noqa: E402
from worldstream.engine.ground import Ground, uncovered  # noqa: E402
from worldstream.engine.rollout import Conditioning, own_rollout  # noqa: E402
from worldstream.engine.stream import to_frames  # noqa: E402
from worldstream.eval.stream import sharpness, streaks  # noqa: E402
from worldstream.model.omni import Omni, OmniConfig, best_move, move_frames, previous_frames  # noqa: E402
from worldstream.tokenizers.patch_gan import PatchDiscriminator, adaptive_weight, discriminator_hinge  # noqa: E402
from worldstream.weights import resolve  # noqa: E402
from worldstream.worlds.overworld import ACTIONS  # noqa: E402

MAX_HISTORY = 5


class Pixels:
    """Frames as the model's 'latents': (F, 3, H, W), each colour channel normalised to unit variance."""

    def __init__(self, frames: np.ndarray):
        x = torch.from_numpy(np.asarray(frames[:: max(1, len(frames) // 2000)])).float() / 255
        self.mean = x.mean((0, 1, 2)).view(3, 1, 1)
        self.std = x.std((0, 1, 2)).view(3, 1, 1)

    def encode(self, frames: np.ndarray) -> torch.Tensor:  # (F, H, W, 3) uint8 -> (F, 3, H, W)
        x = torch.from_numpy(np.asarray(frames)).float().permute(0, 3, 1, 2) / 255
        return (x - self.mean) / self.std

    def to_unit(self, z: torch.Tensor) -> torch.Tensor:  # model units -> colours in [0, 1], unclamped
        return z.float() * self.std + self.mean

    def decode(self, z: torch.Tensor) -> np.ndarray:  # (F, 3, H, W) -> (F, H, W, 3) uint8
        return to_frames(self.to_unit(z)[None])[0]


class Latents:
    def __init__(self, vae):
        self.vae = vae

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(frames)).float().permute(0, 3, 1, 2)[None] / 255
        return self.vae.encode(x)[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> np.ndarray:
        return to_frames(self.vae.decode(z[None].float()))[0]


class XPred(Omni):
    """The same network with its output read as the clean frame (x-prediction) and turned into the
    velocity the samplers integrate, v = (x_t - x0) / t. A velocity network's clean guess at t = 1 is
    x_1 - v: it must carry its input noise through the network exactly, and a 16 x 16 x 3 pixel patch
    (768 numbers) through a 256-wide residual stream cannot; its first try here plateaued at 0.73 of
    the pixels' variance, the share of the noise outside 256 of 768 dimensions (JiT's argument)."""

    def forward(self, video, t_video, *args, **kwargs):
        out_v, *rest = super().forward(video, t_video, *args, **kwargs)
        t = t_video.repeat_interleave(self.cfg.chunk_frames, 1)[:, :, None, None, None].to(out_v.dtype)
        return ((video - out_v) / t.clamp_min(1e-3), *rest)


def ground_for(fill: str, seed: int, context: int = 6) -> Ground | None:
    """The ``Ground`` a walk of one start uses for ``--ground`` ``fill``; None for the repeated border."""
    if fill == "border":
        return None
    return Ground(1, seed=seed, remember=fill == "remembered", context=context)


@torch.no_grad()
def strip_check(model: Omni, pix: Pixels, tests: list, pairs: int = 24) -> dict:
    """One-step guesses of held-out frames from the recorded ones before them (MAX_HISTORY of them), the
    head choosing the move as in a walk: how often it names the best move, and PSNR (colours in [0, 1])
    of the whole frame, of the strip its move uncovers, of that strip left as the repeated border (the
    guess of a network that learnt nothing there), and of the rest. Says whether the strip is learnt."""
    k, sums = MAX_HISTORY, {"frame": [0.0, 0], "strip": [0.0, 0], "border": [0.0, 0], "rest": [0.0, 0]}
    named = []
    for real, actions, _, _ in tests:
        enc = pix.encode(real)
        acts = torch.from_numpy(np.concatenate([[0], actions])).long()  # acts[f] made frame f
        fs = range(k, min(len(enc), k + pairs))
        hist = torch.stack([enc[f - k : f] for f in fs])
        target = torch.stack([enc[f] for f in fs])
        noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
        with autocast("cpu", True):
            v, logits = velocity(model, hist, noise, torch.ones(len(fs)), torch.stack([acts[f - k : f + 1] for f in fs]))
        guess = noise - v  # x0 = x_t - t v at t = 1, x_t the noise
        chosen = logits[:, -1].argmax(-1)
        named.append((chosen == best_move(hist[:, -1], target, model.cfg.move_reach)).float())
        moves = model.moves[chosen]
        border = move_frames(hist[:, -1:], moves[:, None])[:, 0]
        strip = uncovered(moves, *target.shape[-2:])[:, None].expand_as(target)
        for name, x, mask in (("frame", guess, None), ("strip", guess, strip), ("border", border, strip),
                              ("rest", guess, ~strip)):
            err = (pix.to_unit(x).clamp(0, 1) - pix.to_unit(target)).square()
            sums[name][0] += float(err.sum() if mask is None else err[mask].sum())
            sums[name][1] += int(err.numel() if mask is None else mask.sum())
    out = {n: 10 * np.log10(1 / (e / max(c, 1))) for n, (e, c) in sums.items()}
    out["named_best"] = torch.cat(named).mean().item()
    return out


@torch.no_grad()
def revisits(model: Omni, pix: Pixels, ds: Dataset, n_starts: int, n: int, ground: str, log,
             context: int = 6) -> dict:
    """Out and back: from held-out starts (as ``starts`` picks them) the model walks ``n`` frames one way and
    ``n`` back, and each frame is scored against the game replayed from the same place under the same keys
    (``eval.walks.game_walk``; where the game stops the player at water or rocks, so does the truth). The
    frame at the turn shows new ground; the frame back at the start the ground the walk showed first, and is
    also scored against the walk's own first frame (revisit consistency, whether or not its moves were right)."""
    from worldstream.eval.walks import game_walk, replayable

    ways = (("walk_e", "walk_w"), ("walk_n", "walk_s"), ("walk_w", "walk_e"), ("walk_s", "walk_n"))
    names = list(ACTIONS)  # the recordings' action ids index the world's actions
    rng = np.random.default_rng(0)
    eps = [ep for ep in ds.split("heldout") if replayable(ep)]
    at = sorted({1, n // 2, n, n + n // 2, 2 * n})
    got_p, still_p, own_back = [], [], []
    for i in range(n_starts):
        ep = eps[i % len(eps)]
        t0 = int(rng.integers(0, ep.n_frames - 1))
        keys = [ways[i % 4][0]] * n + [ways[i % 4][1]] * n
        truth = np.stack([ep.frames()[t0]] + game_walk(ep, t0, keys).frames)
        acts = torch.tensor([[0] + [names.index(k) for k in keys]])
        with autocast("cpu", True):
            z = walk(model, pix.encode(truth[:1]), acts, 2 * n, ground=ground_for(ground, i, context))[0]
        got = pix.decode(z)
        got_p.append([psnr(got[f], truth[f]) for f in at])
        still_p.append([psnr(truth[0], truth[f]) for f in at])
        own_back.append(psnr(got[2 * n], got[0]))
    res = {"at": at, "ground": ground, "psnr": np.mean(got_p, 0).tolist(), "still_psnr": np.mean(still_p, 0).tolist(),
           "own_return_psnr": float(np.mean(own_back))}
    log(f"revisit ({ground}): {n} frames out, {n} back; PSNR against the game at frames {at}: "
        + " / ".join(f"{x:.1f}" for x in res["psnr"]) + " (the start frame held still: "
        + " / ".join(f"{x:.1f}" for x in res["still_psnr"]) + f"); its frame back at the start against its first: "
        f"{res['own_return_psnr']:.1f}")
    return res


def model_for(kind: str, reach: int = 3, prev_std: float = 1.0) -> Omni:
    c, p = (16, 2) if kind == "latent" else (3, 16)
    torch.manual_seed(0)
    cfg = OmniConfig(width=256, depth=8, heads=4, latent_channels=c, patch=p, audio_channels=0, window=4,
                     sinks=0, memory_topk=0)
    if kind == "moved":
        return Omni(dataclasses.replace(cfg, prev_frame=True, prev_std=prev_std, move_reach=reach))
    return XPred(cfg)


def velocity(model: Omni, hist: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, actions: torch.Tensor,
             t_hist: torch.Tensor | None = None,
             move: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The velocity of the frame after ``hist`` (B, k, C, h, w; at noise levels ``t_hist`` (B, k), default
    clean) at its noise level ``t`` (B,) from x_t, and a move model's logits over its moves (B, k + 1, M),
    the frame made around ``move`` (B, 2) when given, else around the head's choice. At t = 1 (x_t pure
    noise) x_t - v is the clean guess the 1-step x0 sampler makes."""
    B, k = hist.shape[:2]
    video = torch.cat([hist, x_t[:, None]], 1)
    tv = torch.cat([torch.zeros(B, k) if t_hist is None else t_hist, t[:, None]], 1)
    prev = previous_frames(video, 1) if model.cfg.prev_frame else None  # the target's: the newest history frame
    forced = None if move is None else move[:, None].expand(B, k + 1, 2)
    v, _, logits = model(video=video, t_video=tv, actions=actions[:, : k + 1], prev=prev, move=forced,
                         return_moves=True)
    return v[:, -1].float(), logits


def walk(model: Omni, first: torch.Tensor, actions: torch.Tensor, n: int, seed: int = 0,
         sampler: str = "x0", steps: int = 1, history_noise: float = 0.0, ground: Ground | None = None) -> torch.Tensor:
    """``n`` frames after ``first`` (B, C, h, w) under ``actions`` (B, n + 1; actions[:, f] made frame f),
    streamed as the engine streams a student (``own_rollout``, ``steps`` of ``sampler``, each frame
    committed at ``history_noise``, a move model's uncovered strips filled by ``ground``); the first frame included."""
    cond = Conditioning(None, None, None, actions)
    return own_rollout(model, cond, first[:, None], None, n + 1, steps, torch.Generator().manual_seed(seed),
                       sampler=sampler, history_noise=history_noise, ground=ground)[0].float()


def train(kind: str, model: Omni, data: list[dict], minutes: float, batch: int, lr: float, own: float,
          out: Path, log, done: int = 0, adv: dict | None = None, own_frames: int = 0,
          flow_mean: float | None = None, hist_noise: float = 0.0, move_weight: float = 0.05,
          strip_weight: float = 0.0, own_move: bool = False) -> dict:
    """``adv``: {"weight", "lr", "warmup", "to_unit"} adds a patch critic's push on every guess (pixels only).
    ``flow_mean``: train every noise level (flow matching, levels logit-normal around this mean) rather than
    only t = 1; the loss is on the velocity either way, which at t = 1 is the regression of the clean guess.
    ``hist_noise``: each history frame is noised to a level drawn in [0, hist_noise] and told it (GameNGen's
    context noise, Valevski et al. 2024), so a walk can commit its own frames at a level and lean on them less.
    ``move_weight``: a move model's cross-entropy on naming the best move, beside the frame's loss;
    ``strip_weight``: its loss on the strip the move uncovers weighs 1 + this; ``own_move``: the frame is made
    around the head's own choice, as a walk makes it, rather than the best move (the head still learns the best)."""
    rng = np.random.default_rng(done)
    t_gen = torch.Generator().manual_seed(done)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    disc = None
    if adv:  # the decoder's critic (tokenizers/patch_gan.py), here on the world model's own frames
        torch.manual_seed(done)
        disc = PatchDiscriminator()
        if (out / f"{kind}_critic.safetensors").exists():
            disc.load_state_dict(load_tensors(out / f"{kind}_critic.safetensors"))
        d_opt = torch.optim.AdamW(disc.parameters(), lr=adv["lr"], betas=(0.5, 0.9), weight_decay=0.0)
        d_hist = []
    t_end, step, hist, moves_right = time.time() + 60 * minutes, 0, [], []
    while time.time() < t_end:
        k = int(rng.integers(1, MAX_HISTORY + 1))  # history length of this batch
        picks = []
        for _ in range(batch):
            it = data[int(rng.integers(len(data)))]
            picks.append((it, int(rng.integers(len(it["video"]) - k))))
        own_batch = rng.random() < own and k > 1
        # frames before the target: k, or on own batches with --own-frames a longer lead-in that the model
        # walks itself, so it learns to come back from the drift of more than MAX_HISTORY own frames
        span = max(k, own_frames) if own_batch else k
        clips, acts = [], []
        for it, s in picks:
            s = max(0, min(s + k - span, len(it["video"]) - span - 1))  # the same target where it fits
            clips.append(it["video"][s : s + span + 1])
            acts.append(it["actions"][s : s + span + 1])
        x, a = torch.stack(clips).float(), torch.stack(acts)
        model.train()
        with autocast("cpu", True):
            hist_v = x[:, span - k : span]
            if own_batch:  # its own guesses after the first recorded frame (no gradient), as it streams
                model.eval()
                with torch.no_grad():
                    hist_v = walk(model, x[:, 0], a, span - 1, seed=step)[:, span - k :]
                model.train()
            target = x[:, span].float()
            noise = torch.randn_like(target)
            t = torch.ones(batch)
            if flow_mean is not None:  # JiT's levels (noise-heavy) and its clamp of 1 / t in the v-loss at 0.05
                t = sample_t_logit_normal((batch,), mean=flow_mean, std=0.8, generator=t_gen).clamp(0.05, 1.0)
            tb = t.view(-1, 1, 1, 1)
            x_t = interpolate(target, noise, tb)
            t_hist = None
            if hist_noise > 0:
                t_hist = torch.rand(batch, k, generator=t_gen) * hist_noise
                hist_v = interpolate(hist_v.float(), torch.randn_like(hist_v.float()), t_hist[..., None, None, None])
            moving = bool(model.cfg.move_reach)
            forced = None
            if moving:  # the frame is made around the best move; the head learns to name it
                right = best_move(hist_v[:, -1].float(), target, model.cfg.move_reach)
                forced = None if own_move else model.moves[right]
            v, logits = velocity(model, hist_v, x_t, t, a[:, span - k :], t_hist, forced)
            if moving and own_move:  # the move the frame was made around
                forced = model.moves[logits[:, -1].argmax(-1)]
            if moving and strip_weight:  # the strip the move uncovers weighs more
                w = 1 + strip_weight * uncovered(forced, *target.shape[-2:])[:, None]
                loss = ((v - (noise - target)).square() * w).mean() / w.mean()
            else:
                loss = torch.nn.functional.mse_loss(v, noise - target)  # at t = 1: mse(x_t - v, target)
            pred = x_t - tb * v
        total = loss
        if moving:
            logits = logits[:, -1]
            total = loss + move_weight * torch.nn.functional.cross_entropy(logits, right)
            moves_right.append((logits.argmax(-1) == right).float().mean().item())
        if disc is not None:
            fake, real = adv["to_unit"](pred), adv["to_unit"](x[:, span]).clamp(0, 1)
            if step >= adv["warmup"]:  # the critic alone learns first, so its first push means something
                gen = -disc(fake).mean()
                w = adaptive_weight(loss, gen, model.video_out.weight) * adv["weight"]
                total = loss + w * gen
        opt.zero_grad(set_to_none=True)
        total.backward()
        if disc is not None:
            d_loss, d_stats = discriminator_hinge(disc, real, fake)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            d_hist.append((d_stats["d_real"], d_stats["d_fake"], float(w) if step >= adv["warmup"] else 0.0))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:  # warm up for 50 steps, then constant
            g["lr"] = lr * min(1.0, (step + 1) / 50)
        opt.step()
        hist.append((step, k, own_batch, loss.item()))
        step += 1
        if step % 50 == 0:
            recent = [h[3] for h in hist[-50:] if not h[2]]
            critic = ""
            if disc is not None:
                dr, df, dw = np.mean(d_hist[-50:], 0)
                critic = f" critic real {dr:+.2f} own {df:+.2f} push weight {dw:.3f}"
            if moves_right:
                critic += f" move named right {np.mean(moves_right[-50:]):.0%}"
            log(f"{kind} step {step} loss (real history, last 50) {np.mean(recent):.4f}{critic} "
                f"{(t_end - time.time()) / 60:.1f} min left")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if disc is not None:
        save_tensors(out / f"{kind}_critic.safetensors", {k: v.contiguous() for k, v in disc.state_dict().items()})
    if model.cfg.move_reach:  # its preconditioning, which the weights are trained for
        state["prev_std"] = torch.tensor(model.cfg.prev_std)
    save_tensors(out / f"{kind}.safetensors", {**state, "trained_steps": torch.tensor(done + step)})
    return {"steps": done + step, "losses": hist}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--latents", required=True, help="latent cache name of the shipped autoencoder")
    ap.add_argument("--minutes", type=float, default=25.0,
                    help="training wall time per model (0 with --resume: walk the saved weights only)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--own", type=float, default=0.25, help="share of batches with its own history")
    ap.add_argument("--own-frames", type=int, default=0,
                    help="own-history batches walk this many frames from one recorded frame before the guess "
                         "(default: as many as the history, at most %d)" % MAX_HISTORY)
    ap.add_argument("--kinds", default="pixel,latent")
    ap.add_argument("--resume", action="store_true",
                    help="go on from the weights in --out (Adam's moments start again, with the warm-up)")
    ap.add_argument("--adv-weight", type=float, default=0.0,
                    help="pixels: add a patch critic's push on each guess, balanced against the regression (VQGAN)")
    ap.add_argument("--disc-lr", type=float, default=2e-4, help="--adv-weight: the critic's learning rate")
    ap.add_argument("--disc-warmup", type=int, default=50, help="--adv-weight: steps in which only the critic learns")
    ap.add_argument("--flow", type=float, default=None, metavar="MEAN",
                    help="train every noise level (flow matching; levels logit-normal around MEAN, JiT: 0.8) "
                         "rather than only the 1-step guess at t = 1")
    ap.add_argument("--hist-noise", type=float, default=0.0, metavar="MAX",
                    help="train with each history frame noised to a level in [0, MAX], told to the model (GameNGen)")
    ap.add_argument("--walk-hist-noise", type=float, default=0.0,
                    help="the walks commit each frame at this noise level (RolloutConfig.history_noise)")
    ap.add_argument("--reach", type=int, default=3, help="--kinds moved: the largest move considered, in pixels")
    ap.add_argument("--move-weight", type=float, default=0.05, help="--kinds moved: weight of naming the move")
    ap.add_argument("--strip-weight", type=float, default=0.0,
                    help="--kinds moved: the loss on the strip the move uncovers weighs 1 + this")
    ap.add_argument("--prev-std", type=float, default=None,
                    help="--kinds moved: the preconditioning's std of a frame's change (default: the checkpoint's, "
                         "else 1); a resumed model's output is rescaled so its 1-step guess stays the same")
    ap.add_argument("--own-move", action="store_true",
                    help="--kinds moved: train the frame around the head's own move, as a walk makes it")
    ap.add_argument("--ground", default="border", choices=("border", "drawn", "remembered"),
                    help="--kinds moved: the walks fill what a move uncovers with the repeated border, ground drawn "
                         "where the frame's neighbourhood matches, or that and the ground the walk saw there before")
    ap.add_argument("--draw-context", type=int, default=6,
                    help="--ground drawn/remembered: px of ground beside the strip that a copy's place must match")
    ap.add_argument("--revisit", type=int, default=0, metavar="N",
                    help="--kinds moved, walk only: from each start walk N frames one way and N back (east, north, "
                         "west, south in turn) and score the frames against the game replayed under the same keys")
    ap.add_argument("--sampler", default="x0", choices=sorted(SAMPLERS), help="the walks' sampler")
    ap.add_argument("--steps", type=int, default=1, help="the walks' sampler steps a frame")
    ap.add_argument("--starts", type=int, default=12)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    if not a.minutes and not a.resume:
        raise SystemExit("--minutes 0 walks saved weights: add --resume")
    for kind in a.kinds.split(","):
        if kind not in ("pixel", "latent", "moved"):
            raise SystemExit(f"--kinds: {kind!r} is none of pixel, latent, moved")
        if a.adv_weight and kind not in ("pixel", "moved"):
            raise SystemExit("--adv-weight: the critic judges frames; use it with --kinds pixel or moved")
        if a.resume and not (out / f"{kind}.safetensors").exists():
            raise SystemExit(f"--resume: {out / f'{kind}.safetensors'} is missing; run once without --resume first")
    if a.revisit and (a.kinds != "moved" or a.minutes):
        raise SystemExit("--revisit walks a saved moved model: --kinds moved --resume --minutes 0")
    out.mkdir(parents=True, exist_ok=True)
    tag = f"_{a.frames}f" if not a.minutes else ""  # a walk-only run keeps the training run's results
    if (a.sampler, a.steps) != ("x0", 1):
        tag += f"_{a.sampler}{a.steps}"
    if a.walk_hist_noise:
        tag += f"_h{a.walk_hist_noise:g}"
    context_tag = f"_c{a.draw_context}" if a.draw_context != 6 else ""  # results of another match width kept apart
    if a.ground != "border":
        if "moved" not in a.kinds.split(",") or (a.sampler, a.steps) != ("x0", 1):
            raise SystemExit("--ground: only a --kinds moved model walked with 1 x0 step draws what its move uncovers")
        tag += f"_{a.ground}" + context_tag
    logf = open(out / "log.txt", "a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    _, meta = load_world_model(None)
    vae, _ = load_autoencoders(meta, resolve(None))  # the shipped decoder; its encoder made the cache
    vae.eval()
    clips = LatentClips(a.data, a.latents, "train", MAX_HISTORY + 1)
    frames_all = [it["episode"].frames() for it in clips.items]
    pix = Pixels(np.concatenate([f[::50] for f in frames_all]))
    lat = Latents(vae)
    tests = starts(Dataset(a.data), a.starts, a.frames, seed=0)
    results = {}
    for kind in a.kinds.split(","):
        rep = lat if kind == "latent" else pix
        done, was = 0, 1.0
        if a.resume:
            state = load_tensors(out / f"{kind}.safetensors")
            done = int(state.pop("trained_steps", torch.tensor(0)).item())
            was = float(state.pop("prev_std", torch.tensor(1.0)))  # the preconditioning the weights were trained for
        model = model_for(kind, a.reach, a.prev_std or was)
        if a.resume:
            if kind == "moved" and "move_head.weight" not in state:  # a pixel model's trunk, started as a moved copy
                log(f"moved: started from a pixel model ({done} steps); its output now the frame's change, from zero")
                state = {n: w for n, w in state.items() if not n.startswith("video_out.")}
                missing, unexpected = model.load_state_dict(state, strict=False)
                assert not unexpected and all(n.split(".")[0] in ("video_out", "prev_in", "move_head") for n in missing)
                torch.nn.init.zeros_(model.video_out.weight)
                torch.nn.init.zeros_(model.video_out.bias)
            else:
                model.load_state_dict(state)
            if kind == "moved" and model.cfg.prev_std != was:  # the same 1-step guess: c_out at t = 1 is the std
                log(f"moved: preconditioning std {was:g} -> {model.cfg.prev_std:g}, output rescaled to keep the guess")
                with torch.no_grad():
                    model.video_out.weight.mul_(was / model.cfg.prev_std)
                    model.video_out.bias.mul_(was / model.cfg.prev_std)
        stats = {"steps": done, "losses": []}
        if a.minutes:  # a walk-only run (--minutes 0) needs no training clips
            data = [{"video": (it["video"] if kind == "latent" else pix.encode(f)).to(torch.bfloat16),
                     "actions": it["actions"]} for f, it in zip(frames_all, clips.items)]
            log(f"{kind}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
                f"{sum(len(d['video']) for d in data)} training frames")
            adv = None
            if a.adv_weight:
                adv = {"weight": a.adv_weight, "lr": a.disc_lr, "warmup": a.disc_warmup, "to_unit": pix.to_unit}
            stats = train(kind, model, data, a.minutes, a.batch, a.lr, a.own, out, log, done, adv, a.own_frames,
                          a.flow, a.hist_noise, a.move_weight, a.strip_weight,
                          a.own_move)
            del data
        model.eval()
        if a.revisit:
            results[kind] = revisits(model, pix, Dataset(a.data), a.starts, a.revisit, a.ground, log, a.draw_context)
            (out / f"revisit{a.revisit}_{a.ground}{context_tag}.json").write_text(json.dumps(results[kind], indent=1))
            return
        p_model, p_still, sharp, streak, sheet, still_pairs = [], [], [], [], [], []
        recalled = [0, 0]
        for i, (real, actions, _, _) in enumerate(tests):
            first = rep.encode(real[:1])
            acts = torch.from_numpy(np.concatenate([[0], actions]))[None].long()
            ground = ground_for(a.ground, i, a.draw_context) if kind == "moved" else None
            with autocast("cpu", True):
                z = walk(model, first, acts, a.frames, sampler=a.sampler, steps=a.steps,
                         history_noise=a.walk_hist_noise, ground=ground)[0]
            if ground is not None:
                recalled = [r + n for r, n in zip(recalled, ground.recalled)]
            got = rep.decode(z)
            p_model.append([psnr(got[f], real[f]) for f in AT if f <= a.frames])
            p_still.append([psnr(real[0], real[f]) for f in AT if f <= a.frames])
            sharp.append([sharpness(got[f][None]) for f in AT if f <= a.frames])
            streak.append([streaks(got[f][None]) for f in AT if f <= a.frames])
            sheet.append((real, got))
            if kind == "moved":  # how the recorded view moves: the best move of each frame pair
                enc = pix.encode(real)
                still_pairs.append((best_move(enc[:-1], enc[1:], model.cfg.move_reach) == len(model.moves) // 2).float())
        m, s = np.array(p_model), np.array(p_still)
        results[kind] = {"steps": stats["steps"], "at": [f for f in AT if f <= a.frames],
                         "psnr": m.mean(0).tolist(), "beats_still": (m > s).mean(0).tolist(),
                         "sharpness": np.array(sharp).mean(0).tolist(), "streaks": np.array(streak).mean(0).tolist(),
                         "still_psnr": s.mean(0).tolist(),
                         "final_loss": (float(np.mean([h[3] for h in stats["losses"][-200:] if not h[2]]))
                                        if stats["losses"] else None)}
        if a.ground == "remembered":
            results[kind]["uncovered_recalled"] = recalled[0] / max(recalled[1], 1)
            log(f"moved: uncovered pixels taken from the walk's own memory of the ground: {results[kind]['uncovered_recalled']:.1%}")
        if still_pairs:
            results[kind]["pairs_best_unmoved"] = torch.cat(still_pairs).mean().item()
            log(f"moved: held-out frame pairs whose best move is none: {results[kind]['pairs_best_unmoved']:.0%}")
            sc = results[kind]["strip_check"] = strip_check(model, pix, tests)
            log(f"moved: one-step guesses of held-out frames: head names the best move {sc['named_best']:.0%}; "
                f"PSNR frame {sc['frame']:.1f}, uncovered strip {sc['strip']:.1f} (left as the repeated border "
                f"{sc['border']:.1f}), rest {sc['rest']:.1f} dB")
        rows = []
        for real, got in sheet[:2]:
            rows += [real[f] for f in sheet_frames(a.frames)] + [got[f] for f in sheet_frames(a.frames)]
        save_png(out / f"sheet_{kind}{tag}.png", grid(rows, cols=len(sheet_frames(a.frames))))
        r = results[kind]
        log(f"{kind}: {r['steps']} steps; walked with {a.steps} {a.sampler} steps a frame, history at {a.walk_hist_noise:g}; PSNR at {r['at']}: " + " / ".join(f"{x:.1f}" for x in r["psnr"])
            + "; beats still " + " / ".join(f"{x:.0%}" for x in r["beats_still"])
            + "; sharpness " + " / ".join(f"{x:.3f}" for x in r["sharpness"])
            + "; streaks " + " / ".join(f"{x:.1%}" for x in r["streaks"]))
        (out / f"results{tag}.json").write_text(json.dumps(results, indent=1))
    first = next(iter(results.values()))
    log("still picture PSNR: " + " / ".join(f"{x:.1f}" for x in first["still_psnr"]))
    real_first = np.stack([t[0][0] for t in tests])
    log(f"real sharpness {sharpness(real_first):.3f}, streaks {streaks(real_first):.1%}")


if __name__ == "__main__":
    main()
