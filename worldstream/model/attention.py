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
from .rope import Rotation


@dataclasses.dataclass
class ViewContext:
    """Per forward pass, shared by all layers."""

    n_text: int  # text tokens in this pass (0 when the text comes from the cache)
    text_valid: torch.Tensor | None  # (B, Nt) for this pass's text
    chunk_of: torch.Tensor  # (Ns,) absolute chunk index of this pass's stream tokens
    rot_q: Rotation  # time rotation of this pass's stream tokens (relative to t_ref)
    t_ref: int  # frame time that angles are relative to
    rot_outside: Rotation  # rotation by `outside` frames
    time_angles: object  # fn(times (N,) long) -> (N, Dh/2) relative to t_ref
    sinks: int
    window: int
    memory_tokens: int
    memory_topk: int
    memory_p: float
    tokens_per_chunk: int
    memo: dict = dataclasses.field(default_factory=dict)  # masks shared by layers


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
    ks_rot = ctx.rot_q(ks)
    if cached:
        kc_raw, vc = cache.k[layer], cache.v[layer]
        cc = cache.chunk_of.to(q.device)

        def widened():  # [rotated by time to the query | 0]
            kr = Rotation(ctx.time_angles(cache.time_of.to(q.device)))(kc_raw)
            return torch.cat([kr, zeros(kr)], -1)

        kc_wide = cache.rotated(layer, ctx.t_ref, widened)
        cw = torch.cat([cc, ctx.chunk_of])
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
        sink = cw < ctx.sinks
        if bool(sink.any()):
            ns = _span(cc < ctx.sinks, ctx.memo, "sinks") if cached else None
            sk = [kc_raw[:, :, ns]] if cached else []
            sv = [vc[:, :, ns]] if cached else []
            cur = ctx.chunk_of < ctx.sinks
            sk.append(ks[:, :, cur]), sv.append(vs[:, :, cur])
            out_k.append(torch.cat(sk, 2)), out_v.append(torch.cat(sv, 2))
            parts.append(("sink", int(sink.sum())))
    mem_mask = None
    if ctx.window and ctx.memory_topk:
        m = ctx.memory_tokens
        mk, mv, mm, mc = [], [], [], []
        if cache is not None and cache.mem_k[layer] is not None and len(cache.mem_chunk_of):
            mk.append(cache.mem_k[layer]), mv.append(cache.mem_v[layer]), mm.append(cache.mem_kmean[layer])
            mc.append(cache.mem_chunk_of.to(q.device))
        if cached and len(ctx.chunk_of):  # retained chunks out of a later query chunk's window: pooled, as the bank will hold them
            if "left" not in ctx.memo:
                left = (cc >= ctx.sinks) & (int(ctx.chunk_of.max()) - cc >= ctx.window)
                ctx.memo["left"] = (_span(left, ctx.memo, "left_span"), torch.unique(cc[left]))
            left, left_chunks = ctx.memo["left"]
            if len(left_chunks):
                pk = pool_chunks(kc_raw[:, :, left], len(left_chunks), m)
                mk.append(pk), mv.append(pool_chunks(vc[:, :, left], len(left_chunks), m)), mm.append(chunk_means(pk, m))
                mc.append(left_chunks.repeat_interleave(m))
        n_cur = len(ctx.chunk_of) // ctx.tokens_per_chunk if ctx.tokens_per_chunk else 0
        if n_cur > 1:  # a multi-chunk pass: its own chunks are memory for its later chunks
            pk = pool_chunks(ks, n_cur, m)
            mk.append(pk), mv.append(pool_chunks(vs, n_cur, m)), mm.append(chunk_means(pk, m))
            mc.append(ctx.chunk_of.view(n_cur, -1)[:, 0].repeat_interleave(m))
        if mk:
            one = len(mk) == 1  # (cat would copy the whole bank)
            mkc, mvc, mmc, mcc = (x[0] if one else torch.cat(x, 2 if i < 3 else 0) for i, x in enumerate((mk, mv, mm, mc)))
            if "q_chunks" not in ctx.memo:
                ctx.memo["q_chunks"] = torch.unique(ctx.chunk_of, return_inverse=True)
            q_chunks, q_inv = ctx.memo["q_chunks"]
            near = _near(cache, q_chunks, mcc[::m], q.device) if len(q_chunks) else None
            # a bounded bank holds the last ``memory_chunks`` chunks out of the window: a query chunk
            # never reaches further back than that (only a two-chunk pass could)
            horizon = cache.memory_chunks if cache is not None else 0
            chosen = select_memory(ctx, qs, q_chunks, q_inv, mmc, mcc, near, horizon)  # (B, Kq, J)
            if cached:  # streaming: gather the blocks some query chunk chose, attend to those only
                idx, ok = _chosen_index(chosen.any(1))  # (B, kmax)
                tok = (idx[..., None] * m + torch.arange(m, device=q.device)).flatten(1)  # (B, kmax * m)
                g = tok[:, None, :, None].expand(B, H, -1, Dh)
                mkc, mvc = mkc.gather(2, g), mvc.gather(2, g)
                if len(q_chunks) == 1:
                    rows = ok.repeat_interleave(m, 1)[:, None, :].expand(B, len(q_inv), -1)
                else:  # each query chunk keeps its own choice among the gathered blocks
                    mine = chosen.gather(2, idx[:, None].expand(B, len(q_chunks), -1)) & ok[:, None]
                    rows = mine.repeat_interleave(m, dim=2)[:, q_inv]
            else:  # training: every query chunk its own choice, as a mask
                rows = chosen.repeat_interleave(m, dim=2)[:, q_inv]
            mem_mask = torch.cat([torch.zeros(B, nt, rows.shape[2], dtype=torch.bool, device=q.device), rows], 1)
            out_k.append(mkc), out_v.append(mvc)
            parts.append(("memory", mkc.shape[2]))
    ko = torch.cat(out_k, 2) if out_k else ks[:, :, :0]
    vo = torch.cat(out_v, 2) if out_v else vs[:, :, :0]
    q_win = torch.cat([q[:, :, :nt], ctx.rot_q(qs)], 2)
    q_out = ctx.rot_outside(q)
    if not cached:  # one pass over a whole clip (training): widened queries and keys, one fused attention
        Q = torch.cat([q_win, q_out], -1)
        K = torch.cat([torch.cat([ks_rot, zeros(ks_rot)], -1), torch.cat([zeros(ko), ko], -1)], 2)
        V = torch.cat([vs, vo], 2)
        mask = _mask(ctx, cache, cw, parts, mem_mask, B, N, q.device)
        return F.scaled_dot_product_attention(Q, K, V, attn_mask=mask, scale=Dh ** -0.5)
    # streaming (few queries, a long cache): the same widened attention, written out, because at 64
    # queries the fused kernel is slower than three ops here; the retained window's widened keys are
    # made once per chunk (``KVCache.rotated``) and shared by its every pass, and the mask is an
    # additive bias made once per pass (a boolean masked_fill costs more than the matmuls)
    dt = q.dtype  # the cache may hold another precision (a prompt encoded outside autocast)
    Q = torch.cat([q_win, q_out], -1)
    K = torch.cat([kc_wide.to(dt), torch.cat([ks_rot, zeros(ks_rot)], -1), torch.cat([zeros(ko), ko], -1).to(dt)], 2)
    V = torch.cat([vc.to(dt), vs, vo.to(dt)], 2)
    # one op for the scale, the bias and the cast to fp32 (three passes over the scores otherwise)
    scores = torch.add(_bias(ctx, cache, cw, parts, mem_mask, B, N, q.device), Q @ K.transpose(-1, -2), alpha=Dh ** -0.5)
    return torch.softmax(scores, dim=-1).to(dt) @ V


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


def _bias(ctx: ViewContext, cache: KVCache | None, cw: torch.Tensor, parts: list, mem_mask: torch.Tensor | None,
          B: int, N: int, device) -> torch.Tensor:
    """The mask as an additive bias (B, 1, N, S): 0 = may attend, -inf = may not."""
    key = ("bias", len(cw), tuple(p[:2] for p in parts if p[0] != "memory"))
    if key not in ctx.memo:
        static = _mask(ctx, cache, cw, parts, None, B, N, device)
        ctx.memo[key] = torch.zeros(static.shape, device=device).masked_fill(~static, float("-inf"))
    bias = ctx.memo[key]
    if mem_mask is not None:
        mem = torch.zeros(mem_mask.shape, device=device).masked_fill(~mem_mask, float("-inf"))
        bias = torch.cat([bias, mem[:, None]], 3)
    return bias


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


def select_memory(ctx: ViewContext, qs: torch.Tensor, q_chunks: torch.Tensor, q_inv: torch.Tensor, k_mean: torch.Tensor,
                  mem_chunk: torch.Tensor, near: torch.Tensor | None = None, horizon: int = 0) -> torch.Tensor:
    """(B, Kq, J) bool: the memory chunks each query chunk attends to, among those that left its
    window. Score: mean query . mean key, averaged over heads (a cheap block score, as in
    MoBA / block-sparse attention). Fixed top-k, or with ``memory_p`` > 0 adaptive: the fewest
    blocks whose softmax mass reaches p, at most ``memory_topk`` (concentrated scores keep few
    blocks, flat scores keep the budget). ``near`` (B, Kq, J): distances of memory chunks within
    the retrieval radius of each query chunk's position (NaN otherwise), when the source knows
    positions: those come first, nearest first, and key similarity fills the rest of the budget.
    ``horizon`` > 0: only chunks fewer than window + horizon
    chunks back (what a bank of that size holds) are eligible."""
    B, H, _, Dh = qs.shape
    m = ctx.memory_tokens
    Kq, J = len(q_chunks), k_mean.shape[2]
    q_mean = torch.zeros(B, H, Kq, Dh, dtype=qs.dtype, device=qs.device).index_add_(2, q_inv, qs)
    q_mean = q_mean / torch.bincount(q_inv, minlength=Kq).to(qs.dtype)[None, None, :, None]
    score = torch.einsum("bhqd,bhjd->bqj", q_mean.float(), k_mean.float()) / H  # (B, Kq, J)
    mc = mem_chunk.view(J, m)[:, 0]
    eligible = (mc[None, :] >= ctx.sinks) & (q_chunks[:, None] - mc[None, :] >= ctx.window)  # (Kq, J)
    if horizon:
        eligible &= q_chunks[:, None] - mc[None, :] < ctx.window + horizon
    if near is not None:
        score = score + torch.nan_to_num(1e4 - near, nan=0.0)
    score = score.masked_fill(~eligible[None], float("-inf"))
    k = min(ctx.memory_topk, J)
    top, order = score.topk(k, dim=2)  # (B, Kq, k), best first
    keep = torch.ones_like(top, dtype=torch.bool)
    if ctx.memory_p > 0:
        prob = torch.softmax(score * Dh ** -0.5, dim=2).gather(2, order)  # mass of each chosen block
        before = prob.cumsum(2) - prob
        keep = before < ctx.memory_p  # add blocks until the mass reaches p
    chosen = torch.zeros(B, Kq, J, dtype=torch.bool, device=qs.device).scatter_(2, order, keep)
    return chosen & eligible[None]


def _chosen_index(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, J) bool -> indices (B, kmax) of the chosen blocks and which of them are real (padding repeats)."""
    n = chosen.sum(1)
    kmax = max(1, int(n.max()))
    order = torch.argsort((~chosen).to(torch.int8), dim=1, stable=True)[:, :kmax]
    ok = torch.arange(kmax, device=chosen.device)[None] < n[:, None]
    return order, ok
