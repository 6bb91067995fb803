"""The bounded KV cache of a stream: text, sink chunks, a window of recent chunks, a memory bank.

What a new chunk can attend to (the *attention view*, ``model.attention``), and what this cache
keeps so that streaming sees exactly what training saw:

    text       the prompt's tokens; replaced when the prompt changes
    sinks      the first ``sinks`` chunks, never evicted (StreamingLLM's attention sinks,
               Xiao et al. 2024; LongLive's frame sink, Yang et al. 2025); with ``sink_every`` > 0
               they are replaced every ``sink_every`` chunks by the ``sinks`` chunks that last left
               the window, so they follow a stream that moves on instead of tying it to its start
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


def pool_chunks(x: torch.Tensor, n_chunks: int, tokens: int) -> torch.Tensor:
    """(B, H, n_chunks * n, Dh) -> (B, H, n_chunks * tokens, Dh): each chunk's tokens averaged in
    ``tokens`` consecutive bands (for video, bands of patch rows), the memory bank's compression."""
    B, H, N, Dh = x.shape
    n = N // n_chunks
    y = x.reshape(B, H, n_chunks, n, Dh)
    # the bands of adaptive average pooling (band i: floor(i n / tokens) .. ceil((i + 1) n / tokens)),
    # written as means of slices: CUDA's adaptive_avg_pool1d reads out of bounds at a stream's
    # shapes (an illegal memory access at 854x480 with a 1B model, torch 2.11 on an H200; log.md)
    bands = [y[:, :, :, (i * n) // tokens : -((-(i + 1) * n) // tokens)].mean(3) for i in range(tokens)]
    return torch.stack(bands, 3).reshape(B, H, n_chunks * tokens, Dh)


def chunk_means(pooled: torch.Tensor, tokens: int) -> torch.Tensor:
    """(B, H, J * tokens, Dh) pooled memory -> (B, H, J, Dh): one mean key per chunk, the block
    score's key (``attention.rank_memory``), kept with the bank so it is made once."""
    B, H, N, Dh = pooled.shape
    return pooled.reshape(B, H, N // tokens, tokens, Dh).mean(3)


class LayerBuffer:
    """Per-layer tensors (B, H, n, Dh) with the same n in every layer, held as views into one buffer
    (layers, B, H, capacity, Dh), so that appending to every layer, cutting a span out of every
    layer and pooling every layer are one op each instead of one per layer (a stream's cache
    commit was ~100 small ops a chunk). Appends write into spare room at the end; the buffer is
    compacted or grown when it runs out."""

    def __init__(self):
        self.buf: torch.Tensor | None = None
        self.start = self.end = 0
        self.views: list[torch.Tensor] = []

    def holds(self, tensors: list) -> bool:
        """Whether ``tensors`` are this buffer's current views (not replaced from outside, e.g. by
        stacking streams into a batch or by ``drop_chunks_from``)."""
        return (self.buf is not None and len(tensors) == len(self.views)
                and all(a is b for a, b in zip(tensors, self.views)))

    def adopt(self, tensors: list[torch.Tensor]) -> None:
        """Hold (a copy of) these per-layer tensors."""
        self.buf, self.start, self.end = torch.stack(tensors), 0, tensors[0].shape[2]
        self._view()

    def sync(self, tensors: list) -> None:
        """Hold what ``tensors`` (the cache's per-layer lists) say is held: nothing when they are
        None, a copy when they were replaced from outside, else no change. A copy gets a buffer of
        the size already held when it fits, so the views keep their strides (a compiled stream
        specializes on them: a new layout after a batch split recompiled for 26 s); a fresh one, as
        views of the old buffer may still be read (``Stream._recache`` restores rows from them)."""
        if tensors[0] is None:
            self.buf, self.start, self.end, self.views = None, 0, 0, []
        elif not self.holds(tensors):
            new, b = torch.stack(tensors), self.buf
            n = new.shape[3]
            if b is not None and b.dtype == new.dtype and b.shape[:3] == new.shape[:3] and b.shape[3] >= n:
                fresh = b.new_empty(b.shape)
                fresh[:, :, :, :n] = new
                new = fresh
            self.buf, self.start, self.end = new, 0, n
            self._view()

    def stacked(self) -> torch.Tensor:
        """(layers, B, H, n, Dh): every layer's tensor, one view."""
        return self.buf[:, :, :, self.start : self.end]

    def append(self, new: torch.Tensor, room: int = 0) -> None:
        """Append ``new`` (layers, B, H, m, Dh) along the tokens; a new buffer gets ``room`` tokens
        of spare capacity at least, and keeps its size when compacted (so a bounded cache settles
        on one buffer size)."""
        m = new.shape[3]
        if self.buf is None:
            self.buf, self.start, self.end = new.new_empty(*new.shape[:3], m + max(room, m), new.shape[4]), 0, 0
        elif new.shape[:3] != self.buf.shape[:3]:
            raise ValueError(f"cache append of {tuple(new.shape)} to {tuple(self.buf.shape)}: layers, batch or heads differ")
        elif new.dtype != self.buf.dtype:  # (a pass outside the stream's autocast) both in the wider type, as cat would
            dt = torch.promote_types(new.dtype, self.buf.dtype)
            self.adopt([t.to(dt) for t in self.views])
            new = new.to(dt)
        if self.end + m > self.buf.shape[3]:
            n = self.end - self.start
            cap = self.buf.shape[3] if n + m <= self.buf.shape[3] else max(2 * (n + m), n + m + room)
            fresh = self.buf.new_empty(*self.buf.shape[:3], cap, self.buf.shape[4])
            fresh[:, :, :, :n] = self.stacked()
            self.buf, self.start, self.end = fresh, 0, n
        self.buf[:, :, :, self.end : self.end + m] = new
        self.end += m
        self._view()

    def drop_front(self, n: int) -> None:
        self.start += n
        self._view()

    def cut(self, a: int, b: int) -> None:
        """Remove held tokens a..b-1 (counted from the first held one), moving the shorter side."""
        s = self.start
        if a <= self.end - s - b:  # the head is shorter: move it right
            if a:
                self.buf[:, :, :, s + b - a : s + b] = self.buf[:, :, :, s : s + a].clone()
            self.start += b - a
        else:
            tail = self.end - s - b
            if tail:
                self.buf[:, :, :, s + a : s + a + tail] = self.buf[:, :, :, s + b : self.end].clone()
            self.end -= b - a
        self._view()

    def _view(self) -> None:
        self.views = list(self.stacked().unbind(0))


class KVCache:
    def __init__(self, n_layers: int, sinks: int = 0, window: int = 0, memory_chunks: int = 0,
                 memory_tokens: int = 4, sink_every: int = 0):
        if min(sinks, window, memory_chunks, sink_every) < 0 or memory_tokens < 1:
            raise ValueError("cache sizes must be >= 0 (memory_tokens >= 1)")
        self.n_layers, self.sinks, self.window, self.sink_every = n_layers, sinks, window, sink_every
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
        # refreshed sinks: full keys/values (2L, B, H, n, Dh) of the last ``sinks`` chunks that left
        # the window, newest last, and the chunk count at the last refresh
        self._gone: torch.Tensor | None = None
        self._gone_time: torch.Tensor | None = None
        self._refreshed_at = 0
        self._pending: list[tuple | None] = [None for _ in L]
        self._pending_info: tuple | None = None
        # the retained keys then values of every layer, the memory bank's likewise, and its mean keys,
        # each in one buffer (``self.k`` etc. are views into them)
        self._kv, self._mem, self._mean = LayerBuffer(), LayerBuffer(), LayerBuffer()

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
        nt = self._pending[0][2]
        if nt:
            self.text = [(k[:, :, :nt], v[:, :, :nt]) for k, v, _ in self._pending]
        if n:
            self.hold()
            new = torch.stack([p[0][:, :, nt : nt + n] for p in self._pending]
                              + [p[1][:, :, nt : nt + n] for p in self._pending])  # (2L, B, H, n, Dh)
            # room for two views' worth: a bounded cache compacts its buffer every ~window chunks
            self._kv.append(new, room=2 * n * (self.sinks + self.window + 1) if self.window else 0)
            self._expose()
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
        L = self.n_layers
        self.hold()
        span = _contiguous(old)  # tokens are in chunk order: the evicted chunks are one run after the sinks
        if span is None:  # (for safety: tokens out of chunk order) the evicted ones first, then the rest
            order = torch.cat([old.nonzero().flatten(), keep.nonzero().flatten()])
            self._kv.adopt([t[:, :, order] for t in self.k + self.v])
            self.chunk_of, self.time_of, old, keep = self.chunk_of[order], self.time_of[order], old[order], keep[order]
            span = (0, int(old.sum()))
        a, b = span
        if self.memory_chunks:
            m = self.memory_tokens
            gone = self._kv.stacked()[:, :, :, a:b]  # (2L, B, H, n_old, Dh): keys then values
            _, B, H, _, Dh = gone.shape
            pooled = pool_chunks(gone.reshape(2 * L * B, H, -1, Dh), len(old_chunks), m).view(2 * L, B, H, -1, Dh)
            means = chunk_means(pooled[:L].reshape(L * B, H, -1, Dh), m).view(L, B, H, -1, Dh)
            for buf, new in ((self._mem, pooled), (self._mean, means)):
                buf.append(new, room=2 * self.memory_chunks * new.shape[3] // len(old_chunks))
            self.mem_chunk_of = torch.cat([self.mem_chunk_of, old_chunks.repeat_interleave(m)])
            nan = torch.full((B, 2), float("nan"))
            pos = torch.stack([self.chunk_pos.pop(c, nan) for c in old_chunks.tolist()], 1)  # (B, n_old, 2)
            self.mem_pos = pos if self.mem_pos is None else torch.cat([self.mem_pos, pos], 1)
            excess = len(self.mem_chunk_of) - self.memory_chunks * m
            if excess > 0:  # first in, first out
                self._mem.drop_front(excess)
                self._mean.drop_front(excess // m)
                self.mem_chunk_of = self.mem_chunk_of[excess:]
                self.mem_pos = self.mem_pos[:, excess // m :]
        else:
            for c in old_chunks.tolist():
                self.chunk_pos.pop(c, None)
        if self.sink_every and self.sinks:
            self._keep_gone(a, b, len(old_chunks))
        self._kv.cut(a, b)
        self._expose()
        self.chunk_of, self.time_of = self.chunk_of[keep], self.time_of[keep]
        if self.sink_every and self.sinks and self.n_chunks - self._refreshed_at >= self.sink_every:
            self._refresh_sinks()

    def _keep_gone(self, a: int, b: int, n_old: int) -> None:
        """Remember the full keys/values of the chunks being evicted (tokens a..b-1), the last
        ``sinks`` of them: the next sinks."""
        per = (b - a) // n_old
        gone = self._kv.stacked()[:, :, :, a:b]
        t = self.time_of[a:b]
        if self._gone is not None and self._gone.shape[:3] == gone.shape[:3]:
            gone, t = torch.cat([self._gone, gone], 3), torch.cat([self._gone_time, t])
        n = min(gone.shape[3], self.sinks * per)
        self._gone, self._gone_time = gone[:, :, :, -n:].clone(), t[-n:].clone()

    def _refresh_sinks(self) -> None:
        """Put the last ``sinks`` evicted chunks in the sinks' place (keys carry no time rotation and
        sinks sit at the fixed ``outside`` distance, so only the content changes). The old sinks are
        dropped: refreshed ones are in the memory bank already, pooled when they left the window; the
        stream's first chunks, never evicted, are not, and are gone."""
        sink = self.chunk_of < self.sinks
        n = int(sink.sum())
        if self._gone is None or self._gone.shape[3] != n or not n:
            return  # fewer chunks have left the window than there are sinks: keep the first ones
        span = _contiguous(sink)
        if span is None or span[0] != 0:
            return
        self.hold()
        self._kv.stacked()[:, :, :, :n] = self._gone
        self.time_of = torch.cat([self._gone_time, self.time_of[n:]])
        self._refreshed_at = self.n_chunks

    def hold(self) -> None:
        """Copy per-layer tensors set from outside (``engine.batch`` splitting a batch,
        ``drop_chunks_from``) into this cache's own buffers, so every pass reads views of the usual
        layout; nothing to do when they are the buffers' views already."""
        self._kv.sync(self.k + self.v)
        self._mem.sync(self.mem_k + self.mem_v)
        self._mean.sync(self.mem_kmean)
        self._expose()

    def _expose(self) -> None:
        """Point the per-layer lists the attention reads at the buffers' current views."""
        L = self.n_layers
        if self._kv.buf is not None:
            self.k, self.v = self._kv.views[:L], self._kv.views[L:]
        if self._mem.buf is not None:
            self.mem_k, self.mem_v, self.mem_kmean = self._mem.views[:L], self._mem.views[L:], self._mean.views

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
