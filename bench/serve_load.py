"""Load test and browser latency of the streaming server on this machine.

    .venv/bin/python bench/serve_load.py --checkpoint runs/teacher_view --clients 1 4 8 --seconds 60 \
        --browser --out docs/results/serve

For each N: N clients connect at once (N-1 Python clients plus, with --browser, one real headless
Chromium page that holds keys down and measures key-press-to-frame on the page itself), read for
``--seconds``, and we report frames per second per client, input-to-frame latency percentiles
(from the page, and from the server's /metrics), dropped frames and the server process's memory
before and after. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from worldstream.client import Client
from worldstream.engine.rollout import RolloutConfig
from worldstream.engine.stream import StreamConfig, World
from worldstream.eval.stream import rss_mb
from worldstream.serve.server import Background, Server, ServerConfig, overworld_start

FLAGS = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
         "--no-first-run", "--no-sandbox"]


def python_client(url: str, seconds: float, seed: int, out: dict) -> None:
    frames, lat = 0, []
    with Client(url, seed=seed, max_frames=8) as c:
        t0 = time.monotonic()
        pending = None
        while time.monotonic() - t0 < seconds:
            if pending is None:
                pending = (c.act(["walk_e", "walk_w", "run_n", "idle"][frames % 4]), time.monotonic())
            for f in c.frames(limit=1, timeout=30):
                frames += 1
                if pending and f.seq >= pending[0]:
                    lat.append((f.received - pending[1]) * 1000)
                    pending = None
        out[seed] = {"fps": frames / seconds, "latency_ms": lat}


def browser_client(base: str, seconds: float, out: dict, screenshot: str | None = None) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS, headless=True)
        page = b.new_page(viewport={"width": 900, "height": 760})
        page.goto(base + "/")
        page.wait_for_function("window.worldstream.framesDrawn > 2", timeout=120_000)
        page.click("#screen")
        n0, t0 = page.evaluate("window.worldstream.framesDrawn"), time.monotonic()
        keys = ["d", "a", "w", "s"]
        i = 0
        while time.monotonic() - t0 < seconds:
            page.keyboard.down(keys[i % 4])
            page.wait_for_timeout(400)
            page.keyboard.up(keys[i % 4])
            page.wait_for_timeout(200)
            i += 1
        n1 = page.evaluate("window.worldstream.framesDrawn")
        if screenshot:
            page.screenshot(path=screenshot)
        out["browser"] = {"fps": (n1 - n0) / (time.monotonic() - t0),
                          "latency_ms": page.evaluate("window.worldstream.latencies")}
        b.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/results/serve")
    ap.add_argument("--screenshot", help="save the page (first browser run) here, e.g. docs/images/play.png")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    world = World.load(a.checkpoint)
    rollout = RolloutConfig(sampler=a.sampler, steps=a.steps, text_scale=1.0, action_scale=1.0)
    rows = []
    for n in a.clients:
        bg = Background(Server(world, ServerConfig(port=0, max_sessions=max(a.clients), stream=StreamConfig(rollout=rollout)),
                               start=overworld_start(world.width, world.height)))
        mem0 = rss_mb()
        res: dict = {}
        threads = [threading.Thread(target=python_client, args=(bg.url.replace("http", "ws") + "/ws", a.seconds, i, res))
                   for i in range(n - (1 if a.browser else 0))]
        if a.browser:
            shot = a.screenshot if n == a.clients[0] else None
            threads.append(threading.Thread(target=browser_client, args=(bg.url, a.seconds, res, shot)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with urllib.request.urlopen(bg.url + "/metrics") as r:
            m = json.loads(r.read())
        bg.close()
        lat = [x for v in res.values() for x in v["latency_ms"]]
        page = res.get("browser", {}).get("latency_ms", [])
        row = {"clients": n, "fps_per_client": float(np.mean([v["fps"] for v in res.values()])),
               "fps_min": float(np.min([v["fps"] for v in res.values()])),
               "input_to_frame_ms_p50": float(np.percentile(lat, 50)) if lat else None,
               "input_to_frame_ms_p95": float(np.percentile(lat, 95)) if lat else None,
               "browser_key_to_frame_ms_p50": float(np.percentile(page, 50)) if page else None,
               "browser_key_to_frame_ms_p95": float(np.percentile(page, 95)) if page else None,
               "server_ms_per_chunk_p50": m["worker_ms_per_chunk"]["p50"], "rss_mb_before": mem0, "rss_mb_after": rss_mb(),
               "dropped": sum(s["dropped"] for s in m.get("per_session", []))}
        rows.append(row)
        print(json.dumps(row))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"checkpoint": a.checkpoint, "rollout": vars(rollout), "seconds": a.seconds, "threads": a.threads,
            "machine": "2-core CPU (no GPU)", "rows": rows}
    (out / "serve_load.json").write_text(json.dumps(meta, indent=1))
    print("\n| clients | fps per client (min) | input→frame p50 / p95 ms | browser key→frame p50 / p95 ms | server ms/chunk | RSS MB before → after |")
    print("|---|---|---|---|---|---|")
    f = lambda x: "–" if x is None else f"{x:.0f}"  # noqa: E731
    for r in rows:
        print(f"| {r['clients']} | {r['fps_per_client']:.1f} ({r['fps_min']:.1f}) | {f(r['input_to_frame_ms_p50'])} / "
              f"{f(r['input_to_frame_ms_p95'])} | {f(r['browser_key_to_frame_ms_p50'])} / {f(r['browser_key_to_frame_ms_p95'])} "
              f"| {f(r['server_ms_per_chunk_p50'])} | {r['rss_mb_before']:.0f} → {r['rss_mb_after']:.0f} |")


if __name__ == "__main__":
    main()
