"""`worldstream bench engine`: the whole streaming path, not a kernel.

Measures, for a named model (a checkpoint, or a preset with random weights, labelled so),
resolution, sampler and step count, on CPU or GPU: time to first frame (stream start to the
first decoded frame), time per chunk (p50 / p95 / p99) and its jitter, frames per second,
the share spent decoding latents to pixels, input-to-frame latency (an action pushed at a
random moment applies to the next chunk; time from push to that chunk's frames) and peak
memory. Prints a table and writes JSON; the same command on any machine reproduces the
README's speed numbers there.
"""
from __future__ import annotations

import dataclasses
import math
import resource
import threading
import time
import zlib
from typing import Any

import numpy as np
import torch

from ..engine.rollout import RolloutConfig
from ..engine.stream import StreamConfig, World


class RandomText:
    """Stands in for the text encoder where its package is not installed (a GPU machine with no
    package registry): each prompt gets random embeddings of the encoder's shape, one token per
    word plus two, as the real one gives about. A prompt is encoded once per stream start, never
    per chunk, so speed is unaffected; results made with it say so (``text_encoder``)."""

    width = 384

    def encode(self, text: str):
        from ..tokenizers.text import TextEmbedding

        n = len(text.split()) + 2 if text.strip() else 0
        tokens = torch.randn(n, self.width, generator=torch.Generator().manual_seed(zlib.crc32(text.encode())))
        pooled = torch.nn.functional.normalize(tokens.mean(0), dim=0) if n else torch.zeros(self.width)
        return TextEmbedding(tokens, pooled, text)


def random_world(preset: str, width: int, height: int, device: str = "cpu", **view) -> World:
    """A World with random weights in the given preset (speed only): Omni + f8 video AE + audio AE.
    A side that is not a multiple of the model's 16-pixel grid (854 of 854x480, 1080 of 1920x1080)
    is rounded up to one, as a video codec pads 1080 to 1088; the result names both sizes."""
    from ..data.latents import PromptBank
    from ..model.omni import Omni, omni_preset
    from ..tokenizers.audio_ae import AudioAE, audio_ae_preset
    from ..tokenizers.text import TextEncoder, TextEncoderError
    from ..tokenizers.video_ae import VideoAE, video_ae_preset
    from ..worlds.overworld.world import ACTIONS

    torch.manual_seed(0)
    vcfg = video_ae_preset("f8")
    grid = vcfg.spatial * 2  # f8 autoencoder, patch 2
    if width < grid or height < grid:
        raise ValueError(f"{width}x{height}: each side must be at least {grid} pixels")
    asked = (width, height)
    width, height = (math.ceil(x / grid) * grid for x in asked)
    acfg = audio_ae_preset("default")
    mcfg = dataclasses.replace(omni_preset(preset), latent_channels=vcfg.latent_channels,
                               audio_channels=acfg.latent_channels, n_actions=len(ACTIONS), **view)
    with torch.device(device):  # made where it runs: a 1B model's random init takes seconds on a CPU
        model = Omni(mcfg).eval()
    meta = {"actions": {"names": list(ACTIONS)}, "fps": 24, "path": f"{preset} (random weights)", "asked_size": asked,
            "rollout": {"sampler": "x0", "steps": 1, "text_scale": 1.0, "action_scale": 1.0},  # a student's path
            "latent_shape": [vcfg.latent_channels, height // vcfg.spatial, width // vcfg.spatial]}
    vae = VideoAE(vcfg).to(device).eval()
    aae = AudioAE(acfg).to(device).eval()
    try:
        text = TextEncoder()
    except TextEncoderError:
        text = RandomText()
    meta["text_encoder"] = "all-MiniLM-L6-v2" if isinstance(text, TextEncoder) else "random (package not installed)"
    return World(model, meta, vae, aae, PromptBank(text))


@torch.no_grad()
def bench_engine(world: World, rollout: RolloutConfig, chunks: int = 200, latency_trials: int = 20,
                 device: str = "cpu", seed: int = 0, compile: bool = False) -> dict[str, Any]:
    """``compile``: the transformer's dense parts compiled (what play and serve run); the compiling
    is done first by a warm-up stream, as a server does before it takes sessions, and reported
    apart (``warm_up_s``), so time to first frame is what a session sees."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    config = StreamConfig(rollout=rollout, compile=compile)
    # compiled: compile first, as a server does; on a GPU, eager too: its first passes load kernels
    # and pick algorithms (seconds), which a server also does once before it takes sessions
    warm = world.warm_up(config, chunks=40 if compile else 3) if compile or device.startswith("cuda") else 0.0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    s = world.stream("a grassy meadow with a path", seed=seed, config=config)
    s.step("idle")
    sync()
    ttff = time.perf_counter() - t0
    times, decode = [], []
    decoders = world.decoders(compile)  # (video, audio): what the stream calls
    vae_decode = decoders[0]

    def timed_decode(*a, **kw):  # how much of a chunk is latents -> pixels
        t = time.perf_counter()
        out = vae_decode(*a, **kw)
        sync()
        decode.append(time.perf_counter() - t)
        return out

    world._decoders[compile] = (timed_decode, decoders[1])
    rng = np.random.default_rng(seed)
    acts = [n for n in world.vocab.names if n.startswith("walk")] or list(world.vocab.names)
    try:
        for i in range(chunks):
            t = time.perf_counter()
            s.step(acts[int(rng.integers(len(acts)))] if i % 12 == 0 else None)
            sync()
            times.append(time.perf_counter() - t)
        lat = []
        for k in range(latency_trials):
            pushed = {}
            period = float(np.median(times))

            def press(k=k):
                pushed["t"] = time.perf_counter()
                s.act(acts[k % len(acts)])

            timer = threading.Timer(rng.uniform(0, period), press)
            timer.start()
            s.step()
            timer.join()
            s.step()
            sync()
            lat.append(time.perf_counter() - pushed["t"])
    finally:
        world._decoders[compile] = decoders
    ms = np.array(times) * 1000
    frames_per_chunk = world.frames_per_chunk
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    asked = world.meta.get("asked_size")
    size = f"{world.width}x{world.height}"
    if asked and tuple(asked) != (world.width, world.height):
        size = f"{asked[0]}x{asked[1]} (as {size})"
    return {
        "model": world.name, "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(),
        "resolution": size, "text_encoder": world.meta.get("text_encoder", "all-MiniLM-L6-v2"),
        "parameters_m": sum(p.numel() for p in world.model.parameters()) / 1e6,
        "rollout": dataclasses.asdict(rollout),
        "view": {k: getattr(world.model.cfg, k) for k in ("window", "sinks", "memory_topk", "memory_p")},
        "time_to_first_frame_ms": ttff * 1000,
        "ms_per_chunk": {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                         "p99": float(np.percentile(ms, 99))},
        "jitter_ms": float(np.std(ms)),
        "fps": frames_per_chunk * 1000 / float(np.mean(ms)),
        "decode_ms_per_chunk_p50": float(np.median(decode)) * 1000 if decode else None,
        "input_to_frame_ms": {"p50": float(np.percentile(lat, 50)) * 1000, "p95": float(np.percentile(lat, 95)) * 1000},
        "peak_memory_mb": peak, "peak_memory_kind": "cuda allocated" if device.startswith("cuda") else "process max RSS",
        "chunks": chunks, "threads": torch.get_num_threads(), "compiled": compile, "warm_up_s": warm,
    }


def format_row(r: dict[str, Any]) -> str:
    ro = r["rollout"]
    steps = (f"{ro['sampler']} x{ro['steps']}" + ("" if ro["text_scale"] == 1 and ro["action_scale"] == 1 else " +cfg")
             + (", compiled" if r.get("compiled") else ""))
    return (f"| {r['model']}, {r['parameters_m']:.0f}M | {r['device']} | {r['resolution']} | {steps} | {r['time_to_first_frame_ms']:.0f} | "
            f"{r['ms_per_chunk']['p50']:.1f} / {r['ms_per_chunk']['p95']:.1f} / {r['ms_per_chunk']['p99']:.1f} | "
            f"{r['jitter_ms']:.1f} | **{r['fps']:.1f}** | {r['decode_ms_per_chunk_p50']:.1f} | "
            f"{r['input_to_frame_ms']['p50']:.0f} / {r['input_to_frame_ms']['p95']:.0f} | {r['peak_memory_mb']:.0f} |")


HEADER = ("| model | device | size | sampler | first frame ms | ms per chunk p50 / p95 / p99 | jitter ms | fps | "
          "decode ms | input→frame p50 / p95 ms | peak MB |\n|---|---|---|---|---|---|---|---|---|---|---|")
