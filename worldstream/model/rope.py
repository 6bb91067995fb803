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


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of x (B, H, N, Dh) by angles (B, N, Dh / 2)."""
    cos, sin = angles.cos()[:, None].to(x.dtype), angles.sin()[:, None].to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)
