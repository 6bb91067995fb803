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

A streamed pass may hold two chunks: the last chunk, committed clean, and the next one's first
denoising step (``rollout.generate_chunk(defer=True)``). Each query chunk gets its own view: a
retained chunk that is in the first one's window but out of the second one's is offered to the
second pooled, as a memory candidate, exactly as the bank would hold it after the commit.

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

from .cache import KVCache, chunk_means, pool_chunks
from .rope import Rotation, rotate


@dataclasses.dataclass
class ViewContext:
    """Per forward pass, shared by all layers."""

    n_text: int  # text tokens in this pass (0 when the text comes from the cache)
    text_valid: torch.Tensor | None  # (B, Nt) for this pass's text
    chunk_of: torch.Tensor  # (Ns,) absolute chunk index of this pass's stream tokens
    rot_q: Rotation  # time rotation of this pass's stream tokens (relative to the pass's first frame)
    rot_outside: Rotation  # rotation by `outside` frames
    time_angles: object  # fn(times (N,) long) -> (N, Dh/2) relative to the pass's first frame
    sinks: int
    window: int
    memory_tokens: int
    memory_topk: int
    memory_p: float
    memo: dict = dataclasses.field(default_factory=dict)  # masks shared by layers
    streamed: object = None  # the dense part of a streamed pass (``streamed_attention``, or a compiled copy)
    memory: object = None  # the memory part of a streamed pass (``streamed_memory``, or a compiled copy)


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
    cached = cache is not None and cache.k[layer] is not None and len(cache.chunk_of) > 0
    if cached:
        kc_raw, vc = cache.k[layer], cache.v[layer]
        if "cached" not in ctx.memo:  # the same for every layer of the pass
            cc = cache.chunk_of.to(q.device)
            ctx.memo["cached"] = (cc, torch.cat([cc, ctx.chunk_of]),
                                  Rotation(ctx.time_angles(cache.time_of.to(q.device))))  # by time to the query
        cc, cw, rot_cached = ctx.memo["cached"]
    else:
        cw = ctx.chunk_of
    # -- outside group: text, sinks out of the window, memory ---------------------------------------
    out_k, out_v, parts = [], [], []
    if nt:
        out_k.append(k[:, :, :nt]), out_v.append(v[:, :, :nt]), parts.append(("text", nt))
    elif cache is not None and cache.has_text:
        tk, tv = cache.text[layer]
        out_k.append(tk), out_v.append(tv), parts.append(("text", tk.shape[2]))
    if ctx.window and ctx.sinks:
        if "sink_spans" not in ctx.memo:  # sinks are the first tokens of the cache and of the pass
            ctx.memo["sink_spans"] = (_span(cc < ctx.sinks, ctx.memo, "sinks") if cached else slice(0, 0),
                                      _span(ctx.chunk_of < ctx.sinks, ctx.memo, "sinks_now"))
        ns, cur = ctx.memo["sink_spans"]
        n_sink = ns.stop - ns.start + cur.stop - cur.start
        if n_sink:
            sk = ([kc_raw[:, :, ns]] if ns.stop > ns.start else []) + ([ks[:, :, cur]] if cur.stop > cur.start else [])
            sv = ([vc[:, :, ns]] if ns.stop > ns.start else []) + ([vs[:, :, cur]] if cur.stop > cur.start else [])
            out_k.append(sk[0] if len(sk) == 1 else torch.cat(sk, 2))
            out_v.append(sv[0] if len(sv) == 1 else torch.cat(sv, 2))
            parts.append(("sink", n_sink))
    mem_bias = mem_mask = None
    if ctx.window and ctx.memory_topk:
        m = ctx.memory_tokens
        if "q_chunks" not in ctx.memo:
            ctx.memo["q_chunks"] = torch.unique(ctx.chunk_of, return_inverse=True)
        q_chunks, q_inv = ctx.memo["q_chunks"]
        n_cur = len(q_chunks)
        # memory candidates: the bank, retained chunks that are out of a later query chunk's window
        # (pooled, as the bank will hold them), and in a multi-chunk pass its own earlier chunks
        bank = cache is not None and cache.mem_k[layer] is not None and len(cache.mem_chunk_of) > 0
        n_left, left = 0, slice(0, 0)
        if cached and n_cur:
            if "left" not in ctx.memo:
                sel = (cc >= ctx.sinks) & (int(ctx.chunk_of.max()) - cc >= ctx.window)
                ctx.memo["left"] = (_span(sel, ctx.memo, "left_span"), torch.unique(cc[sel]))
            left, left_chunks = ctx.memo["left"]
            n_left = len(left_chunks)
        if "mem_chunks" not in ctx.memo:  # candidate chunk ids, the same in every layer of the pass
            mc = ([cache.mem_chunk_of.to(q.device)[::m]] if bank else []) + ([left_chunks] if n_left else [])
            if n_cur > 1:
                mc.append(q_chunks)
            ctx.memo["mem_chunks"] = torch.cat(mc) if mc else None
        mcc = ctx.memo["mem_chunks"]
        if mcc is not None and n_cur:
            if "eligible" not in ctx.memo:
                # a bounded bank holds the last ``memory_chunks`` chunks out of the window: a query
                # chunk never reaches further back than that (only a two-chunk pass could)
                horizon = cache.memory_chunks if cache is not None else 0
                near = _near(cache, q_chunks, mcc, q.device)
                ctx.memo["eligible"] = (eligible_memory(ctx, q_chunks, mcc, horizon),
                                        None if near is None else torch.nan_to_num(1e4 - near, nan=0.0))
            eligible, near_bias = ctx.memo["eligible"]
            bank_kv = (cache.mem_k[layer], cache.mem_v[layer], cache.mem_kmean[layer]) if bank else (None, None, None)
            left_kv = (kc_raw[:, :, left], vc[:, :, left]) if n_left else (None, None)
            if cached:  # streaming: gather the blocks each query chunk chose, attend to those only
                mkc, mvc, mem_bias = (ctx.memory or streamed_memory)(
                    qs, ks, vs, *bank_kv, *left_kv, eligible, near_bias, n_left, n_cur, m, ctx.memory_topk,
                    ctx.memory_p, nt)
            else:  # training: every query chunk its own choice, as a mask over all candidates
                mk, mv, mm = _candidates(ks, vs, *bank_kv, *left_kv, n_left, n_cur, m)
                order, valid = rank_memory(qs, mm, eligible, near_bias, ctx.memory_topk, ctx.memory_p, n_cur)
                chosen = torch.zeros(B, *eligible.shape, dtype=torch.bool, device=q.device).scatter_(2, order, valid)
                rows = chosen.repeat_interleave(m, dim=2)[:, q_inv]
                mkc, mvc = (x[0] if len(x) == 1 else torch.cat(x, 2) for x in (mk, mv))
                mem_mask = torch.cat([torch.zeros(B, nt, rows.shape[2], dtype=torch.bool, device=q.device), rows], 1)
            out_k.append(mkc), out_v.append(mvc)
            parts.append(("memory", mkc.shape[2]))
    ko = torch.cat(out_k, 2) if out_k else ks[:, :, :0]
    vo = torch.cat(out_v, 2) if out_v else vs[:, :, :0]
    if not cached:  # one pass over a whole clip (training): widened queries and keys, one fused attention
        ks_rot = ctx.rot_q(ks)
        q_win = torch.cat([q[:, :, :nt], ctx.rot_q(qs)], 2)
        q_out = ctx.rot_outside(q)
        Q = torch.cat([q_win, q_out], -1)
        K = torch.cat([torch.cat([ks_rot, zeros(ks_rot)], -1), torch.cat([zeros(ko), ko], -1)], 2)
        V = torch.cat([vs, vo], 2)
        mask = _mask(ctx, cache, cw, parts, mem_mask, B, N, q.device)
        # values padded to the widened head size: the fused (flash) CPU kernel needs one head size for
        # q, k and v, and otherwise PyTorch falls back to the math path (bmm, a materialised score
        # matrix, safe softmax), 1.8x slower forward and backward at a training clip's shapes (log.md)
        out = F.scaled_dot_product_attention(Q, K, F.pad(V, (0, Q.shape[-1] - Dh)), attn_mask=mask, scale=Dh ** -0.5)
        return out[..., :Dh]
    # streaming (few queries, a long cache): the same widened attention, written out, because at 64
    # queries the fused kernel is slower than three ops here; the mask is an additive bias made once
    # per pass (a boolean masked_fill costs more than the matmuls)
    bias = _bias(ctx, cache, cw, parts, B, N, q.device)
    rq, ro = ctx.rot_q, ctx.rot_outside
    if (GROUPED if GROUPED is not None else q.device.type != "cpu") and not nt:
        return grouped_streamed_attention(q, kc_raw, vc, ks, vs, ko, vo, bias, mem_bias, rot_cached.cos,
                                          rot_cached.sin, rq.cos, rq.sin, ro.cos, ro.sin, _query_groups(ctx), ctx.memo)
    return (ctx.streamed or streamed_attention)(q, nt, kc_raw, vc, ks, vs, ko, vo, bias, mem_bias, rot_cached.cos,
                                                rot_cached.sin, rq.cos, rq.sin, ro.cos, ro.sin)


def streamed_attention(q: torch.Tensor, nt: int, kc: torch.Tensor, vc: torch.Tensor, ks: torch.Tensor,
                       vs: torch.Tensor, ko: torch.Tensor, vo: torch.Tensor, bias: torch.Tensor,
                       mem_bias: torch.Tensor | None, cos_c: torch.Tensor, sin_c: torch.Tensor,
                       cos_q: torch.Tensor, sin_q: torch.Tensor, cos_o: torch.Tensor, sin_o: torch.Tensor) -> torch.Tensor:
    """The widened attention of a streamed pass over [cached window | this pass | outside] keys:
    q (B, H, N, Dh) with ``nt`` text tokens first; cached keys ``kc`` and this pass's stream keys
    ``ks`` not yet rotated in time (by ``cos_c``/``sin_c`` and ``cos_q``/``sin_q``); queries rotated
    by their own time for the window part and by ``outside`` (``cos_o``/``sin_o``) for the text,
    sink and memory keys ``ko``; the view as an additive ``bias`` (and ``mem_bias`` for the memory
    keys, which come last). Dense tensors only, so a streaming copy compiles all of it
    (``Omni.compile_dense``)."""
    dt = q.dtype  # the cache may hold another precision (a prompt encoded outside autocast)
    q_win = torch.cat([q[:, :, :nt], rotate(q[:, :, nt:], cos_q, sin_q)], 2)
    k_win = torch.cat([rotate(kc.to(dt), cos_c, sin_c), rotate(ks, cos_q, sin_q)], 2)
    # the widened product [q_win | q_out] . [k_win | 0 ; 0 | k_out] in two halves, without the zeros
    scores = torch.cat([q_win @ k_win.transpose(-1, -2), rotate(q, cos_o, sin_o) @ ko.to(dt).transpose(-1, -2)], 3)
    V = torch.cat([vc.to(dt), vs, vo.to(dt)], 2)
    if mem_bias is not None:
        bias = torch.cat([bias, mem_bias], 3)
    # one op for the scale, the bias and the cast to fp32 (three passes over the scores otherwise)
    scores = torch.add(bias, scores, alpha=(q.shape[-1]) ** -0.5)
    return torch.softmax(scores, dim=-1).to(dt) @ V


# Streamed passes through ``grouped_streamed_attention`` (True), ``streamed_attention`` (False), or
# (None) the grouped one on a GPU: its passes have thousands of queries (854x480: 1620 a frame), where
# a materialised score matrix is gigabytes per layer (1920x1080: ~60 GB), and the fused kernel is
# what is fast; a CPU pass has ~70 queries, where the three plain ops are faster (log.md)
GROUPED: bool | None = None


def _query_groups(ctx: ViewContext) -> list[tuple[int, int]]:
    """Runs of a pass's stream tokens that share one view and one time: each frame of each chunk
    (they are in chunk and frame order)."""
    if "groups" not in ctx.memo:
        c, cos = ctx.chunk_of, ctx.rot_q.cos.reshape(-1, ctx.rot_q.cos.shape[-1])
        if len(cos) != len(c):
            raise RuntimeError(f"time rotation of {len(cos)} rows for {len(c)} stream tokens")
        change = (c[1:] != c[:-1]) | (cos[1:] != cos[:-1]).any(-1)
        cuts = [0] + (change.nonzero().flatten() + 1).tolist() + [len(c)]
        ctx.memo["groups"] = list(zip(cuts[:-1], cuts[1:]))
    return ctx.memo["groups"]


def grouped_streamed_attention(q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, ks: torch.Tensor,
                               vs: torch.Tensor, ko: torch.Tensor, vo: torch.Tensor, bias: torch.Tensor,
                               mem_bias: torch.Tensor | None, cos_c: torch.Tensor, sin_c: torch.Tensor,
                               cos_q: torch.Tensor, sin_q: torch.Tensor, cos_o: torch.Tensor, sin_o: torch.Tensor,
                               groups: list[tuple[int, int]], memo: dict) -> torch.Tensor:
    """``streamed_attention``'s result (a pass with no text tokens) without its score matrix: the
    queries of each group (one frame of one chunk: one time, one view) attend through the fused
    kernel (flash attention) to the keys their view lets them see, gathered.

    The widened product needs no widening here: a group's queries share their time t, so
    rot(q, outside) . k = rot(q, t) . rot(k, t - outside) (rotations are orthogonal and commute),
    and turning the outside keys (text, sinks, memory) to the group's time lets one query vector
    score both kinds of key, at head size Dh. The view biases are 0 or -inf (``_bias``,
    ``streamed_memory``), so "visible" is "finite"."""
    dt = q.dtype
    B, n_bias = q.shape[0], bias.shape[-1]
    q_win = rotate(q, cos_q, sin_q)
    kc, ks, ko = rotate(kc.to(dt), cos_c, sin_c), rotate(ks, cos_q, sin_q), ko.to(dt)
    vc, vo = vc.to(dt), vo.to(dt)
    out = torch.empty_like(q)
    for r0, r1 in groups:
        c, s = cos_q[..., r0 : r0 + 1, :], sin_q[..., r0 : r0 + 1, :]
        ko_g = rotate(rotate(ko, c, s), cos_o, -sin_o)
        for b in range(B):
            key = ("visible", b, r0, bias.data_ptr())
            if key not in memo:  # the view but the memory: the same in every layer of the pass
                memo[key] = _ranges(torch.isfinite(bias[b, 0, r0]).nonzero().flatten().cpu())
            ranges = memo[key]
            if mem_bias is not None:  # each layer's own memory choice
                mem = _ranges(torch.isfinite(mem_bias[b, 0, r0]).nonzero().flatten().cpu())
                ranges = ranges + [(n_bias + i, n_bias + j) for i, j in mem]
            rows = slice(b, b + 1)
            K = _take([kc[rows], ks[rows], ko_g[rows]], ranges)
            V = _take([vc[rows], vs[rows], vo[rows]], ranges)
            out[rows, :, r0:r1] = F.scaled_dot_product_attention(q_win[rows, :, r0:r1], K, V)
    return out


def _ranges(idx: torch.Tensor) -> list[tuple[int, int]]:
    """Sorted indices as runs [start, stop): a view is a few runs (the window, the text, the sinks,
    the chosen memory blocks), and slicing runs is several times faster on a GPU than gathering
    indices (measured: the gathers were 17% of a 1B model's chunk at 854x480)."""
    if not len(idx):
        return []
    cut = (torch.diff(idx) != 1).nonzero().flatten() + 1
    starts, stops = torch.cat([idx[:1], idx[cut]]), torch.cat([idx[cut - 1], idx[-1:]]) + 1
    return list(zip(starts.tolist(), stops.tolist()))


def _take(pieces: list[torch.Tensor], ranges: list[tuple[int, int]]) -> torch.Tensor:
    """The tokens in ``ranges`` (sorted runs) of the concatenation of ``pieces`` (each (B, H, n_i, Dh))
    along the token axis, without making the concatenation; a view when they are one run of one piece."""
    got, start = [], 0
    for x in pieces:
        n = x.shape[2]
        for i, j in ranges:
            lo, hi = max(i, start), min(j, start + n)
            if lo < hi:
                got.append(x[:, :, lo - start : hi - start])
        start += n
    return got[0] if len(got) == 1 else torch.cat(got, 2)


def _gather_tokens(pieces: list[torch.Tensor], tok: torch.Tensor) -> torch.Tensor:
    """Tokens ``tok`` (B, S) of the concatenation of ``pieces`` (each (B, H, n_i, Dh)) along the
    token axis, without making the concatenation: (B, H, S, Dh)."""
    B, H, _, Dh = pieces[0].shape
    if len(pieces) == 1:
        return pieces[0].gather(2, tok[:, None, :, None].expand(B, H, -1, Dh))
    out, start = None, 0
    for x in pieces:  # each token from the piece it falls in
        n = x.shape[2]
        idx = (tok - start).clamp(0, n - 1)
        got = x.gather(2, idx[:, None, :, None].expand(B, H, -1, Dh))
        mine = ((tok >= start) & (tok < start + n))[:, None, :, None]
        out = got if out is None else torch.where(mine, got, out)
        start += n
    return out


def _span(sel: torch.Tensor, memo: dict, name: str) -> slice:
    """A selection of retained tokens as a slice (they are in chunk order, so sinks and the chunks
    that left the window are contiguous runs): a view instead of a boolean-index copy per layer."""
    if name not in memo:
        idx = sel.nonzero().flatten()
        span = slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)
        if len(idx) != span.stop - span.start:
            raise RuntimeError(f"retained tokens out of chunk order ({name})")
        memo[name] = span
    return memo[name]


def _bias(ctx: ViewContext, cache: KVCache | None, cw: torch.Tensor, parts: list, B: int, N: int,
          device) -> torch.Tensor:
    """The view but the memory as an additive bias (B, 1, N, S): 0 = may attend, -inf = may not."""
    key = ("bias", len(cw), tuple(p[:2] for p in parts if p[0] != "memory"))
    if key not in ctx.memo:
        static = _mask(ctx, cache, cw, parts, None, B, N, device)
        ctx.memo[key] = torch.zeros(static.shape, device=device).masked_fill(~static, float("-inf"))
    return ctx.memo[key]


def _mask(ctx: ViewContext, cache: KVCache | None, cw: torch.Tensor, parts: list, mem_mask: torch.Tensor | None,
          B: int, N: int, device) -> torch.Tensor:
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
    if mem_mask is not None:
        mask = torch.cat([mask, mem_mask], 2)
    return mask[:, None]


def _near(cache: KVCache | None, q_chunks: torch.Tensor, cand_chunks: torch.Tensor, device) -> torch.Tensor | None:
    """(B, Kq, J) distance from each query chunk's position to each memory candidate's (the bank's
    first, then chunks not yet in it), NaN where unknown or beyond the retrieval radius; None when
    the stream gives no positions."""
    if cache is None or cache.position is None:
        return None
    n_bank = 0 if cache.mem_pos is None else cache.mem_pos.shape[1]
    later = cand_chunks[n_bank:]
    pos = cache.mem_pos if n_bank else None
    if len(later):
        extra = cache.query_positions(later)
        pos = extra if pos is None else torch.cat([pos, extra], 1)
    qp = cache.query_positions(q_chunks)  # (B, Kq, 2)
    near = (pos.to(device)[:, None] - qp.to(device)[:, :, None]).norm(dim=3)  # (B, Kq, J)
    return near.masked_fill(~(near <= cache.position_radius), float("nan"))


def eligible_memory(ctx: ViewContext, q_chunks: torch.Tensor, mem_chunks: torch.Tensor, horizon: int = 0) -> torch.Tensor:
    """(Kq, J) bool: memory chunk j may be retrieved by query chunk q: it is no sink and has left
    q's window; with ``horizon`` > 0, it is also fewer than window + horizon chunks back (what a
    bank of that size holds)."""
    d = q_chunks[:, None] - mem_chunks[None, :]
    eligible = (mem_chunks[None, :] >= ctx.sinks) & (d >= ctx.window)
    if horizon:
        eligible &= d < ctx.window + horizon
    return eligible


def rank_memory(qs: torch.Tensor, k_mean: torch.Tensor, eligible: torch.Tensor, near_bias: torch.Tensor | None,
                topk: int, p: float, n_chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory chunks each query chunk attends to: (order (B, Kq, k), valid (B, Kq, k)), the
    k = min(topk, J) best candidates by score, and which of them it keeps.

    Score: mean query . mean key, averaged over heads (a cheap block score, as in MoBA /
    block-sparse attention). Fixed top-k, or with ``p`` > 0 adaptive: the fewest blocks whose
    softmax mass reaches p, at most ``topk`` (concentrated scores keep few blocks, flat scores keep
    the budget). ``near_bias`` (B, Kq, J): a large bonus for memory chunks within the retrieval
    radius of the query chunk's position, nearest first (when the source knows positions); key
    similarity fills the rest of the budget. Only ``eligible`` (Kq, J) candidates are kept."""
    Dh = qs.shape[-1]
    J = k_mean.shape[2]
    q_mean = qs.unflatten(2, (n_chunks, qs.shape[2] // max(n_chunks, 1))).float().mean(3)  # tokens come in chunk order
    score = (q_mean @ k_mean.float().transpose(-1, -2)).mean(1)  # (B, Kq, J)
    if near_bias is not None:
        score = score + near_bias
    score = score.masked_fill(~eligible[None], float("-inf"))
    top, order = score.topk(min(topk, J), dim=2)  # (B, Kq, k), best first
    valid = eligible[None].expand(score.shape[0], -1, -1).gather(2, order)
    if p > 0:
        prob = torch.softmax(score * Dh ** -0.5, dim=2).gather(2, order)  # mass of each chosen block
        valid = valid & (prob.cumsum(2) - prob < p)  # add blocks until the mass reaches p
    return order, valid


def _candidates(ks, vs, bank_k, bank_v, bank_mean, left_k, left_v, n_left: int, n_cur: int, m: int):
    """Memory candidates' keys and values (lists of pieces, in candidate order: the bank, chunks
    that left a later query chunk's window, the pass's own earlier chunks) and mean keys (B, H, J, Dh)."""
    mk, mv, mm = [], [], []
    if bank_k is not None:
        mk.append(bank_k), mv.append(bank_v), mm.append(bank_mean)
    for k, v, n in ((left_k, left_v, n_left), (ks, vs, n_cur if n_cur > 1 else 0)):
        if n:
            pk = pool_chunks(k, n, m)
            mk.append(pk), mv.append(pool_chunks(v, n, m)), mm.append(chunk_means(pk, m))
    return mk, mv, mm[0] if len(mm) == 1 else torch.cat(mm, 2)


def streamed_memory(qs: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, bank_k: torch.Tensor | None,
                    bank_v: torch.Tensor | None, bank_mean: torch.Tensor | None, left_k: torch.Tensor | None,
                    left_v: torch.Tensor | None, eligible: torch.Tensor, near_bias: torch.Tensor | None, n_left: int,
                    n_cur: int, m: int, topk: int, p: float, nt: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The memory part of a streamed pass, dense tensors only (``Omni.compile_dense`` compiles it):
    rank the candidates for each query chunk, gather k = min(topk, J) blocks per query chunk into
    slots of its own (chosen first, then unchosen padding it may not see), so the gathered memory has
    a fixed size and needs no host sync, and two query chunks that chose one block each see it once.
    Returns the gathered keys and values (B, H, Kq k m, Dh) and their additive bias (B, 1, nt + Nq, Kq k m)."""
    mk, mv, mm = _candidates(ks, vs, bank_k, bank_v, bank_mean, left_k, left_v, n_left, n_cur, m)
    order, valid = rank_memory(qs, mm, eligible, near_bias, topk, p, n_cur)  # (B, Kq, k)
    B, Kq, k = order.shape
    tok = (order.flatten(1)[..., None] * m + torch.arange(m, device=qs.device)).flatten(1)  # (B, Kq*k*m)
    owner = torch.arange(Kq, device=qs.device).repeat_interleave(k * m)  # the query chunk each slot is for
    q_chunk = torch.arange(Kq, device=qs.device).repeat_interleave(qs.shape[2] // Kq)
    rows = (q_chunk[:, None] == owner[None])[None] & valid.repeat_interleave(m, 2).flatten(1)[:, None, :]
    rows = torch.cat([torch.zeros(B, nt, rows.shape[2], dtype=torch.bool, device=qs.device), rows], 1)
    bias = torch.zeros(rows.shape, device=qs.device).masked_fill(~rows, float("-inf"))[:, None]
    return _gather_tokens(mk, tok), _gather_tokens(mv, tok), bias
