"""A latent transition discriminator for adversarial post-training of the 1-step student.

A student distilled by regression predicts the *mean* of the futures its teacher could take from a
noise, and free-running it compounds that blur until the place washes out (docs/results.md). An
adversarial loss asks instead that each frame the student makes after its own history look like a
real next frame: sharp, of the world's terrain, moved as the key moves it. This is the idea of
autoregressive adversarial post-training (AAPT; Lin et al. 2025, "Autoregressive Adversarial
Post-Training for Real-Time Interactive Video Generation"), where a 1-step streaming generator is
trained against a discriminator on its own (student-forced) rollouts, here with a small
convolutional critic in latent space instead of a copy of the transformer, so it fits a 2-core CPU.

The critic sees a transition: the previous latent frame and the next one, stacked, and the key
held for the next one (a projection discriminator, Miyato & Koyama 2018: the logit gains the inner
product of the key's embedding with the pooled features), so it can tell a walk from a stand.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    latent_channels: int = 16
    n_actions: int = 17
    width: int = 64  # channels at full latent resolution; doubled at each of the two downsamplings


class TransitionDiscriminator(nn.Module):
    """logit (B,) that (prev, next) latent frames (B, C, h, w) under ``actions`` (B,) ids (-1 =
    none) are a real transition of the world."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        c = 2 * cfg.latent_channels
        self.body = nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        )
        self.out = nn.Linear(4 * w, 1)
        self.action = nn.Embedding(cfg.n_actions + 1, 4 * w)  # row 0: no key
        nn.init.zeros_(self.action.weight)  # starts unconditional; learns what each key looks like

    def forward(self, prev: torch.Tensor, nxt: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if prev.shape != nxt.shape or prev.dim() != 4:
            raise ValueError(f"discriminator: prev {tuple(prev.shape)} and next {tuple(nxt.shape)} must both be "
                             "(B, C, h, w) latent frames")
        h = self.body(torch.cat([prev, nxt], 1).float())
        h = h.sum((2, 3))  # (B, 4w): sum, not mean, so the critic's scale does not depend on the size
        a = self.action(actions.long().clamp_min(-1) + 1)
        return self.out(h).squeeze(1) + (a * h).sum(1)


def discriminator_loss(disc: TransitionDiscriminator, real: tuple[torch.Tensor, ...], fake: tuple[torch.Tensor, ...],
                       gamma: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Non-saturating logistic loss with R1 and R2 gradient penalties (the stable GAN objective of
    R3GAN, Huang et al. 2024, without its relativistic pairing: real and fake transitions here do not
    share a history). ``real``/``fake``: (prev, next, actions), fake detached."""
    prev_r, next_r, act_r = real
    prev_f, next_f, act_f = fake
    next_r = next_r.detach().requires_grad_(gamma > 0)
    next_f = next_f.detach().requires_grad_(gamma > 0)
    d_real = disc(prev_r, next_r, act_r)
    d_fake = disc(prev_f.detach(), next_f, act_f)
    loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    parts = {"d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}
    if gamma > 0:  # penalise the critic's gradient at real and fake next frames (keeps it smooth)
        g_r, g_f = torch.autograd.grad([d_real.sum(), d_fake.sum()], [next_r, next_f], create_graph=True)
        pen = g_r.pow(2).flatten(1).sum(1).mean() + g_f.pow(2).flatten(1).sum(1).mean()
        loss = loss + 0.5 * gamma * pen
        parts["penalty"] = pen.item()
    return loss, parts


def generator_push(disc: TransitionDiscriminator, prev: torch.Tensor, sample: torch.Tensor, actions: torch.Tensor,
                   step: float) -> tuple[torch.Tensor, float]:
    """The adversarial loss for the generator's ``sample`` (with grad), as a push of fixed size: the
    critic's gradient of the non-saturating loss at each sample, scaled to an RMS of ``step`` latent
    units, becomes a regression target just beside the sample (as DMD turns a score difference into
    one). The push's size then does not depend on the critic's scale, which drifts as it trains, and
    ``step`` reads directly against the regression anchor's error. Returns (loss, the critic's mean
    logit on the samples)."""
    x = sample.detach().float().requires_grad_(True)
    logit = disc(prev.detach(), x, actions)
    (g,) = torch.autograd.grad(F.softplus(-logit).sum(), x)
    rms = g.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))
    target = (x - step * g / rms).detach()
    return 0.5 * ((sample.float() - target) ** 2).mean(), logit.mean().item()
