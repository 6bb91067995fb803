"""The bounded attention view: window, sinks, memory bank. Streaming equals the full pass."""
import contextlib

import torch
from omni_helpers import omni_inputs, tiny_omni

VIEW = dict(window=2, sinks=1, memory_topk=2, memory_tokens=3)


_model = tiny_omni


def _inputs(K=7, **kw):
    return omni_inputs(K=K, **kw)


def _stream(m, x, cache, K):
    vs, as_ = [], []
    for c in range(K):
        kw = dict(video=x["video"][:, c : c + 1], t_video=x["t_video"][:, c : c + 1], actions=x["actions"][:, c : c + 1],
                  audio=x["audio"][:, 2 * c : 2 * c + 2], t_audio=x["t_audio"][:, c : c + 1],
                  text=x["text"], text_mask=x["text_mask"], text_pooled=x["text_pooled"], cache=cache, start_frame=c)
        v, a = m(**kw)
        cache.commit()
        vs.append(v)
        as_.append(a)
    return torch.cat(vs, 1), torch.cat(as_, 1)


@torch.no_grad()
def test_streaming_with_window_sinks_and_memory_equals_the_full_pass():
    m, x = _model(**VIEW), _inputs()
    v_full, a_full = m(**x)  # training: the whole clip, the view as a mask
    v, a = _stream(m, x, m.new_cache(memory_chunks=100), 7)  # streaming: bounded cache, one chunk at a time
    torch.testing.assert_close(v, v_full, rtol=0, atol=1e-4)
    torch.testing.assert_close(a, a_full, rtol=0, atol=1e-4)
    # and the view matters: an unbounded model gives different outputs on the same weights
    unbounded = _model()
    unbounded.load_state_dict(m.state_dict())
    v_all, _ = unbounded(**x)
    assert not torch.allclose(v_all[:, 3:], v_full[:, 3:], atol=1e-3)
    torch.testing.assert_close(v_all[:, :2], v_full[:, :2], rtol=0, atol=1e-5)  # the first chunks see the same


@torch.no_grad()
def test_a_later_chunk_never_changes_an_earlier_output_with_memory():
    m, x = _model(**VIEW), _inputs()
    v, _ = m(**x)
    y = dict(x)
    y["video"] = x["video"].clone()
    y["video"][:, 5:] += 1.0
    v2, _ = m(**y)
    torch.testing.assert_close(v[:, :5], v2[:, :5], rtol=0, atol=1e-5)


@torch.no_grad()
def test_eviction_at_the_window_boundary_sinks_stay_memory_is_bounded():
    m, x = _model(**VIEW), _inputs(B=1, K=30)
    cache = m.new_cache(memory_chunks=4)
    per_chunk = 1 + 24 + 2
    sizes = []
    for c in range(30):
        _stream_one(m, x, cache, c)
        retained = sorted(set(cache.chunk_of.tolist()))
        expect = sorted({0, c})  # sink 0 + what the next chunk's window of 2 needs besides itself
        assert retained == expect, (c, retained)
        mem = sorted(set(cache.mem_chunk_of.tolist()))
        assert mem == list(range(1, c))[-4:]  # evicted chunks, oldest dropped beyond 4
        sizes.append((cache.n_tokens, cache.nbytes()))
    assert len(cache.chunk_of) == 2 * per_chunk
    assert len(set(sizes[8:])) == 1  # flat once the memory bank is full


def test_layer_buffer_appends_cuts_and_drops_like_a_list_of_tensors():
    """The cache's one-buffer-for-all-layers store against plain per-layer concatenation: cuts that
    move the head and cuts that move the tail, front drops, compaction and growth."""
    from worldstream.model.cache import LayerBuffer

    g = torch.Generator().manual_seed(0)
    buf, ref = LayerBuffer(), [torch.zeros(1, 2, 0, 4) for _ in range(3)]
    for step in range(40):
        new = torch.randn(3, 1, 2, 5, 4, generator=g)
        buf.append(new, room=12)
        ref = [torch.cat([r, x], 2) for r, x in zip(ref, new)]
        n = ref[0].shape[2]
        if step % 3 == 0 and n > 8:  # cut a span out, near the front (head moves) or the back (tail moves)
            a = 1 if step % 2 else n - 7
            buf.cut(a, a + 4)
            ref = [torch.cat([r[:, :, :a], r[:, :, a + 4 :]], 2) for r in ref]
        if step % 5 == 4:
            buf.drop_front(3)
            ref = [r[:, :, 3:] for r in ref]
        assert buf.holds(buf.views) and len(buf.views) == 3
        for got, want in zip(buf.views, ref):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def _stream_one(m, x, cache, c):
    out = m(video=x["video"][:, c : c + 1], t_video=x["t_video"][:, c : c + 1], actions=x["actions"][:, c : c + 1],
      audio=x["audio"][:, 2 * c : 2 * c + 2], t_audio=x["t_audio"][:, c : c + 1], text=x["text"][:1],
      text_mask=x["text_mask"][:1], text_pooled=x["text_pooled"][:1], cache=cache, start_frame=c)
    cache.commit()
    return out


@contextlib.contextmanager
def _selections():
    """Records every memory selection made inside, as (B, query chunks, memory chunks) bool."""
    from worldstream.model import attention

    seen = []
    orig = attention.rank_memory

    def spy(qs, k_mean, eligible, *args, **kw):
        order, valid = orig(qs, k_mean, eligible, *args, **kw)
        seen.append(torch.zeros(qs.shape[0], *eligible.shape, dtype=torch.bool).scatter_(2, order, valid))
        return order, valid

    attention.rank_memory = spy
    try:
        yield seen
    finally:
        attention.rank_memory = orig


def _spy_selection(m, x):
    with _selections() as seen:
        m(**x)
    return seen


@torch.no_grad()
def test_each_query_chunk_retrieves_top_k_of_the_evicted_chunks():
    m, x = _model(**VIEW), _inputs(B=2, K=8)
    sel = _spy_selection(m, {k: (t[:1] if torch.is_tensor(t) else t) for k, t in x.items()})[0][0]  # layer 0, sample 0: (query chunks, memory chunks)
    for c in range(8):
        eligible = max(0, c - 2)  # chunks 1 .. c-2 left the window of 2 (chunk 0 is the sink)
        assert int(sel[c].sum()) == min(VIEW["memory_topk"], eligible)
        assert not sel[c, 0] and not sel[c, max(c - 1, 0):].any()


@torch.no_grad()
def test_sparse_attention_with_every_block_selected_equals_dense():
    """Streaming gathers the chosen memory blocks; with a budget over the bank it is dense attention
    over all of them, and equals the training pass (a mask over all blocks)."""
    m, x = _model(window=2, sinks=1, memory_topk=1000, memory_tokens=3), _inputs(K=9)
    v_full, _ = m(**x)
    v, _ = _stream(m, x, m.new_cache(memory_chunks=100), 9)
    torch.testing.assert_close(v, v_full, rtol=0, atol=1e-4)
    sel = _spy_selection(m, {k: (t[:1] if torch.is_tensor(t) else t) for k, t in x.items()})[0][0]
    assert all(int(sel[c].sum()) == max(0, c - 2) for c in range(9))  # everything evicted is attended


@torch.no_grad()
def test_adaptive_selection_stays_within_its_budget():
    m, x = _model(window=2, sinks=1, memory_topk=3, memory_p=0.5, memory_tokens=3), _inputs(B=2, K=12)
    for sel in _spy_selection(m, x):
        counts = sel.sum(2)  # (B, Kq)
        assert (counts <= 3).all()
        eligible = torch.clamp(torch.arange(12) - 2, min=0)
        assert ((counts >= 1) | (eligible == 0)[None]).all()  # at least one block when any is eligible
    v_full, _ = m(**x)
    v, _ = _stream(m, x, m.new_cache(memory_chunks=100), 12)
    torch.testing.assert_close(v, v_full, rtol=0, atol=1e-4)


@torch.no_grad()
def test_a_new_prompt_equals_a_stream_started_with_it():
    m, x = _model(**VIEW), _inputs(B=2, K=3)
    new_text = torch.randn(2, 4, 384)
    new_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).bool()
    cache = m.new_cache()
    _stream(m, x, cache, 3)
    m.encode_prompt(cache, new_text, new_mask, x["text_pooled"])
    fresh = m.new_cache()
    y = dict(x, text=new_text, text_mask=new_mask)
    _stream(m, y, fresh, 1)
    for layer in range(len(m.blocks)):
        for a, b in zip(cache.text[layer], fresh.text[layer]):
            torch.testing.assert_close(a[:, :, :2], b[:, :, :2], rtol=0, atol=1e-5)
            torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-5)
    assert torch.equal(cache.text_valid, new_mask)


@torch.no_grad()
def test_memory_near_the_query_position_is_retrieved_first():
    m, x = _model(window=2, sinks=1, memory_topk=1, memory_tokens=3), _inputs(B=2, K=8)
    x = {k: (t[:1] if torch.is_tensor(t) else t) for k, t in x.items()}
    cache = m.new_cache(memory_chunks=100)
    spots = [(0, 0), (5, 5), (10, 0), (20, 20), (30, 0), (40, 0), (50, 0), (10.5, 0.5)]  # the last is back near chunk 2
    with _selections() as seen:
        for c in range(8):
            cache.position = torch.tensor([spots[c]], dtype=torch.float32)
            _stream_one(m, x, cache, c)
    last = seen[-1][0, 0]  # the last chunk's choice in the last layer
    assert torch.equal(last.nonzero().flatten(), torch.tensor([1]))  # memory index 1 = chunk 2, the place it is back at
    assert torch.isnan(cache.mem_pos).sum() == 0 and cache.mem_pos.shape == (1, 6, 2)  # chunks 1..6, with positions


def _rollout(m, rcfg, defer, n=14, positions=True, memory_chunks=4, stacked=False):
    """Chunks from generate_chunk, committing each at once or deferred into the next chunk's first pass."""
    from worldstream.engine.rollout import Conditioning, generate_chunk, make_branches

    x = _inputs(B=2, K=n)
    cond = Conditioning(x["text"], x["text_mask"], x["text_pooled"], x["actions"].clamp(min=0))
    branches = make_branches(m, rcfg, stacked=stacked)
    for b in branches:
        b.cache = m.new_cache(memory_chunks=memory_chunks)
    g = [torch.Generator().manual_seed(s) for s in (0, 1)]
    calls = []
    hook = m.register_forward_hook(lambda *_: calls.append(1))
    out = []
    try:
        for c in range(n):
            for b in branches:  # wanders off and comes back: position retrieval has work to do
                b.cache.position = torch.tensor([[float(c % 5), 0.0], [0.0, float(c % 3)]]) if positions else None
            v, _ = generate_chunk(m, branches, rcfg, cond, c, (8, 4, 6), g, defer=defer)
            out.append(v)
    finally:
        hook.remove()
    return torch.cat(out, 1), len(calls), branches


@torch.no_grad()
def test_a_commit_deferred_into_the_next_pass_gives_the_same_chunks_in_half_the_calls():
    from worldstream.engine.rollout import RolloutConfig

    m = _model(window=3, sinks=1, memory_topk=2, memory_tokens=3)
    student = RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0)
    now, calls_now, _ = _rollout(m, student, defer=False)
    later, calls_later, branches = _rollout(m, student, defer=True)
    # 14 chunks past a window of 3 and a bank of 4: eviction, sinks, the bank's horizon, positions
    torch.testing.assert_close(later, now, rtol=0, atol=1e-4)
    assert (calls_now, calls_later) == (28, 14)  # one transformer call per chunk instead of two
    assert branches[0].pending is not None and branches[0].cache.n_chunks == 13  # the last one waits
    # a guided teacher with three branches and two steps: each branch's first pass carries the commit
    teacher = RolloutConfig(sampler="euler", steps=2, text_scale=2.0, action_scale=1.5)
    now, calls_now, _ = _rollout(m, teacher, defer=False, n=8, positions=False)
    later, calls_later, _ = _rollout(m, teacher, defer=True, n=8, positions=False)
    torch.testing.assert_close(later, now, rtol=0, atol=1e-4)
    assert (calls_now, calls_later) == (8 * 3 * 3, 8 * 3 * 2)


@torch.no_grad()
def test_prefill_and_a_new_prompt_flush_a_deferred_commit():
    from worldstream.engine.rollout import Conditioning, RolloutConfig, flush, generate_chunk, make_branches, prefill

    m, x = _model(window=6, sinks=1, memory_topk=2, memory_tokens=3), _inputs(B=2, K=6)
    rcfg = RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0)
    cond = Conditioning(x["text"], x["text_mask"], x["text_pooled"], x["actions"].clamp(min=0))
    branches = make_branches(m, rcfg)
    generate_chunk(m, branches, rcfg, cond, 0, (8, 4, 6), defer=True)
    assert branches[0].cache.n_chunks == 0
    prefill(m, branches, cond, x["video"][:, 1:2], x["audio"][:, 2:4])  # real chunk 1 after made chunk 0
    assert branches[0].pending is None and branches[0].cache.chunk_of.unique().tolist() == [0, 1]
    generate_chunk(m, branches, rcfg, cond, 2, (8, 4, 6), defer=True)
    new = Conditioning(x["text"] + 1, x["text_mask"], x["text_pooled"], x["actions"].clamp(min=0))
    generate_chunk(m, branches, rcfg, new, 3, (8, 4, 6), defer=True)  # another prompt: chunk 2 commits alone first
    assert branches[0].cache.chunk_of.unique().tolist() == [0, 1, 2]
    flush(m, branches)
    assert branches[0].pending is None and branches[0].cache.chunk_of.unique().tolist() == [0, 1, 2, 3]


def test_layer_buffer_widens_to_a_wider_append_like_cat():
    """A pass outside the stream's autocast commits fp32 keys into a bf16 cache: the cache holds both
    in fp32 (as concatenation would), for the window and, through eviction, for the bank."""
    from worldstream.model.cache import LayerBuffer

    buf = LayerBuffer()
    a, b = torch.randn(2, 1, 2, 3, 4).to(torch.bfloat16), torch.randn(2, 1, 2, 5, 4)
    buf.append(a, room=4)
    buf.append(b)
    assert buf.buf.dtype == torch.float32
    torch.testing.assert_close(buf.stacked(), torch.cat([a.float(), b], 3), rtol=0, atol=0)


@torch.no_grad()
def test_grouped_attention_that_gpus_run_equals_the_score_matrix(monkeypatch):
    """The GPU's streamed attention (per query group, gathered keys, the fused kernel, outside keys
    turned to the group's time) gives what the materialised score matrix gives: chunk by chunk
    against the full pass, and in deferred two-chunk passes with memory and positions."""
    from worldstream.engine.rollout import RolloutConfig
    from worldstream.model import attention

    calls = []
    grouped = attention.grouped_streamed_attention
    monkeypatch.setattr(attention, "grouped_streamed_attention", lambda *a: calls.append(len(a[-2])) or grouped(*a))
    monkeypatch.setattr(attention, "GROUPED", True)
    m, x = _model(**VIEW), _inputs()
    v_full, a_full = m(**x)
    v, a = _stream(m, x, m.new_cache(memory_chunks=100), 7)
    torch.testing.assert_close(v, v_full, rtol=0, atol=1e-4)
    torch.testing.assert_close(a, a_full, rtol=0, atol=1e-4)
    assert calls and set(calls) == {1}  # every pass after the first (text in the pass) went grouped: one group
    m = _model(window=3, sinks=1, memory_topk=2, memory_tokens=3)
    student = RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0)
    calls.clear()
    grouped_out, _, _ = _rollout(m, student, defer=True)
    monkeypatch.setattr(attention, "GROUPED", False)
    dense_out, _, _ = _rollout(m, student, defer=True)
    torch.testing.assert_close(grouped_out, dense_out, rtol=0, atol=1e-4)
    assert 2 in calls  # the deferred passes: the finished chunk and the new one, two groups


@torch.no_grad()
def test_prefill_in_one_pass_leaves_the_cache_a_chunk_by_chunk_prefill_leaves():
    """``prefill`` commits a whole history in one pass per branch: past the window (eviction into the
    memory bank) the next chunk is the same as after committing the history one chunk at a time."""
    from worldstream.engine.rollout import Conditioning, RolloutConfig, generate_chunk, make_branches, prefill

    m, x = _model(**VIEW), _inputs(B=2, K=8)
    teacher = RolloutConfig(sampler="euler", steps=2, text_scale=2.0, action_scale=1.5)
    cond = Conditioning(x["text"], x["text_mask"], x["text_pooled"], x["actions"].clamp(min=0))
    one, calls = make_branches(m, teacher), []
    real_forward = m.forward
    m.forward = lambda *a, **k: calls.append(1) or real_forward(*a, **k)
    prefill(m, one, cond, x["video"][:, :7], x["audio"][:, :14])
    m.forward = real_forward
    assert len(calls) == 3  # one pass per guidance branch, not 7 x 3
    loop = make_branches(m, teacher)
    zero = torch.zeros(2, 1)
    for c in range(7):  # the reference: one chunk at a time, as a stream commits them
        for b in loop:
            m(video=x["video"][:, c : c + 1], t_video=zero, audio=x["audio"][:, 2 * c : 2 * c + 2], t_audio=zero,
              cache=b.cache, start_frame=c, **b.kwargs(cond, slice(c, c + 1)))
            b.cache.commit()
        for b in loop:
            b.last_video, b.last_own = x["video"][:, c], torch.zeros(2, dtype=torch.bool)
    for a, b in zip(one, loop):
        assert a.cache.chunk_of.tolist() == b.cache.chunk_of.tolist()
        assert a.cache.mem_chunk_of.tolist() == b.cache.mem_chunk_of.tolist() and len(a.cache.mem_chunk_of)
    noise = torch.randn(2, 8 * 4 * 6 + 2 * m.cfg.audio_channels, generator=torch.Generator().manual_seed(3))
    v1, a1 = generate_chunk(m, one, teacher, cond, 7, (8, 4, 6), noise=noise)
    v2, a2 = generate_chunk(m, loop, teacher, cond, 7, (8, 4, 6), noise=noise)
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-4)
    torch.testing.assert_close(a1, a2, rtol=0, atol=1e-4)


@torch.no_grad()
def test_stacked_guidance_branches_make_the_same_chunks_in_fewer_calls():
    """Text and text + action branches stacked along the batch (one cache, one call) guide exactly
    as two branches do, through eviction, the memory bank and deferred commits."""
    from worldstream.engine.rollout import RolloutConfig

    m = _model(window=3, sinks=1, memory_topk=2, memory_tokens=3)
    teacher = RolloutConfig(sampler="euler", steps=2, text_scale=2.0, action_scale=1.5)
    three, calls_three, _ = _rollout(m, teacher, defer=True, n=8, positions=False)
    two, calls_two, branches = _rollout(m, teacher, defer=True, n=8, positions=False, stacked=True)
    torch.testing.assert_close(two, three, rtol=0, atol=1e-4)
    assert (calls_three, calls_two) == (8 * 3 * 2, 8 * 2 * 2)
    assert len(branches) == 2 and branches[1].cache.k[0].shape[0] == 4  # 2 rows x 2 groups


@torch.no_grad()
def test_refreshed_sinks_are_the_chunks_that_last_left_the_window_and_the_cache_stays_bounded():
    """With ``sink_every`` the sinks become, every N chunks, the chunks that last left the window,
    with the very keys and values they had there (made in their own context); until the first
    refresh the stream is the plain view and equals the full pass."""
    view = dict(window=2, sinks=2, sink_every=3, memory_topk=0)
    m, x = _model(**view), _inputs(B=1, K=16)
    cache = m.new_cache()
    made, sink_starts, sizes = {}, [], []  # made: each chunk's keys and values in layer 0 and the last one
    for c in range(16):
        v, a = _stream_one(m, x, cache, c)
        mine = cache.chunk_of == c
        made[c] = [t[:, :, mine].clone() for t in (cache.k[0], cache.v[0], cache.k[-1], cache.v[-1])]
        sink_time = cache.time_of[cache.chunk_of < 2].unique()
        first = int(sink_time[0])
        assert torch.equal(sink_time, torch.arange(first, first + min(c + 1, 2)))  # consecutive chunks
        for j, f in enumerate(sink_time.tolist()):
            here = (cache.chunk_of == j)
            for held, was in zip((cache.k[0], cache.v[0], cache.k[-1], cache.v[-1]), made[f]):
                assert torch.equal(held[:, :, here], was)
        if first == 0:  # not refreshed yet: the plain view, which training's full pass equals
            v_full, a_full = m(**{k: t[:, : c + 1] for k, t in x.items() if k in ("video", "t_video", "actions", "t_audio")},
                               audio=x["audio"][:, : 2 * c + 2], text=x["text"][:1], text_mask=x["text_mask"][:1],
                               text_pooled=x["text_pooled"][:1])
            torch.testing.assert_close(v, v_full[:, -1:], rtol=0, atol=1e-4)
        sink_starts.append(first)
        sizes.append(cache.n_tokens)
    assert sink_starts[:4] == [0] * 4 and sink_starts[-1] >= 15 - 2 - 3  # then they moved on with the stream
    assert all(c - s <= 2 + 2 + 3 for c, s in enumerate(sink_starts))  # never older than sinks + window + N
    assert len(set(sizes[3:])) == 1  # bounded: the old sinks are dropped, not kept
