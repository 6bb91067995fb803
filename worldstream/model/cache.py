"""The KV cache of the Omni transformer: keys and values of committed chunks, per layer.

Layout: for each layer, ``k`` and ``v`` are (B, H, N, Dh) with the tokens of chunk 0, 1, ... in
order (a text prefix, if any, counts as a chunk); ``chunk_sizes`` lists the tokens per committed
chunk. Only *committed* chunks live here: a chunk being denoised attends to the cache plus
itself and is committed (usually once clean) with a separate pass. Bounded sizes (sinks, window,
memory bank) are the streaming engine's job and build on this class.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layers: int):
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.valid: torch.Tensor | None = None  # (B, N) bool: False for padding (e.g. padded text)
        self.chunk_sizes: list[int] = []
        self.pending: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.pending_valid: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        return sum(self.chunk_sizes)

    def get(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.k[layer], self.v[layer]

    def stage_valid(self, valid: torch.Tensor) -> None:
        """Which of the current chunk's tokens may be attended to once committed (B, N) bool."""
        self.pending_valid = valid

    def stage(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Remember this layer's keys/values of the current chunk until ``commit``."""
        self.pending[layer] = (k.detach(), v.detach())

    def commit(self) -> None:
        """Append the staged chunk (all layers) to the cache."""
        if any(p is None for p in self.pending):
            raise RuntimeError("commit() without a full forward pass that staged every layer")
        n = self.pending[0][0].shape[2]
        for i, (k, v) in enumerate(self.pending):
            self.k[i] = k if self.k[i] is None else torch.cat([self.k[i], k], dim=2)
            self.v[i] = v if self.v[i] is None else torch.cat([self.v[i], v], dim=2)
        valid = self.pending_valid if self.pending_valid is not None else torch.ones(
            self.pending[0][0].shape[0], n, dtype=torch.bool, device=self.pending[0][0].device)
        self.valid = valid if self.valid is None else torch.cat([self.valid, valid], dim=1)
        self.chunk_sizes.append(n)
        self.pending = [None] * len(self.pending)
        self.pending_valid = None
