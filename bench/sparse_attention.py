"""Speed of adaptive sparse memory attention against dense attention over the same cache.

    .venv/bin/python bench/sparse_attention.py --memory 64 256 1024 --out docs/results/sparse_attention.json

The default model's shape (width 256, 8 layers, 4 heads, 64 tokens per 16x16 latent frame plus
action and audio tokens) with a window of 12 chunks, 1 sink and a memory bank of M pooled chunks
(4 keys each). One streamed chunk attends to the window, the sink, the text and: all M memory
chunks (dense), the top 8 (sparse), or an adaptive number (mass 0.9, budget 16). Weights, keys
and values are random (speed only); the quality cost is measured with trained models by
`worldstream eval stream` / `eval teacher`. Times are medians over repeats, 2 threads, CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from worldstream.model.cache import chunk_means
from worldstream.model.omni import Omni, omni_preset


def filled_cache(model: Omni, memory: int, window: int, B: int = 1):
    """A cache as a long stream leaves it: text, the sink, a full window and M memory chunks (random)."""
    cfg = model.cfg
    cache = model.new_cache(memory_chunks=memory)
    H, Dh = cfg.heads, cfg.width // cfg.heads
    n = 1 + 64 + cfg.audio_tokens_per_frame  # tokens per chunk at 128x128
    first = memory + window + 10
    kept = [0] + list(range(first - window + 1, first))
    g = torch.Generator().manual_seed(0)
    for i in range(len(model.blocks)):
        cache.text[i] = (torch.randn(B, H, 12, Dh, generator=g), torch.randn(B, H, 12, Dh, generator=g))
        cache.k[i] = torch.randn(B, H, len(kept) * n, Dh, generator=g)
        cache.v[i] = torch.randn(B, H, len(kept) * n, Dh, generator=g)
        cache.mem_k[i] = torch.randn(B, H, memory * cfg.memory_tokens, Dh, generator=g)
        cache.mem_v[i] = torch.randn(B, H, memory * cfg.memory_tokens, Dh, generator=g)
        cache.mem_kmean[i] = chunk_means(cache.mem_k[i], cfg.memory_tokens)  # kept with the bank, as eviction does
    cache.text_valid = torch.ones(B, 12, dtype=torch.bool)
    cache.chunk_of = torch.tensor(kept).repeat_interleave(n)
    cache.time_of = cache.chunk_of.clone()
    cache.mem_chunk_of = torch.arange(1, memory + 1).repeat_interleave(cfg.memory_tokens)
    cache.n_chunks = first
    return cache


def time_chunk(model: Omni, cache, repeats: int) -> tuple[float, float]:
    """(ms per chunk forward, ms in attention) for one streamed chunk at 128x128."""
    from worldstream.model import attention

    cfg = model.cfg
    x = dict(video=torch.randn(1, 1, cfg.latent_channels, 16, 16), t_video=torch.full((1, 1), 0.5),
             actions=torch.zeros(1, 1, dtype=torch.long), audio=torch.randn(1, cfg.audio_tokens_per_frame, cfg.audio_channels),
             t_audio=torch.full((1, 1), 0.5), text_pooled=torch.randn(1, 384), cache=cache, start_frame=cache.n_chunks)
    spent = [0.0]
    orig = attention.attend

    def timed(*a, **kw):
        t = time.perf_counter()
        out = orig(*a, **kw)
        spent[0] += time.perf_counter() - t
        return out

    totals, attn = [], []
    with torch.no_grad():
        for r in range(repeats + 3):
            spent[0] = 0.0
            attention.attend = timed
            import worldstream.model.omni as omni_mod
            omni_mod.attend = timed
            t = time.perf_counter()
            model(**x)
            total = time.perf_counter() - t
            omni_mod.attend = orig
            attention.attend = orig
            if r >= 3:
                totals.append(total * 1000)
                attn.append(spent[0] * 1000)
    totals.sort(), attn.sort()
    return totals[len(totals) // 2], attn[len(attn) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--window", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = dataclasses.replace(omni_preset("default"), window=a.window, sinks=1, memory_tokens=4)
    rows = []
    for M in a.memory:
        row = {"memory_chunks": M}
        for name, view in (("dense", dict(memory_topk=M)), ("sparse_top8", dict(memory_topk=8)),
                           ("adaptive_p0.9_max16", dict(memory_topk=16, memory_p=0.9))):
            torch.manual_seed(0)
            model = Omni(dataclasses.replace(base, **view)).eval()
            total, attn = time_chunk(model, filled_cache(model, M, a.window), a.repeats)
            row[name] = {"ms_per_chunk_forward": total, "ms_attention": attn}
        for name in ("sparse_top8", "adaptive_p0.9_max16"):
            row[name]["speedup_attention"] = row["dense"]["ms_attention"] / row[name]["ms_attention"]
            row[name]["speedup_chunk"] = row["dense"]["ms_per_chunk_forward"] / row[name]["ms_per_chunk_forward"]
        rows.append(row)
        print(json.dumps(row))
    print("\n| memory chunks | dense: chunk / attention ms | top-8: chunk / attention ms (speed-up) | adaptive: chunk / attention ms (speed-up) |")
    print("|---|---|---|---|")
    for r in rows:
        d, s, ad = r["dense"], r["sparse_top8"], r["adaptive_p0.9_max16"]
        print(f"| {r['memory_chunks']} | {d['ms_per_chunk_forward']:.1f} / {d['ms_attention']:.1f} | "
              f"{s['ms_per_chunk_forward']:.1f} / {s['ms_attention']:.1f} ({s['speedup_chunk']:.2f}x / {s['speedup_attention']:.2f}x) | "
              f"{ad['ms_per_chunk_forward']:.1f} / {ad['ms_attention']:.1f} ({ad['speedup_chunk']:.2f}x / {ad['speedup_attention']:.2f}x) |")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"config": "default preset, random weights (speed only), 128x128, window "
                                           f"{a.window}, 1 sink, 4 keys per memory chunk, {a.threads} threads, CPU",
                                           "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
