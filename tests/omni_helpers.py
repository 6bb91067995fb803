"""A tiny Omni model with its zero-initialised layers woken up, and random inputs for it (shared by the model tests)."""
import dataclasses

import torch

from worldstream.model.omni import Omni, omni_preset


def tiny_omni(seed=0, **view):
    torch.manual_seed(seed)
    m = Omni(dataclasses.replace(omni_preset("tiny"), **view)).eval()
    with torch.no_grad():  # wake up the zero-initialised adaLN and output layers
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def omni_inputs(B=2, K=4, h=4, w=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = omni_preset("tiny")
    return dict(video=torch.randn(B, K, cfg.latent_channels, h, w, generator=g),
                t_video=torch.rand(B, K, generator=g),
                actions=torch.randint(-1, cfg.n_actions, (B, K), generator=g),
                audio=torch.randn(B, K * cfg.audio_tokens_per_frame, cfg.audio_channels, generator=g),
                t_audio=torch.rand(B, K, generator=g),
                text=torch.randn(B, 5, 384, generator=g), text_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool(),
                text_pooled=torch.randn(B, 384, generator=g))
