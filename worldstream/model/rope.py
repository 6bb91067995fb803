"""3-D rotary position embedding (time, row, column) (Su et al. 2021, RoFormer, eq. 34).

The head dimension is split in three parts, each rotated by one coordinate, so attention scores
depend on relative time, row and column offsets: no fixed grid, any resolution or aspect ratio.
"""
from __future__ import annotations

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Dims for (time, row, col): even sizes that add up to head_dim; time gets the remainder."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
    spatial = (head_dim // 3) // 2 * 2
    return head_dim - 2 * spatial, spatial, spatial


def rope_angles(pos: torch.Tensor, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles (..., head_dim / 2) for integer positions pos (..., 3) = (t, row, col)."""
    parts = []
    for axis, dim in enumerate(rope_split(head_dim)):
        freqs = theta ** (-torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32) / dim)  # (dim/2,)
        parts.append(pos[..., axis : axis + 1].float() * freqs)
    return torch.cat(parts, dim=-1)


class Rotation:
    """A rotation by fixed angles (..., N, Dh / 2), with its cos and sin made once and shared by
    every layer of a pass (a streamed chunk is small, so per-op overhead is what costs)."""

    def __init__(self, angles: torch.Tensor):
        c, s = angles.cos(), angles.sin()
        self.cos = c.repeat_interleave(2, dim=-1)  # (..., Dh): both members of a pair
        self.sin = torch.stack([-s, s], dim=-1).flatten(-2)  # signed for the swapped pair
        self._cast: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate pairs (x1, x2) of x (..., N, Dh) to (x1 cos - x2 sin, x2 cos + x1 sin)."""
        if x.dtype not in self._cast:
            self._cast[x.dtype] = (self.cos.to(x.dtype), self.sin.to(x.dtype))
        return rotate(x, *self._cast[x.dtype])


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``Rotation`` as a pure function of tensors (what a compiled block takes); casts cos and sin
    to x's precision."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2) * sin


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of x (B, H, N, Dh) by angles (B, N, Dh / 2)."""
    return Rotation(angles[:, None])(x)
