"""Several independent streams, started at different times, advanced in one forward pass.

A stream's cache is full once its window and memory bank have filled: from then on it holds the
same *relative* structure as any other full stream of the same model (the same offsets of its
retained and memory chunks from the chunk being made, its sinks outside the window). Such
streams can be stacked row by row into one batched cache, stepped together with the one rollout
function (each row with its own noise generator, prompt and action) and split back: every
stream gets exactly the chunk it would have made alone (tested). The server batches its due
sessions this way; streams that are not full yet, or that restart from an image this step,
step alone.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..model.cache import KVCache
from .ground import Together
from .rollout import Conditioning, flush, generate_chunk
from .stream import Chunk, Stream, to_frames, to_pcm


def signature(s: Stream) -> tuple | None:
    """Streams with equal signatures can step together; None: this one must step alone."""
    with s._lock:
        special = any(e.kind == "image" or e.kind == "audio" for e in s._pending)
    if special or any(len(x) for x in s._audio_in) or s.B != 1:
        return None
    sig = []
    for b in s.branches:
        c = b.cache
        if not c.window or c.has_text != b.use_text or c.n_chunks < c.sinks + c.window:
            return None  # not full yet: sinks still inside the window
        if c.sink_every:
            return None  # refreshed sinks: each stream refreshes on its own count (not stacked yet)
        if c.memory_chunks and len(c.mem_chunk_of) < c.memory_chunks * c.memory_tokens:
            return None
        sink = c.chunk_of < c.sinks
        sig.append((tuple((c.chunk_of[~sink] - c.n_chunks).tolist()), int(sink.sum()),
                    tuple((c.mem_chunk_of - c.n_chunks).tolist()), b.use_text, b.use_actions, b.pending is not None))
    w = s.world
    return (id(w), tuple(w.latent_shape), s.rcfg, s.config.bf16, tuple(sig))


def _pad_text(pairs: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.cat([F.pad(p[0], (0, 0, 0, n - p[0].shape[2])) for p in pairs])
    v = torch.cat([F.pad(p[1], (0, 0, 0, n - p[1].shape[2])) for p in pairs])
    return k, v


def _stack(caches: list[KVCache]) -> KVCache:
    c0 = caches[0]
    out = KVCache(c0.n_layers, c0.sinks, c0.window, c0.memory_chunks, c0.memory_tokens)
    nt = max(c.text_valid.shape[1] for c in caches) if c0.has_text else 0
    if c0.has_text:
        out.text_valid = torch.cat([F.pad(c.text_valid, (0, nt - c.text_valid.shape[1])) for c in caches])
    for i in range(c0.n_layers):
        if c0.has_text:
            out.text[i] = _pad_text([c.text[i] for c in caches], nt)
        out.k[i] = torch.cat([c.k[i] for c in caches])
        out.v[i] = torch.cat([c.v[i] for c in caches])
        if c0.mem_k[i] is not None:
            out.mem_k[i] = torch.cat([c.mem_k[i] for c in caches])
            out.mem_v[i] = torch.cat([c.mem_v[i] for c in caches])
            out.mem_kmean[i] = torch.cat([c.mem_kmean[i] for c in caches])
    out.chunk_of, out.time_of, out.mem_chunk_of = c0.chunk_of.clone(), c0.time_of.clone(), c0.mem_chunk_of.clone()
    out.n_chunks = c0.n_chunks
    if c0.mem_pos is not None:
        out.mem_pos = torch.cat([c.mem_pos for c in caches])
    return out


def _split(batched: KVCache, caches: list[KVCache], frames_per_chunk: int) -> None:
    """Write each row of the stepped batch back into its own stream's cache (own chunk numbers)."""
    shift_new = batched.n_chunks
    for r, c in enumerate(caches):
        d = c.n_chunks + 1 - shift_new  # this stream's numbering minus the batch's (after the commit)
        for i in range(c.n_layers):
            c.k[i], c.v[i] = batched.k[i][r : r + 1], batched.v[i][r : r + 1]
            if batched.mem_k[i] is not None:
                c.mem_k[i], c.mem_v[i] = batched.mem_k[i][r : r + 1], batched.mem_v[i][r : r + 1]
                c.mem_kmean[i] = batched.mem_kmean[i][r : r + 1]
        sink = batched.chunk_of < c.sinks
        c.chunk_of = torch.where(sink, batched.chunk_of, batched.chunk_of + d)
        c.time_of = torch.where(sink, batched.time_of, batched.time_of + d * frames_per_chunk)
        c.mem_chunk_of = batched.mem_chunk_of + d
        if batched.mem_pos is not None:
            c.mem_pos = batched.mem_pos[r : r + 1]
        c.n_chunks = batched.n_chunks + d
        c._rot = [None] * c.n_layers
        c.hold()  # its own buffers again: a stream stepping alone next must not meet new strides


def _stack_state(states: list[dict]) -> dict:
    return {k: torch.cat([s[k] for s in states]) for k in states[0]}


def _split_state(batched: dict, states: list[dict]) -> None:
    for r, s in enumerate(states):
        for k, v in batched.items():
            s[k] = v[r : r + 1]


@torch.no_grad()
def step_together(streams: list[Stream]) -> list[Chunk]:
    """One chunk for each stream, in one forward per denoising step. All must share a signature."""
    if len(streams) == 1:
        return [streams[0].step()]
    sig = signature(streams[0])
    if sig is None or any(signature(s) != sig for s in streams[1:]):
        raise ValueError("these streams cannot step together (not full yet, or different models/settings)")
    t0 = time.perf_counter()
    s0 = streams[0]
    w, m = s0.world, s0._model()
    cf = m.cfg.chunk_frames
    for s in streams:  # a stream alone defers its last commit; stacked caches must hold every chunk
        with s._autocast():
            flush(m, s.branches)
    for s in streams:  # prompt changes, actions: each stream's own events, on its own cache
        with s._lock:
            events, s._pending = list(s._pending), type(s._pending)()
        with s._autocast():
            s._apply(events)
    branches = []
    for j, b in enumerate(s0.branches):
        bb = type(b).__new__(type(b))
        bb.use_text, bb.use_actions, bb.pending, bb.stack, bb._text = b.use_text, b.use_actions, None, (), None
        bb.cache = _stack([s.branches[j].cache for s in streams])
        lasts = [s.branches[j].last_video for s in streams]
        bb.last_video = None if any(x is None for x in lasts) else torch.cat(lasts)
        owns = [s.branches[j].last_own for s in streams]
        bb.last_own = None if any(x is None for x in owns) else torch.cat(owns)
        branches.append(bb)
    nt = max(s.text.shape[1] for s in streams)  # (the caches hold the prompts; the pooled ones condition adaLN)
    text = torch.cat([F.pad(s.text, (0, 0, 0, nt - s.text.shape[1])) for s in streams])
    mask = torch.cat([F.pad(s.text_mask, (0, nt - s.text_mask.shape[1])) for s in streams])
    pooled = torch.cat([s.text_pooled for s in streams])
    acts = torch.tensor([s.actions[0] for s in streams])[:, None].repeat(1, cf)
    cond = Conditioning(text, mask, pooled, acts, action_offset=s0.chunk * cf)
    gens = [g for s in streams for g in s.generators]
    ground = None
    if s0.ground is not None:  # each stream's own ground, at its own frame count
        ground = Together([s.ground for s in streams], [(s.chunk - s0.chunk) * cf for s in streams])
    with s0._autocast():
        v, a = generate_chunk(m, branches, s0.rcfg, cond, s0.chunk, w.latent_shape, gens, ground=ground)
    v, a = v.float(), None if a is None else a.float()
    for j in range(len(branches)):
        _split(branches[j].cache, [s.branches[j].cache for s in streams], cf)
        for r, s in enumerate(streams):
            s.branches[j].last_video = branches[j].last_video[r : r + 1]
            s.branches[j].last_own = branches[j].last_own[r : r + 1]
    vstate = _stack_state([s.vstate for s in streams])
    astate = _stack_state([s.astate for s in streams]) if w.aae is not None else None
    vdecode, adecode = w.decoders(s0.config.compile)
    with s0._autocast():
        x = vdecode(v, vstate)
        pcm = to_pcm(adecode(a, astate)) if astate is not None and a is not None else None
    _split_state(vstate, [s.vstate for s in streams])
    if astate is not None:
        _split_state(astate, [s.astate for s in streams])
    frames = to_frames(x)
    seconds = time.perf_counter() - t0
    return [s._finish(v[r : r + 1], None if a is None else a[r : r + 1], acts[r : r + 1], frames[r : r + 1],
                      None if pcm is None else pcm[r : r + 1], seconds) for r, s in enumerate(streams)]
