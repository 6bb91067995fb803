"""The bounded KV cache of a stream: text, sink chunks, a window of recent chunks, a memory bank.

What a new chunk can attend to (the *attention view*, ``model.attention``), and what this cache
keeps so that streaming sees exactly what training saw:

    text       the prompt's tokens; replaced when the prompt changes
    sinks      the first ``sinks`` chunks, never evicted (StreamingLLM's attention sinks,
               Xiao et al. 2024; LongLive's frame sink, Yang et al. 2025)
    window     the last ``window`` chunks, full resolution; 0 = unbounded (no eviction)
    memory     older chunks, each pooled to ``memory_tokens`` keys/values, first in first out
               beyond ``memory_chunks`` (0 = no memory: a plain sliding window)

Keys are stored *without* their time rotation (``model.rope``): the attention rotates them by
their time relative to the query at use, so positions never grow with the stream's length.
Everything here is per layer, (B, H, N, Dh). Size is bounded by
``text + (sinks + window) * tokens_per_chunk + memory_chunks * memory_tokens`` per layer.

A forward pass *stages* its chunk's keys/values; ``commit`` appends them (after the pass that
made them clean) and evicts what fell out of the window into the memory bank. ``commit(chunks=1)``
appends only the pass's first chunk: a stream commits a finished chunk inside the next chunk's
first denoising pass (``rollout.generate_chunk(defer=True)``), one transformer call per chunk
instead of two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pool_chunks(x: torch.Tensor, n_chunks: int, tokens: int) -> torch.Tensor:
    """(B, H, n_chunks * n, Dh) -> (B, H, n_chunks * tokens, Dh): each chunk's tokens averaged in
    ``tokens`` consecutive bands (for video, bands of patch rows), the memory bank's compression."""
    B, H, N, Dh = x.shape
    n = N // n_chunks
    y = x.reshape(B * H * n_chunks, n, Dh).transpose(1, 2)  # (., Dh, n)
    y = F.adaptive_avg_pool1d(y, tokens).transpose(1, 2)  # (., tokens, Dh)
    return y.reshape(B, H, n_chunks * tokens, Dh)


def chunk_means(pooled: torch.Tensor, tokens: int) -> torch.Tensor:
    """(B, H, J * tokens, Dh) pooled memory -> (B, H, J, Dh): one mean key per chunk, the block
    score's key (``attention.rank_memory``), kept with the bank so it is made once."""
    B, H, N, Dh = pooled.shape
    return pooled.reshape(B, H, N // tokens, tokens, Dh).mean(3)


class KVCache:
    def __init__(self, n_layers: int, sinks: int = 0, window: int = 0, memory_chunks: int = 0,
                 memory_tokens: int = 4):
        if min(sinks, window, memory_chunks) < 0 or memory_tokens < 1:
            raise ValueError("cache sizes must be >= 0 (memory_tokens >= 1)")
        self.n_layers, self.sinks, self.window = n_layers, sinks, window
        self.memory_chunks, self.memory_tokens = memory_chunks, memory_tokens
        L = range(n_layers)
        self.text: list[tuple[torch.Tensor, torch.Tensor] | None] = [None for _ in L]
        self.text_valid: torch.Tensor | None = None  # (B, Nt) bool
        # retained full chunks (sinks + window), in order
        self.k: list[torch.Tensor | None] = [None for _ in L]
        self.v: list[torch.Tensor | None] = [None for _ in L]
        self.chunk_of: torch.Tensor = torch.zeros(0, dtype=torch.long)  # (Nr,) absolute chunk index per token
        self.time_of: torch.Tensor = torch.zeros(0, dtype=torch.long)  # (Nr,) frame time per token
        # memory bank: pooled evicted chunks
        self.mem_k: list[torch.Tensor | None] = [None for _ in L]
        self.mem_v: list[torch.Tensor | None] = [None for _ in L]
        self.mem_kmean: list[torch.Tensor | None] = [None for _ in L]  # (B, H, J, Dh) per memory chunk: its retrieval key
        self.mem_chunk_of: torch.Tensor = torch.zeros(0, dtype=torch.long)
        # retrieval by position, when the source knows where each chunk was (e.g. a game's player
        # position): set ``position`` (B, 2) before making a chunk (its first pass records it for
        # that chunk); memory entries keep theirs
        self.position: torch.Tensor | None = None
        self.position_radius = 3.0  # memory chunks this close to the query's position are retrieved first
        self.chunk_pos: dict[int, torch.Tensor] = {}
        self.mem_pos: torch.Tensor | None = None  # (B, J, 2), NaN where unknown
        self.n_chunks = 0  # stream chunks committed so far (the next chunk's absolute index)
        self._pending: list[tuple | None] = [None for _ in L]
        self._pending_info: tuple | None = None
        self._bufs: dict[tuple, tuple[torch.Tensor, int]] = {}  # the memory bank's buffers (``_append``)

    # -- what the attention reads -------------------------------------------------------------
    @property
    def has_text(self) -> bool:
        return self.text[0] is not None

    @property
    def n_tokens(self) -> int:
        """Tokens held per layer (text, retained chunks and memory): bounded for any stream length."""
        nt = 0 if self.text_valid is None else self.text_valid.shape[1]
        return nt + len(self.chunk_of) + len(self.mem_chunk_of)

    def nbytes(self) -> int:
        """Bytes of memory the cache keeps alive (the storage under its views: the bank's buffers,
        the pass a text prefix was cut from)."""
        ts = [t for pair in self.text if pair for t in pair] + [
            t for t in self.k + self.v + self.mem_k + self.mem_v + self.mem_kmean if t is not None]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in ts}
        return sum(storages.values())

    # -- writing --------------------------------------------------------------------------------
    def stage(self, layer: int, k: torch.Tensor, v: torch.Tensor, n_text: int) -> None:
        """This layer's keys (without time rotation) and values of the current pass, text first."""
        self._pending[layer] = (k.detach(), v.detach(), n_text)

    def stage_info(self, chunk_of: torch.Tensor, time_of: torch.Tensor, text_valid: torch.Tensor | None) -> None:
        """Absolute chunk index and frame time of the current pass's stream tokens; its text's validity."""
        self._pending_info = (chunk_of, time_of, text_valid)
        if self.position is not None and len(chunk_of):
            for c in range(int(chunk_of.min()), int(chunk_of.max()) + 1):
                if c not in self.chunk_pos:  # the position given when the chunk was made
                    self.chunk_pos[c] = self.position.detach().float().cpu()

    def query_positions(self, chunks: torch.Tensor) -> torch.Tensor | None:
        """(B, len(chunks), 2) positions of the chunks of a pass (NaN where unknown), or None."""
        if self.position is None:
            return None
        B = self.position.shape[0]
        nan = torch.full((B, 2), float("nan"))
        return torch.stack([self.chunk_pos.get(int(c), nan) for c in chunks.tolist()], 1)

    def commit(self, chunks: int | None = None) -> None:
        """Append the staged pass (all layers) to the cache, then evict what left the window;
        ``chunks``: only the pass's first ``chunks`` chunks (the rest was a later chunk's
        denoising, which a causal pass never lets the first ones see)."""
        if any(p is None for p in self._pending) or self._pending_info is None:
            raise RuntimeError("commit() without a full forward pass that staged every layer")
        chunk_of, time_of, text_valid = self._pending_info
        n = len(chunk_of)
        if chunks is not None and n:
            n = int((chunk_of < chunk_of.min() + chunks).sum())  # tokens come in chunk order
            chunk_of, time_of = chunk_of[:n], time_of[:n]
        for i, (k, v, nt) in enumerate(self._pending):
            if nt:
                self.text[i] = (k[:, :, :nt], v[:, :, :nt])
            ks, vs = k[:, :, nt : nt + n], v[:, :, nt : nt + n]
            if ks.shape[2]:  # (contiguous: a compiled stream then meets one memory layout)
                self.k[i] = ks.contiguous() if self.k[i] is None else torch.cat([self.k[i], ks], dim=2)
                self.v[i] = vs.contiguous() if self.v[i] is None else torch.cat([self.v[i], vs], dim=2)
        if text_valid is not None:
            self.text_valid = text_valid
        if len(chunk_of):
            self.chunk_of = torch.cat([self.chunk_of, chunk_of.cpu()])
            self.time_of = torch.cat([self.time_of, time_of.cpu()])
            self.n_chunks = int(chunk_of.max()) + 1
        self._pending = [None] * self.n_layers
        self._pending_info = None
        self._evict()

    def _evict(self) -> None:
        if not self.window:
            return
        old = (self.chunk_of >= self.sinks) & (self.chunk_of <= self.n_chunks - self.window)
        if not bool(old.any()):
            return
        keep = ~old
        old_chunks = torch.unique(self.chunk_of[old])
        if self.memory_chunks:
            m = self.memory_tokens
            for i in range(self.n_layers):
                pk = pool_chunks(self.k[i][:, :, old], len(old_chunks), m)
                pv = pool_chunks(self.v[i][:, :, old], len(old_chunks), m)
                pm = chunk_means(pk, m)
                cap = self.memory_chunks * m
                self.mem_k[i] = self._append(("k", i), self.mem_k[i], pk, cap)
                self.mem_v[i] = self._append(("v", i), self.mem_v[i], pv, cap)
                self.mem_kmean[i] = self._append(("mean", i), self.mem_kmean[i], pm, self.memory_chunks)
            self.mem_chunk_of = torch.cat([self.mem_chunk_of, old_chunks.repeat_interleave(m)])
            B = self.k[0].shape[0]
            nan = torch.full((B, 2), float("nan"))
            pos = torch.stack([self.chunk_pos.pop(c, nan) for c in old_chunks.tolist()], 1)  # (B, n_old, 2)
            self.mem_pos = pos if self.mem_pos is None else torch.cat([self.mem_pos, pos], 1)
            excess = len(self.mem_chunk_of) - self.memory_chunks * m
            if excess > 0:  # first in, first out
                for i in range(self.n_layers):
                    self.mem_k[i], self.mem_v[i] = self.mem_k[i][:, :, excess:], self.mem_v[i][:, :, excess:]
                    self.mem_kmean[i] = self.mem_kmean[i][:, :, excess // m :]
                self.mem_chunk_of = self.mem_chunk_of[excess:]
                self.mem_pos = self.mem_pos[:, excess // m :]
        else:
            for c in old_chunks.tolist():
                self.chunk_pos.pop(c, None)
        span = _contiguous(old)
        for i in range(self.n_layers):
            if span is None:
                self.k[i], self.v[i] = self.k[i][:, :, keep], self.v[i][:, :, keep]
            else:  # (tokens are in chunk order: the evicted chunks are one run after the sinks)
                a, b = span
                self.k[i] = torch.cat([self.k[i][:, :, :a], self.k[i][:, :, b:]], 2)
                self.v[i] = torch.cat([self.v[i][:, :, :a], self.v[i][:, :, b:]], 2)
        self.chunk_of, self.time_of = self.chunk_of[keep], self.time_of[keep]

    def _append(self, key: tuple, held: torch.Tensor | None, new: torch.Tensor, cap: int) -> torch.Tensor:
        """``held`` (B, H, n, Dh) with ``new`` appended along the tokens, as a view into a buffer with
        room for about two banks, so adding a chunk to the bank writes it instead of copying the
        whole bank (8 layers x 3 tensors every chunk); the buffer is compacted when it runs out of
        room. A ``held`` that is not the tail of this key's buffer (a bank split out of a batch) is
        copied into a fresh one."""
        n = 0 if held is None else held.shape[2]
        buf, end = self._bufs.get(key, (None, 0))
        tail = (buf is not None and held is not None and n <= end and held.dtype == buf.dtype
                and held.shape[:2] == buf.shape[:2] and held.data_ptr() == buf[:, :, end - n : end].data_ptr())
        if not tail or end + new.shape[2] > buf.shape[2]:
            size = max(2 * cap, n + new.shape[2]) + new.shape[2]
            fresh = new.new_empty(*new.shape[:2], size, new.shape[3])
            if n:
                fresh[:, :, :n] = held
            buf, end = fresh, n
        buf[:, :, end : end + new.shape[2]] = new
        end += new.shape[2]
        self._bufs[key] = (buf, end)
        return buf[:, :, end - n - new.shape[2] : end]

    def drop_chunks_from(self, first: int) -> None:
        """Forget retained chunks with index >= first (to re-commit them, e.g. under a new prompt)."""
        keep = self.chunk_of < first
        for i in range(self.n_layers):
            if self.k[i] is not None:
                self.k[i], self.v[i] = self.k[i][:, :, keep], self.v[i][:, :, keep]
        self.chunk_of, self.time_of = self.chunk_of[keep], self.time_of[keep]
        self.n_chunks = first


def _contiguous(mask: torch.Tensor) -> tuple[int, int] | None:
    """(a, b) when ``mask`` is True exactly on positions a..b-1, else None."""
    idx = mask.nonzero().flatten()
    if not len(idx):
        return None
    a, b = int(idx[0]), int(idx[-1]) + 1
    return (a, b) if b - a == len(idx) else None
