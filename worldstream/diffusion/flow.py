"""Flow matching (rectified flow) and its samplers, as pure functions.

Convention (Lipman et al. 2023, "Flow Matching"; Liu et al. 2023, "Rectified Flow";
Esser et al. 2024, SD3): t in [0, 1], t = 0 is data, t = 1 is noise,

    x_t = (1 - t) x0 + t eps,        v = dx_t/dt = eps - x0            (SD3 eq. 3 with a_t = 1 - t, b_t = t)

A model predicts v; x0 = x_t - t v and eps = x_t + (1 - t) v recover the endpoints.
Samplers share one signature, ``sample(velocity_fn, x, ts, ...)``, for the many-step teacher
(Euler / Heun over a velocity field) and the few-step student (predict x0, re-noise to the next
level), so the engine can swap them. Guidance is a closure around the velocity function.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> v


def randn(shape, generator=None, device=None, dtype=None) -> torch.Tensor:
    """Gaussian noise. A list of generators draws each batch row from its own, so a row of a
    batched stream gets exactly the noise it would get alone."""
    # drawn where the generator lives (a stream's are on the CPU), then moved: a seed gives the
    # same noise on any device, so a GPU stream and a CPU stream of one seed start alike
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        x = torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator])
    else:
        x = torch.randn(tuple(shape), generator=generator, device=generator.device if generator is not None else device,
                        dtype=dtype)
    return x if device is None else x.to(device)


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for t broadcastable against x0 (e.g. (B, 1, 1, ...) or per chunk)."""
    return (1 - t) * x0 + t * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return eps - x0


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x_t - t * v


def velocity_around(g: torch.Tensor, x_t: torch.Tensor, prev: torch.Tensor, t: torch.Tensor, std: float) -> torch.Tensor:
    """The velocity of a network output ``g`` that predicts a frame *around the previous one*.

    With d = x0 - prev the frame's change (std ``std``, small when most of a frame is its
    predecessor) and r = x_t - (1 - t) prev = (1 - t) d + t eps its noisy version, the clean guess
    is EDM's preconditioned form (Karras et al. 2022, eq. 7 and Table 1, with sigma_data = std and
    the rectified-flow signal scale 1 - t):

        d_hat = c_skip r + c_out g,   c_skip = (1 - t) std^2 / s,   c_out = t std / sqrt(s),
        s = (1 - t)^2 std^2 + t^2,    x0_hat = prev + d_hat,        v = (x_t - x0_hat) / t

    c_skip r is the best linear guess of d from r and c_out scales g's target to unit variance, so
    g = 0 copies the previous frame at t = 1 (where a plain velocity must reproduce its input
    noise exactly to say "nothing changed") and v stays finite as t -> 0. t broadcasts against
    x_t; at t = 0 (a clean frame) v = 0.
    """
    g, x_t, prev = g.float(), x_t.float(), prev.float()
    s = (1 - t) ** 2 * std**2 + t**2
    d_hat = (1 - t) * std**2 / s * (x_t - (1 - t) * prev) + t * std / s.sqrt() * g
    return (x_t - prev - d_hat) / t.clamp_min(1e-4)


def change_loss_weight(t: torch.Tensor, std: float) -> torch.Tensor:
    """Per-level weight of a velocity loss for ``velocity_around`` that makes it a loss on the
    network's output g with the same weight at every level (EDM's lambda = 1 / c_out^2, Karras et
    al. 2022, Table 1): v's error is (c_out / t) times g's, so weight (t / c_out)^2 = s / std^2.
    Without it g's loss at t = 1 weighs std^2 (0.02 for std 0.15) against 1 near t = 0, and a
    teacher learns the copy but not the motion (log.md, fifteenth session). Divided by its mean
    under the logit-normal training levels, so the loss keeps its usual size next to the audio's."""
    return _change_weight(t, std) / _mean_change_weight(std)


def _change_weight(t: torch.Tensor, std: float) -> torch.Tensor:
    return ((1 - t) ** 2 * std**2 + t**2) / std**2


@functools.lru_cache(maxsize=8)
def _mean_change_weight(std: float) -> float:
    """``_change_weight``'s mean under the logit-normal levels (quadrature; once per std, not per step)."""
    z = torch.linspace(-5, 5, 2001, dtype=torch.float64)
    p = torch.exp(-0.5 * z**2)
    return float((p * _change_weight(torch.sigmoid(z), std)).sum() / p.sum())


def sample_t_logit_normal(shape, mean: float = 0.0, std: float = 1.0, generator=None, device=None) -> torch.Tensor:
    """Training noise levels from the logit-normal density (SD3 sec. 3.1): focuses on mid t."""
    return torch.sigmoid(mean + std * torch.randn(shape, generator=generator, device=device))


def shift_time(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """Resolution-dependent shift toward noise (SD3 eq. 23): t' = s t / (1 + (s - 1) t)."""
    return shift * t / (1 + (shift - 1) * t)


def time_grid(steps: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """Decreasing noise levels from 1 to 0, ``steps + 1`` values (shifted)."""
    t = torch.linspace(1.0, 0.0, steps + 1, device=device)
    return shift_time(t, shift)


@torch.no_grad()
def sample_euler(fn: VelocityFn, x: torch.Tensor, ts: torch.Tensor, **_) -> torch.Tensor:
    """Euler steps of dx/dt = v from ts[0] (noise) to ts[-1] (data)."""
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * fn(x, t.expand(x.shape[0]))
    return x


@torch.no_grad()
def sample_heun(fn: VelocityFn, x: torch.Tensor, ts: torch.Tensor, **_) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, EDM, Alg. 1), Euler on the final step to t = 0."""
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = fn(x, t.expand(x.shape[0]))
        x_e = x + (t_next - t) * v
        if t_next > 0:
            v2 = fn(x_e, t_next.expand(x.shape[0]))
            x = x + (t_next - t) * 0.5 * (v + v2)
        else:
            x = x_e
    return x


@torch.no_grad()
def sample_x0(fn: VelocityFn, x: torch.Tensor, ts: torch.Tensor, generator: torch.Generator | None = None,
              **_) -> torch.Tensor:
    """Few-step sampling for a student that predicts clean data: predict x0 at each level, then
    re-noise it to the next level with fresh noise (multistep consistency sampling, Song et al.
    2023, Alg. 1). One step (ts = [1, 0]) is a single x0 prediction."""
    for t, t_next in zip(ts[:-1], ts[1:]):
        x0 = x0_from_velocity(x, fn(x, t.expand(x.shape[0])), t)
        if t_next > 0:
            noise = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = interpolate(x0, noise, t_next)
        else:
            x = x0
    return x


SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "x0": sample_x0}


def guided(fn_uncond: VelocityFn, fn_text: VelocityFn, fn_both: VelocityFn, text_scale: float,
           action_scale: float) -> VelocityFn:
    """Classifier-free guidance with separate text and action scales (Ho & Salimans 2022; the
    two-condition form of Brooks et al. 2023, InstructPix2Pix eq. 3):

        v = v(0, 0) + s_text (v(text, 0) - v(0, 0)) + s_action (v(text, action) - v(text, 0))

    Scales of 1 and 1 give the fully conditional prediction.
    """

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return guide(fn_uncond(x, t), fn_text(x, t), fn_both(x, t), text_scale, action_scale)

    return fn


def guide(vu: torch.Tensor, vt: torch.Tensor, vb: torch.Tensor, text_scale: float, action_scale: float) -> torch.Tensor:
    """The guided velocity from the three branches' predictions (``guided``'s formula)."""
    return vu + text_scale * (vt - vu) + action_scale * (vb - vt)
