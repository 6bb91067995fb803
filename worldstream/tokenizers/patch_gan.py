"""A patch discriminator for sharpening the video autoencoder's decoder.

An L1 + SSIM decoder renders the mean of what a latent could hold: the overworld's sand grain and
tile edges come back about 4x softer than the frames it was given (Laplacian sharpness .028
against .116 on held-out frames, docs/log.md thirty-eighth session), and every frame a world
model makes goes through it. A patch discriminator (pix2pix, Isola et al. 2017; as the VQGAN and
latent-diffusion autoencoders use it, Esser et al. 2021, Rombach et al. 2022) judges each
~30-pixel patch real or decoded, so the decoder is asked for texture that looks real rather than
for the average of all textures that fit. Hinge losses; the generator's weight is balanced
against the reconstruction loss by their gradients at the decoder's last layer (VQGAN eq. 7).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class PatchDiscriminatorConfig:
    width: int = 32  # channels after the first layer; doubled at each of the next two downsamplings
    layers: int = 3  # stride-2 convolutions: a logit per 8x8 pixels, receptive field ~34 px at 3


class PatchDiscriminator(nn.Module):
    """Logits (N, 1, H/2^layers, W/2^layers) that each patch of frames (N, 3, H, W) in [0, 1] is real."""

    def __init__(self, cfg: PatchDiscriminatorConfig = PatchDiscriminatorConfig()):
        super().__init__()
        self.cfg = cfg
        c, w, body = 3, cfg.width, []
        for i in range(cfg.layers):
            body += [nn.Conv2d(c, w, 4, stride=2, padding=1)]
            if i:  # no norm on the first layer (pix2pix)
                body += [nn.GroupNorm(8, w)]
            body += [nn.LeakyReLU(0.2)]
            c, w = w, min(2 * w, 8 * cfg.width)
        body += [nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 3, padding=1)]
        self.body = nn.Sequential(*body)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"patch discriminator: frames must be (N, 3, H, W), got {tuple(frames.shape)}")
        return self.body(frames.float() * 2 - 1)


def discriminator_hinge(disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The critic's hinge loss on real and decoded frames (N, 3, H, W); ``fake`` is detached here."""
    lr, lf = disc(real), disc(fake.detach())
    loss = F.relu(1 - lr).mean() + F.relu(1 + lf).mean()
    return loss, {"d_loss": loss.item(), "d_real": lr.mean().item(), "d_fake": lf.mean().item()}


def adaptive_weight(rec: torch.Tensor, gen: torch.Tensor, last: torch.Tensor, cap: float = 1e4) -> torch.Tensor:
    """VQGAN's balance (Esser et al. 2021, eq. 7): |grad rec| / |grad gen| at the decoder's last layer's
    weight ``last``, so the adversarial push is as strong as the reconstruction's pull whatever the losses'
    scales; the caller multiplies by its own weight."""
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
    g_gen = torch.autograd.grad(gen, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_gen.norm() + 1e-4)).clamp(0, cap).detach()
