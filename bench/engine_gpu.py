"""The GPU rows of the engine table (issue 6): a ~1B-parameter student configuration with random
weights (speed only, labelled so) streamed end to end at 854x480 and 1920x1080 on one GPU.

    python3 bench/engine_gpu.py --out docs/results/engine_gpu            # on a CUDA machine
    python3 bench/engine_gpu.py --device cpu --preset tiny --size 120x72 --chunks 4   # the code path, anywhere

Each row is ``worldstream bench engine --preset 1b --device cuda --size WxH`` with one sampler and
attention window; this script runs them in one process so the 1B model is built once per size,
rewrites ``rows.json`` and ``table.md`` as soon as each row is measured (a row that fails leaves
its traceback in ``errors.txt`` and the others go on), stops starting rows after ``--budget``
seconds, and prints the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed

from worldstream.engine.rollout import RolloutConfig  # noqa: E402
from worldstream.model import attention  # noqa: E402
from worldstream.eval.bench_engine import HEADER, bench_engine, format_row, random_world  # noqa: E402

# (size, sampler steps, window): the student's 1 step at both sizes and both windows first, then
# its 2- and 4-step paths at 854x480
ROWS = [("854x480", 1, 12), ("1920x1080", 1, 12), ("1920x1080", 1, 4), ("854x480", 1, 4),
        ("854x480", 2, 12), ("854x480", 4, 12), ("1920x1080", 4, 12)]


def profile(world, rollout: RolloutConfig, name: str, warm: int = 20, chunks: int = 8) -> str:
    """Where a chunk's time goes: ``chunks`` chunks of a stream whose window and memory bank are
    full, under torch.profiler (CPU and CUDA), top ops by device time and by CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from worldstream.engine.stream import StreamConfig

    s = world.stream("a grassy meadow with a path", seed=0, config=StreamConfig(rollout=rollout))
    for _ in range(warm):
        s.step("walk_e")
    cuda = world.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=acts) as prof:
        for _ in range(chunks):
            s.step("walk_e")
        sync()
    wall = (time.perf_counter() - t0) / chunks * 1000
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    ka = prof.key_averages()
    return (f"{name}: {wall:.1f} ms a chunk under the profiler ({chunks} chunks, window and memory full)\n\n"
            + ka.table(sort_by=key, row_limit=30, max_name_column_width=60) + "\n\nby CPU time\n"
            + ka.table(sort_by="cpu_time_total", row_limit=20, max_name_column_width=60))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/results/engine_gpu")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--size", help="only this size (all rows of it)")
    ap.add_argument("--chunks", type=int, default=0, help="chunks timed per row (0: 120 at 854x480, 40 at 1080p)")
    ap.add_argument("--rows", help="only these rows of ROWS, e.g. 0,2 (numbered from 0)")
    ap.add_argument("--attention", choices=("auto", "grouped", "dense"), default="auto",
                    help="streamed attention: grouped (gathered keys, fused kernel; auto on a GPU) or dense "
                         "(a materialised score matrix; auto on a CPU)")
    ap.add_argument("--compile", action="store_true", help="the transformer's dense parts and the decoders compiled")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing: torch.profiler over 8 chunks of a full stream, top ops to profile.txt")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds after which no new row starts")
    a = ap.parse_args()
    attention.GROUPED = {"auto": None, "grouped": True, "dense": False}[a.attention]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rows = [r for r in ROWS if a.size is None or r[0] == a.size] or [(a.size, 1, 12)]
    if a.rows:
        rows = [rows[int(i)] for i in a.rows.split(",")]
    worlds: dict[str, object] = {}
    # rows measured by earlier runs into the same folder are kept (a row per process, as
    # after a failed one a GPU context may be unusable)
    results = json.loads((out / "rows.json").read_text()) if (out / "rows.json").exists() else []
    errors = [(out / "errors.txt").read_text()] if (out / "errors.txt").exists() else []

    def save() -> None:
        (out / "rows.json").write_text(json.dumps(results, indent=1))
        (out / "table.md").write_text(HEADER + "\n" + "\n".join(
            format_row(r).replace(f"| {r['resolution']} |", f"| {r['resolution']}, window {r['view']['window']}, {r.get('attention', 'auto')} attention |")
            for r in results) + "\n")
        if errors:
            (out / "errors.txt").write_text("\n\n".join(errors))
    for size, steps, window in rows:
        name = f"{a.preset}-{size}-x{steps}-w{window}-{a.attention}" + ("-compiled" if a.compile else "")
        if time.perf_counter() - t_start > a.budget:
            print(f"{name}: skipped (budget of {a.budget:.0f} s spent)", flush=True)
            continue
        try:
            if size not in worlds:
                worlds.clear()  # one size's model and caches at a time
                if a.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                w, h = (int(x) for x in size.split("x"))
                worlds[size] = random_world(a.preset, w, h, a.device, window=12, sinks=1, memory_topk=4)
            world = worlds[size]
            world.model.cfg = dataclasses.replace(world.model.cfg, window=window)
            chunks = a.chunks or (120 if "480" in size else 40)
            rollout = RolloutConfig(sampler="x0", steps=steps, text_scale=1.0, action_scale=1.0)
            if a.profile:
                (out / "profile.txt").write_text(profile(world, rollout, name))
                print((out / "profile.txt").read_text())
                continue
            t0 = time.perf_counter()
            r = bench_engine(world, rollout, chunks=chunks, latency_trials=10, device=a.device, compile=a.compile)
            r["row_seconds"] = time.perf_counter() - t0
            results.append(dict(r, row=name, attention=a.attention))
            print(format_row(r) + f"  window {window}, {r['row_seconds']:.0f} s", flush=True)
        except Exception as e:  # noqa: BLE001 (a row's failure is recorded; the others go on)
            errors.append(f"{name}\n{traceback.format_exc()}")
            print(f"{name}: FAILED {type(e).__name__}: {e}", flush=True)
        save()
    print((out / "table.md").read_text())
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
