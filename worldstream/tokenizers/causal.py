"""Causal building blocks with explicit streaming state (shared by the video and audio AEs).

A causal layer sees the present and the past, never the future. Each layer that looks back
keeps the last ``k - 1`` inputs it saw in a ``StreamState`` (a dict keyed by the layer), so a
clip fed in chunks gives exactly the output of the whole clip at once: the history starts as
zeros in both cases (moshi's streaming modules follow the same idea).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

StreamState = dict  # layer -> its saved history tensor


class CausalTimeConv2d(nn.Module):
    """Conv over (time, height, width) that is causal in time: x (B, T, C, H, W) -> (B, T, C', H', W').

    Implemented as a 2-D conv over the channel-stacked last ``kt`` frames, which is what a Conv3d
    with time kernel kt and past-only padding computes, but runs on the fast conv2d path.
    """

    def __init__(self, cin: int, cout: int, k: int = 3, kt: int = 1, stride: int = 1):
        super().__init__()
        self.kt, self.cin = kt, cin
        self.conv = nn.Conv2d(cin * kt, cout, k, stride=stride, padding=k // 2)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        B, T, C, H, W = x.shape
        if self.kt > 1:
            past = state.get(self) if state is not None else None
            if past is None:
                past = x.new_zeros(B, self.kt - 1, C, H, W)
            seq = torch.cat([past, x], dim=1)  # (B, kt-1+T, C, H, W)
            if state is not None:
                state[self] = seq[:, -(self.kt - 1):].detach()
            x = torch.cat([seq[:, i : i + T] for i in range(self.kt)], dim=2)  # (B, T, kt*C, H, W)
        y = self.conv(x.reshape(B * T, -1, H, W))
        return y.reshape(B, T, *y.shape[1:])


class CausalConv1d(nn.Module):
    """1-D conv causal in time: x (B, C, L) -> (B, C', L // stride), left padding only.

    With stride s, output i sees inputs up to i*s + s - 1 (its own block) and the past.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.k, self.stride = k, stride
        self.pad = k - stride  # history the first output of a chunk needs
        self.conv = nn.Conv1d(cin, cout, k, stride=stride)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        if self.pad > 0:
            past = state.get(self) if state is not None else None
            if past is None:
                past = x.new_zeros(x.shape[0], x.shape[1], self.pad)
            x = torch.cat([past, x], dim=2)
            if state is not None:
                state[self] = x[:, :, x.shape[2] - self.pad :].detach()
        return self.conv(x)


def frame_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm applied per frame (B*T folded into batch): never mixes time steps."""
    return nn.GroupNorm(min(8, channels), channels, eps=1e-6)


class ResBlock2d(nn.Module):
    """Pre-norm residual block on (B, T, C, H, W); the second conv may look back in time."""

    def __init__(self, ch: int, kt: int = 1):
        super().__init__()
        self.n1, self.n2 = frame_norm(ch), frame_norm(ch)
        self.c1 = CausalTimeConv2d(ch, ch, 3, kt=1)
        self.c2 = CausalTimeConv2d(ch, ch, 3, kt=kt)
        nn.init.zeros_(self.c2.conv.weight)  # start as identity: stable early training
        nn.init.zeros_(self.c2.conv.bias)

    def _norm(self, n: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[:2]
        return F.silu(n(x.flatten(0, 1))).unflatten(0, (B, T))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = self.c1(self._norm(self.n1, x), state)
        h = self.c2(self._norm(self.n2, h), state)
        return x + h
