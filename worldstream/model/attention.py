"""The attention view: which keys a token sees, the same in training and in streaming.

A stream token of (absolute) chunk c attends to

    its own chunk and earlier chunks within the window   (c - j < window; all when window = 0)
    the text prefix                                       (its valid tokens)
    sink chunks that left the window                      (j < sinks <= c - window ... j)
    the top-k memory chunks that left the window          (pooled keys, chosen per query chunk by
                                                           mean-query . mean-key similarity)

Text tokens attend to the valid text only. Training passes a whole clip with no cache: every
chunk is present in full, and the sinks and pooled memory entries are built from the clip
itself with the same masks, so a streamed chunk sees exactly what it saw in training
("train the way you infer"; tested: streaming equals the full pass).

Time positions. Window keys are rotated by their true time offset to the query (RoPE is
relative, Su et al. 2021). Text, sinks and memory live *outside* the window and are placed at a
fixed distance ``outside`` frames before the query, however old they are, so time offsets
never exceed what training showed. Two rotations of one query cannot share one dot product,
so queries and keys are widened to 2 Dh: [window part | outside part], with the unused half of
each key zero; scores are exactly <R(dt) q, k> for window keys and <R(outside) q, k> outside.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .cache import KVCache, pool_chunks
from .rope import apply_rope


@dataclasses.dataclass
class ViewContext:
    """Per forward pass, shared by all layers."""

    n_text: int  # text tokens in this pass (0 when the text comes from the cache)
    text_valid: torch.Tensor | None  # (B, Nt) for this pass's text
    chunk_of: torch.Tensor  # (Ns,) absolute chunk index of this pass's stream tokens
    time_angles_q: torch.Tensor  # (Ns, Dh/2) time rotation of this pass's stream tokens (relative to t_ref)
    t_ref: int  # frame time that angles are relative to
    outside_angles: torch.Tensor  # (1, Dh/2) rotation by `outside` frames
    time_angles: object  # fn(times (N,) long) -> (N, Dh/2) relative to t_ref
    sinks: int
    window: int
    memory_tokens: int
    memory_topk: int
    tokens_per_chunk: int
    memo: dict = dataclasses.field(default_factory=dict)  # masks shared by layers


def _rot(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    return apply_rope(x, angles[None].expand(x.shape[0], -1, -1))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: ViewContext, cache: KVCache | None,
           layer: int) -> torch.Tensor:
    """q, k, v (B, H, N, Dh) of this pass (text first, then stream tokens), spatially rotated,
    not yet rotated in time. Returns the attention output (B, H, N, Dh)."""
    B, H, N, Dh = q.shape
    nt = ctx.n_text
    if cache is not None:
        cache.stage(layer, k, v, nt)
    zeros = lambda x: torch.zeros_like(x)  # noqa: E731
    qs, ks, vs = q[:, :, nt:], k[:, :, nt:], v[:, :, nt:]
    # -- window group: retained cached chunks, then this pass's stream tokens -----------------------
    win_k, win_v, win_chunk, win_time = [], [], [], []
    if cache is not None and cache.k[layer] is not None and len(cache.chunk_of):
        win_k.append(cache.k[layer])
        win_v.append(cache.v[layer])
        win_chunk.append(cache.chunk_of.to(q.device))
        win_time.append(cache.time_of.to(q.device))
    win_k.append(ks)
    win_v.append(vs)
    win_chunk.append(ctx.chunk_of)
    kw_raw, vw, cw = torch.cat(win_k, 2), torch.cat(win_v, 2), torch.cat(win_chunk)
    tw = torch.cat(win_time) if len(win_time) else None
    aw = ctx.time_angles_q if tw is None else torch.cat([ctx.time_angles(tw), ctx.time_angles_q])
    kw = _rot(kw_raw, aw)
    # -- outside group: text, sinks out of the window, memory ---------------------------------------
    out_k, out_v, parts = [], [], []
    if nt:
        out_k.append(k[:, :, :nt]), out_v.append(v[:, :, :nt]), parts.append(("text", nt))
    elif cache is not None and cache.has_text:
        tk, tv = cache.text[layer]
        out_k.append(tk), out_v.append(tv), parts.append(("text", tk.shape[2]))
    if ctx.window and ctx.sinks:
        sink = cw < ctx.sinks
        if bool(sink.any()):
            out_k.append(kw_raw[:, :, sink]), out_v.append(vw[:, :, sink])
            parts.append(("sink", int(sink.sum())))
    mem_chunk = None
    if ctx.window and ctx.memory_topk:
        mk, mv, mc = [], [], []
        if cache is not None and cache.mem_k[layer] is not None and len(cache.mem_chunk_of):
            mk.append(cache.mem_k[layer]), mv.append(cache.mem_v[layer]), mc.append(cache.mem_chunk_of.to(q.device))
        n_cur = len(ctx.chunk_of) // ctx.tokens_per_chunk if ctx.tokens_per_chunk else 0
        if n_cur > 1:  # a multi-chunk pass (training): its own chunks are memory for its later chunks
            mk.append(pool_chunks(ks, n_cur, ctx.memory_tokens)), mv.append(pool_chunks(vs, n_cur, ctx.memory_tokens))
            mc.append(ctx.chunk_of.view(n_cur, -1)[:, 0].repeat_interleave(ctx.memory_tokens))
        if mk:
            out_k.append(torch.cat(mk, 2)), out_v.append(torch.cat(mv, 2))
            mem_chunk = torch.cat(mc)
            parts.append(("memory", len(mem_chunk)))
    ko = torch.cat(out_k, 2) if out_k else kw[:, :, :0]
    vo = torch.cat(out_v, 2) if out_v else vw[:, :, :0]
    # -- widened queries and keys: [window part | outside part] ----------------------------------
    q_win = torch.cat([q[:, :, :nt], _rot(qs, ctx.time_angles_q)], 2)
    q_out = _rot(q, ctx.outside_angles.expand(N, -1))
    Q = torch.cat([q_win, q_out], -1)
    K = torch.cat([torch.cat([kw, zeros(kw)], -1), torch.cat([zeros(ko), ko], -1)], 2)
    V = torch.cat([vw, vo], 2)
    mask = _mask(ctx, cache, cw, parts, mem_chunk, qs, ko, B, N, q.device)
    return F.scaled_dot_product_attention(Q, K, V, attn_mask=mask, scale=Dh ** -0.5)


def _mask(ctx: ViewContext, cache: KVCache | None, cw: torch.Tensor, parts: list, mem_chunk, qs: torch.Tensor,
          ko: torch.Tensor, B: int, N: int, device) -> torch.Tensor:
    """(B, 1, N, Nw + No) bool, True = may attend."""
    nt, cq = ctx.n_text, ctx.chunk_of
    key = ("static", len(cw), tuple(p[:2] for p in parts if p[0] != "memory"))
    if key not in ctx.memo:  # everything but the memory selection is the same in every layer
        d = cq[:, None] - cw[None, :]  # (Ns, Nw)
        win = d >= 0
        if ctx.window:
            win &= d < ctx.window
        rows = [torch.cat([torch.zeros(nt, len(cw), dtype=torch.bool, device=device), win])[None].expand(B, -1, -1)]
        for name, n in parts:
            if name == "text":
                tv = ctx.text_valid if nt else cache.text_valid
                tv = tv.to(device)
                m = tv[:, None, :].expand(B, N, n).clone()
                if nt:  # a text token always sees itself (an all-padding prompt would have no keys)
                    m[:, torch.arange(nt), torch.arange(nt)] = True
                rows.append(m)
            elif name == "sink":
                sc = cw[cw < ctx.sinks]
                m = (cq[:, None] - sc[None, :]) >= ctx.window
                rows.append(torch.cat([torch.zeros(nt, n, dtype=torch.bool, device=device), m])[None].expand(B, -1, -1))
        ctx.memo[key] = torch.cat(rows, 2)
    mask = ctx.memo[key]
    if mem_chunk is not None:
        mask = torch.cat([mask, _memory_selection(ctx, qs, ko[:, :, -len(mem_chunk):], mem_chunk, B, N, device)], 2)
    return mask[:, None]


def _memory_selection(ctx: ViewContext, qs: torch.Tensor, mk: torch.Tensor, mem_chunk: torch.Tensor, B: int, N: int,
                      device) -> torch.Tensor:
    """(B, N, M) bool: for each query chunk, the top-k memory chunks by mean-query . mean-key
    similarity (averaged over heads) among those that left its window."""
    m = ctx.memory_tokens
    cq = ctx.chunk_of
    q_chunks, q_inv = torch.unique(cq, return_inverse=True)
    Kq, J = len(q_chunks), len(mem_chunk) // m
    H, Dh = qs.shape[1], qs.shape[3]
    q_mean = torch.zeros(B, H, Kq, Dh, dtype=qs.dtype, device=device).index_add_(2, q_inv, qs)
    q_mean = q_mean / torch.bincount(q_inv, minlength=Kq).to(qs.dtype)[None, None, :, None]
    k_mean = mk.reshape(B, H, J, m, Dh).mean(3)
    score = torch.einsum("bhqd,bhjd->bqj", q_mean.float(), k_mean.float()) / H  # (B, Kq, J)
    mc = mem_chunk.view(J, m)[:, 0]
    eligible = (mc[None, :] >= ctx.sinks) & (q_chunks[:, None] - mc[None, :] >= ctx.window)  # (Kq, J)
    score = score.masked_fill(~eligible[None], float("-inf"))
    k = min(ctx.memory_topk, J)
    top = score.topk(k, dim=2).indices  # (B, Kq, k)
    chosen = torch.zeros(B, Kq, J, dtype=torch.bool, device=device).scatter_(2, top, True) & eligible[None]
    chosen = chosen.repeat_interleave(m, dim=2)[:, q_inv]  # (B, Ns, M)
    return torch.cat([torch.zeros(B, ctx.n_text, len(mem_chunk), dtype=torch.bool, device=device), chosen], 1)
