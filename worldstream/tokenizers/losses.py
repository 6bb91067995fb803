"""Reconstruction losses and metrics for the autoencoders (no pretrained networks needed)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _gaussian_window(size: int = 7, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, k, k)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004, eq. 13) of images (N, C, H, W) in [0, 1]."""
    C = x.shape[1]
    w = _gaussian_window(window, device=x.device).to(x.dtype).expand(C, 1, window, window)
    pad = window // 2
    blur = lambda t: F.conv2d(F.pad(t, (pad,) * 4, mode="reflect"), w, groups=C)  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (x is clamped: what a viewer would see)."""
    mse = F.mse_loss(x.clamp(0, 1).float(), y.float()).item()
    return 10.0 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


# Magnitude floor for log spectra: -60 dB below a full-scale sine's bin at these FFT sizes' scale.
# A lower floor (1e-5 was tried) lets near-silent, inaudible bins dominate log losses: measured
# on the overworld's band-limited sounds, see docs/log.md.
MAG_FLOOR = 1e-3


def stft_mag(x: torch.Tensor, n_fft: int, floor: float = MAG_FLOOR) -> torch.Tensor:
    win = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x.float(), n_fft, hop_length=n_fft // 4, window=win, return_complex=True)
    return spec.abs().clamp_min(floor)


def multi_res_stft_loss(x: torch.Tensor, y: torch.Tensor, sizes=(256, 512, 1024, 2048)) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1 over several FFT sizes (Yamamoto et al. 2020,
    Parallel WaveGAN, eqs. 5-7). x, y: (B, L) waveforms."""
    total = x.new_zeros(())
    for n in sizes:
        mx, my = stft_mag(x, n), stft_mag(y, n)
        sc = torch.linalg.norm(my - mx) / torch.linalg.norm(my).clamp_min(1e-5)
        mag = F.l1_loss(torch.log(mx), torch.log(my))
        total = total + sc + mag
    return total / len(sizes)


def spectral_distance(x: torch.Tensor, y: torch.Tensor, n_fft: int = 1024) -> float:
    """Mean absolute difference of magnitude spectra in dB (20 log10), lower is better, with
    magnitudes floored at MAG_FLOOR so inaudible near-silent bins do not dominate the mean."""
    return (20 * (torch.log10(stft_mag(x, n_fft)) - torch.log10(stft_mag(y, n_fft)))).abs().mean().item()


def si_snr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Scale-invariant signal-to-noise ratio (dB) of estimate x against reference y, (B, L) -> mean."""
    x = x.float() - x.float().mean(-1, keepdim=True)
    y = y.float() - y.float().mean(-1, keepdim=True)
    proj = (x * y).sum(-1, keepdim=True) / (y * y).sum(-1, keepdim=True).clamp_min(1e-8) * y
    noise = x - proj
    ratio = (proj**2).sum(-1) / (noise**2).sum(-1).clamp_min(1e-8)
    return (10 * torch.log10(ratio.clamp_min(1e-8))).mean().item()
