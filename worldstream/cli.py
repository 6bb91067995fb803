"""The `worldstream` command. Thin: it parses arguments and calls library functions."""
from __future__ import annotations

import argparse
import os
import json
import sys
from pathlib import Path


# ``train.pipeline.PRESETS``' names, here so that parsing does not import torch (a test keeps them equal)
PIPELINE_PRESETS = ("tiny", "default", "refine", "refine_long", "prev", "prev_sharp", "refine_gpu",
                    "refine_gpu_long", "refine_gpu_one_call", "pixel", "tiny_pixel")
PIPELINE_STAGES = ("record", "autoencoders", "latents", "teacher", "view", "student", "eval")  # train/pipeline.py STAGES


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 128x128, not {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: width and height must be positive")
    return w, h


def _seconds(text: str) -> float:
    """A positive, finite length of time (nan, inf and 0 would make an empty or endless file)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seconds must be a number, not {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"seconds {text!r}: give a positive, finite length")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a whole number, not {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port {v}: use 1-65535 (0 = any free port)")
    return v


def _check_can_listen(host: str, port: int) -> int:
    """Bind and release the address before the model is loaded and compiled (half a minute), so a port
    that is taken is a clear error at once rather than a traceback after the warm-up. Returns the port
    (for 0, a free one the system picked, so the printed address is the real one)."""
    import errno
    import socket

    try:
        with socket.create_server((host, port)) as sock:  # SO_REUSEADDR as the server's own socket
            return sock.getsockname()[1]
    except OSError as e:
        hint = ("another program listens there: pass another --port (0 = any free port)" if e.errno == errno.EADDRINUSE
                else "check --host and --port")
        raise ValueError(f"cannot listen on {host}:{port}: {os.strerror(e.errno) if e.errno else e}; {hint}") from None


def _world_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=_size, default=(128, 128), help="frame WIDTHxHEIGHT in pixels (default 128x128)")
    p.add_argument("--tile-px", type=int, default=8, help="pixels per world tile: the zoom (default 8)")
    p.add_argument("--fps", type=int, default=24, help="frames per second (default 24)")
    p.add_argument("--sample-rate", type=int, default=24000, help="audio rate, a multiple of fps (default 24000)")
    p.add_argument("--world-seed", type=int, default=0, help="which world (terrain, inhabitants); default 0")


def _rollout_args(p: argparse.ArgumentParser) -> None:
    """Sampler options; each one left out takes the checkpoint's recommendation (a student: its own
    step count with guidance folded in; a teacher: Heun 8 with text 1.5 / action 2, log.md)."""
    p.add_argument("--sampler", choices=("euler", "heun", "x0"), help="default: the checkpoint's recommendation")
    p.add_argument("--steps", type=int, help="sampler steps per chunk")
    p.add_argument("--shift", type=float, help="time-grid shift toward noise")
    p.add_argument("--text-scale", type=float, help="prompt guidance (1 = none)")
    p.add_argument("--action-scale", type=float, help="action guidance (1 = none)")
    p.add_argument("--prev-level", type=float,
                   help="a model trained with --prev-level: degrade its previous frame at this level (0 = clean)")


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu",
                   help="where the model runs: cpu, or cuda (needs a CUDA build of PyTorch); data, random numbers "
                        "and a stream's bookkeeping stay on the CPU")


def _compile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="run the transformer eagerly: no seconds of torch.compile at start, ~1.4x slower chunks")


def _rollout_config(a: argparse.Namespace, meta: dict):
    """The checkpoint's recommended sampler with whatever the command line overrides."""
    import dataclasses

    from .engine.stream import recommended_rollout

    given = {k: getattr(a, k) for k in ("sampler", "steps", "shift", "text_scale", "action_scale", "prev_level")
             if getattr(a, k, None) is not None}
    return dataclasses.replace(recommended_rollout(meta), **given)


def _world_config(a: argparse.Namespace):
    from .worlds.overworld.world import OverworldConfig

    return OverworldConfig(seed=a.world_seed, width=a.size[0], height=a.size[1], tile_px=a.tile_px, fps=a.fps,
                           sample_rate=a.sample_rate)


def cmd_record(a: argparse.Namespace) -> int:
    from .data.record import RecordConfig, record

    from .worlds.overworld.policy import ExplorerConfig

    cfg = RecordConfig(world=_world_config(a), episodes=a.episodes, frames=a.frames,
                       explorer=ExplorerConfig(push_share=a.push_share))
    m = record(a.out, cfg, workers=a.workers, heldout_only=a.heldout_only)
    fps = m["_recorded_frames"] / max(m["_record_seconds"], 1e-9)
    print(f"{a.out}: {len(m['episodes'])} episodes, {m['total_frames']} frames "
          f"({m['_recorded_frames']} recorded now at {fps:.0f} frames/s)")
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    from .data.importer import ImportConfig, import_videos

    cfg = ImportConfig(fps=a.fps, sample_rate=a.sample_rate, max_side=a.max_side, multiple=a.multiple, sidecar=a.sidecar)
    summary = import_videos(a.src, a.out, cfg, vocab_file=a.vocab)
    print(summary.report())
    return 0 if summary.imported or summary.already else 1


def cmd_record_gym(a: argparse.Namespace) -> int:
    from .data.gym_record import GymRecordConfig, record_gym
    from .worlds.overworld.env import register

    register()
    cfg = GymRecordConfig(env_id=a.env, episodes=a.episodes, frames=a.frames, frame_skip=a.frame_skip, fps=a.fps,
                          sample_rate=a.sample_rate, max_side=a.max_side, seed=a.seed)
    m = record_gym(a.out, cfg)
    print(f"{a.out}: {len(m['episodes'])} episodes, {m['total_frames']} frames at {m['fps']} fps, "
          f"actions {m['actions']['names']}")
    return 0


def cmd_preview(a: argparse.Namespace) -> int:
    from .data.preview import preview_episode, preview_world
    from .data.video import check_preview_path

    check_preview_path(Path(a.out))  # before the seconds of recording, not after
    if a.dataset:
        mp4, png, captions = preview_episode(a.dataset, a.episode, a.out)
    else:
        mp4, png, captions = preview_world(a.out, a.seconds, _world_config(a), seed=a.seed)
    for frame, text in captions:
        print(f"  frame {frame:5d}: {text}")
    print(f"wrote {mp4} (video with sound) and {png} (contact sheet)")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from .data.format import Dataset, DatasetError

    ds = Dataset(a.dataset)
    m = ds.manifest
    print(f"{ds.path}: {len(ds)} episodes, {m['total_frames']} frames, {m['fps']} fps, audio {m['sample_rate']} Hz "
          f"({m['samples_per_frame']} samples/frame), sizes {m['resolutions']}")
    print(f"actions ({len(m['actions']['names'])}): {', '.join(m['actions']['names'])}")
    print(f"splits: {len(ds.split('train'))} train, {len(ds.split('heldout'))} heldout")
    if a.check:
        bad = 0
        for ep in ds.episodes:
            try:
                ep.frames()
                ep.audio()
                ep.records()
            except DatasetError as e:
                bad += 1
                print(f"  BAD {ep.name}: {e}")
        print(f"checked {len(ds)} episodes: {len(ds) - bad} good, {bad} bad")
        return 1 if bad else 0
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    if a.what == "world":
        from .eval.bench_world import bench_world, format_tables

        res = bench_world(frames=a.frames)
        print(format_tables(res))
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1))
    elif a.what == "engine":
        import torch

        from .engine.stream import World
        from .eval.bench_engine import HEADER, bench_engine, format_row, random_world

        torch.set_num_threads(a.threads)
        w, h = a.size
        if a.preset:
            world = random_world(a.preset, w, h, a.device, window=a.window, sinks=1, memory_topk=a.memory_topk)
        else:
            world = World.load(a.checkpoint).to(a.device)  # None: the shipped default model
        res = bench_engine(world, _rollout_config(a, world.meta), chunks=a.chunks, device=a.device, compile=a.compile)
        print(HEADER)
        print(format_row(res))
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(res, indent=1))
    else:
        import numpy as np
        import torch

        from .engine.stream import World
        from .eval.stream import long_stream, plot_long_stream

        torch.set_num_threads(a.threads)
        if not a.data:
            raise ValueError("bench stream needs --data (real frames for the drift statistics)")
        world = World.load(a.checkpoint)
        res = long_stream(world, a.data, a.minutes, _rollout_config(a, world.meta), prompt=a.prompt, seed=a.seed,
                          compile=a.compile)
        print(f"{res['chunks']} chunks over {a.minutes} min: ms per chunk p50 {res['ms_per_chunk']['p50']:.1f}, "
              f"p95 {res['ms_per_chunk']['p95']:.1f}, p99 {res['ms_per_chunk']['p99']:.1f}; slopes per minute: "
              f"time {res['slope_ms_per_chunk_per_minute']:+.3f} ms, RSS {res['slope_rss_mb_per_minute']:+.3f} MB, "
              f"cache {res['slope_cache_mb_per_minute']:+.4f} MB")
        print("minute  sharpness  hist-dist-to-real")
        for p in res["per_minute"]:
            print(f"{p['minute']:6d}  {p['sharpness']:9.4f}  {p['hist_distance_to_real']:.3f}")
        if a.out:
            out = Path(a.out)
            out.mkdir(parents=True, exist_ok=True)
            from .data.png import grid, save_png

            snaps = res.pop("snapshots")
            save_png(out / "long_stream_frames.png", grid([np.kron(f, np.ones((2, 2, 1), np.uint8)) for f in snaps], cols=8))
            (out / "long_stream.json").write_text(json.dumps(res, indent=1))
            plot_long_stream(res, out / "long_stream.png")
            print(f"wrote {out}/long_stream.json and long_stream.png")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    import torch

    from .train.autoencoder import AETrainConfig, train_autoencoder

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.what == "all":
        from .train.pipeline import train_all

        train_all(a.preset or "default", a.out, device=a.device, until=a.until)
        return 0
    if a.what == "autoencoder" and a.kind == "pixels":
        from .tokenizers.pixels import fit_pixel_codec

        stats = fit_pixel_codec(a.data, a.out)
        print(f"{a.out}: pixel codec, mean {[round(x, 4) for x in stats['mean']]}, std {[round(x, 4) for x in stats['std']]}")
        return 0
    if a.what == "autoencoder":
        defaults = {"video": ("f8", 8, 4), "audio": ("default", 16, 8)}[a.kind]
        cfg = AETrainConfig(kind=a.kind, preset=a.preset or defaults[0], dataset=a.data, steps=a.steps,
                            batch=a.batch or defaults[1], clip_frames=a.clip_frames or defaults[2], lr=a.lr, crop=a.crop,
                            eval_every=a.eval_every, bf16=not a.fp32, seed=a.seed, shift_weight=a.shift_weight,
                            init_from=a.init_from or "", decoder_only=a.decoder_only, adv_weight=a.adv_weight,
                            disc_lr=a.disc_lr, latent_blur=a.latent_blur, own_from=a.own_from or "",
                            own_share=a.own_share, own_latents=a.own_latents, own_clips=a.own_clips,
                            own_frames=a.own_frames, own_lowpass=a.own_lowpass)
        metrics = train_autoencoder(cfg, a.out, max_seconds=a.max_minutes * 60 if a.max_minutes else None)
    elif a.what == "student":
        from .distill.student import StudentTrainConfig, train_student

        cfg = StudentTrainConfig(teacher=a.teacher, dataset=a.data, latents=a.latents, steps=a.steps, batch=a.batch,
                                 history=a.history, levels=tuple(a.levels), teacher_sampler=a.teacher_sampler,
                                 teacher_steps=a.teacher_steps,
                                 text_scale=a.text_scale, action_scale=a.action_scale,
                                 self_forcing_from=a.self_forcing_from, self_forcing_share=a.self_forcing_share,
                                 rollout_chunks=a.rollout_chunks, rollout_steps=a.rollout_steps,
                                 change_share=a.change_share, init_from=a.init_from, lr=a.lr,
                                 objective=a.objective, fake_lr=a.fake_lr, fake_updates=a.fake_updates,
                                 adv_step=a.adv_step, disc_lr=a.disc_lr, disc_gamma=a.disc_gamma,
                                 disc_warmup=a.disc_warmup, adv_anchor=a.adv_anchor,
                                 random_rollout_length=a.random_rollout_length, moment_weight=a.moment_weight,
                                 detail_weight=a.detail_weight,
                                 own_at_one=a.own_at_one, sink_every=a.sink_every,
                                 prev_level=a.prev_level, warmup=a.warmup, eval_every=a.eval_every, bf16=not a.fp32,
                                 seed=a.seed)
        metrics = train_student(cfg, a.out, max_seconds=a.max_minutes * 60 if a.max_minutes else None, device=a.device,
                                budget_s=a.budget_minutes * 60 if a.budget_minutes else None)
    else:
        from .train.teacher import TeacherTrainConfig, train_teacher

        cfg = TeacherTrainConfig(dataset=a.data, latents=a.latents, preset=a.preset or "default", steps=a.steps,
                                 batch=a.batch or 8, chunks=a.chunks, lr=a.lr or 3e-4, warmup=a.warmup,
                                 eval_every=a.eval_every, bf16=not a.fp32, seed=a.seed, window=a.window,
                                 sinks=a.sinks, memory_topk=a.memory_topk, init_from=a.init_from or "",
                                 compile=a.compile, change_share=a.change_share, prev_frame=a.prev_frame,
                                 prev_degrade=a.prev_degrade, prev_level=a.prev_level, prev_own=a.prev_own,
                                 prev_own_from=a.prev_own_from or "", prev_own_chain=a.prev_own_chain, prev_shift=a.prev_shift,
                                 move_reach=a.move_reach, move_weight=a.move_weight, levels=a.levels,
                                 hold_centre=a.hold_centre, move_near=a.move_near, still_rows=a.still_rows,
                                 still_depth=a.still_depth,
                                 **({"task_probs": tuple(a.task_probs)} if a.task_probs else {}))
        metrics = train_teacher(cfg, a.out, max_seconds=a.max_minutes * 60 if a.max_minutes else None, device=a.device,
                                budget_s=a.budget_minutes * 60 if a.budget_minutes else None)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{a.out}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    import torch

    from .engine.generate import generate

    if a.threads:
        torch.set_num_threads(a.threads)
    size = a.size
    from .engine.generate import checkpoint_meta

    res = generate(a.checkpoint, a.prompt, a.actions, a.seconds, a.out, _rollout_config(a, checkpoint_meta(a.checkpoint)), seed=a.seed,
                   events=a.events, size=size, start=a.start, device=a.device)
    print(f"wrote {res['out']}: {res['frames']} frames ({res['chunks']} chunks, "
          f"{res['seconds_per_chunk_p50'] * 1000:.0f} ms per chunk p50)")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .weights import DEFAULT, export_bundle

    res = export_bundle(a.run, a.out or DEFAULT, half=not a.fp32, steps=a.steps, window=a.window, sinks=a.sinks,
                        video_decoder=a.video_decoder)
    print(f"{res['out']}: {res['params'] / 1e6:.1f}M-parameter world model with its autoencoders, "
          f"{res['bytes'] / 2**20:.1f} MB in {len(res['files'])} files (SHA-256 manifest)")
    return 0


def cmd_captions(a: argparse.Namespace) -> int:
    from .data.latents import dataset_paths
    from .tokenizers.text import TEXT_TABLE_ENV, dataset_captions, save_text_table

    out = Path(a.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: name the table .safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made fails here, before encoding
    res = save_text_table(dataset_captions(dataset_paths(a.data)) + a.prompt, out)
    print(f"{res['out']}: {res['prompts']} prompts, {res['bytes'] / 2**20:.1f} MB; train elsewhere with "
          f"{TEXT_TABLE_ENV}={res['out']}")
    return 0


def cmd_encode(a: argparse.Namespace) -> int:
    import torch

    from .tokenizers.encode import encode_dataset

    if a.threads:
        torch.set_num_threads(a.threads)
    res = encode_dataset(a.data, a.video_ae, a.audio_ae, name=a.name, device=a.device)
    print(f"{res['out']}: encoded {res['episodes']} episodes, {res['frames']} frames"
          + (f" at {res['frames_per_second']:.0f} frames/s" if res["frames_per_second"] else ""))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    import torch

    from .device import torch_device
    from .eval.tokenizers import format_table, run

    torch.set_num_threads(a.threads)
    torch_device(a.device)  # a device this PyTorch cannot use is a clear error before any data is read
    a.out = a.out or f"docs/results/{'eval' if a.what == 'suite' else a.what}"
    if a.what == "tokenizers":
        res = run(a.data, a.video_ae or [], a.audio_ae, a.out)
        print(format_table(res))
        print(f"wrote {a.out}/tokenizers.json, example PNGs and WAVs")
    elif a.what == "suite":
        from .eval.suite import SuiteConfig, parse_spec, run_suite

        specs = [parse_spec(m) for m in (a.model or ["default=default"])]
        cfg = SuiteConfig(clips=a.clips, walk_frames=a.walk_frames, walk_starts=a.walk_starts,
                          prompt_starts=a.prompt_starts, prompt_frames=a.prompt_frames,
                          revisit_episodes=a.revisit_episodes, revisit_seconds=a.revisit_seconds,
                          revisit_data=a.revisit_data or "", speed_chunks=a.speed_chunks,
                          drift_minutes=a.drift_minutes, device=a.device)
        res = run_suite(specs, a.data, a.out, cfg, force=a.force)
        print(res["table"])
        print(f"wrote {a.out}/suite.md, suite.json, drift.png and models/*.json")
    elif a.what == "stream":
        from .engine.stream import World
        from .eval.stream import latency, revisits

        world = World.load(a.checkpoint).to(a.device)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        if a.only in (None, "revisit"):
            rev = revisits(world, a.data, _rollout_config(a, world.meta), episodes=a.clips, seconds=a.revisit_seconds)
            (out / "revisits.json").write_text(json.dumps(rev, indent=1))
            print(json.dumps(rev["summary"], indent=1))
        if a.only in (None, "latency"):
            lat = latency(world, a.data, _rollout_config(a, world.meta), trials=a.latency_trials)
            (out / "latency.json").write_text(json.dumps(lat, indent=1))
            print(json.dumps({k: v for k, v in lat.items() if k not in ("rollout",)}, indent=1))
    else:
        from .eval.teacher import eval_teacher

        from .engine.generate import checkpoint_meta

        res = eval_teacher(a.checkpoint, a.data, _rollout_config(a, checkpoint_meta(a.checkpoint)), clips=a.clips, out=a.out, walk_frames=a.walk_frames,
                           walk_starts=a.walk_starts, prompt_starts=a.prompt_starts, prompt_frames=a.prompt_frames,
                           device=a.device)
        print(json.dumps({k: v for k, v in res.items() if k != "rollout"}, indent=1))
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    import torch

    from .engine.stream import StreamConfig, World
    from .serve.server import ServerConfig, overworld_start, run

    if a.threads:
        torch.set_num_threads(a.threads)
    a.port = _check_can_listen(a.host, a.port)
    img = None
    if a.image:  # read and checked before the model loads
        from .engine.events import decode_image

        try:
            img = decode_image(Path(a.image).read_bytes())
        except OSError as e:
            raise ValueError(f"--image {a.image}: cannot read it ({e.strerror or e})") from None
    world = World.load(a.checkpoint).to(a.device)  # None: the shipped default model
    token = a.token or os.environ.get("WORLDSTREAM_TOKEN")
    cfg = ServerConfig(host=a.host, port=a.port, token=token, max_sessions=a.max_sessions,
                       stream=StreamConfig(rollout=_rollout_config(a, world.meta), compile=a.compile))
    start = None
    if img is not None:
        start = lambda seed: (img, a.prompt)  # noqa: E731
    elif a.command == "play" or a.start == "overworld":
        start = overworld_start(world.width, world.height)
    run(world, cfg, device=str(world.device), open_page=a.command == "play", start=start)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="worldstream", description="An open real-time world model and its toolkit.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("record", help="record episodes of the built-in overworld into a dataset (resumable)")
    r.add_argument("--out", required=True, help="dataset folder (created or resumed)")
    r.add_argument("--episodes", type=int, default=10)
    r.add_argument("--frames", type=int, default=1440, help="frames per episode (default 1440 = 60 s)")
    r.add_argument("--workers", type=int, default=2, help="parallel recording processes (default 2)")
    r.add_argument("--push-share", type=float, default=0.0,
                   help="share of bumps where the explorer keeps pushing into water or rock for 1-3 s "
                        "(default 0: it turns away after 4 frames, as the shipped model's data)")
    r.add_argument("--heldout-only", action="store_true",
                   help="record only the held-out episodes among the first EPISODES (every tenth): a dataset that "
                        "only evaluation reads, e.g. long episodes for revisits, in a tenth of the time")
    _world_args(r)
    r.set_defaults(fn=cmd_record)

    i = sub.add_parser("import", help="import a folder of your videos (+ optional sidecars) into a dataset")
    i.add_argument("src", help="folder with videos and optional <video>.json sidecars / actions.json")
    i.add_argument("--out", required=True, help="dataset folder (created or extended)")
    i.add_argument("--fps", type=int, default=24)
    i.add_argument("--sample-rate", type=int, default=24000)
    i.add_argument("--max-side", type=int, default=256, help="shrink so the longer side is at most this")
    i.add_argument("--multiple", type=int, default=16, help="crop sides to a multiple of this")
    i.add_argument("--sidecar", choices=("auto", "required", "none"), default="auto")
    i.add_argument("--vocab", help="JSON list of action names (default: SRC/actions.json or the sidecars' names)")
    i.set_defaults(fn=cmd_import)

    g = sub.add_parser("record-gym", help="record a gymnasium env (e.g. ALE/Pong-v5, with sound) into a dataset")
    g.add_argument("env", help="gymnasium id, e.g. ALE/Pong-v5 or worldstream/Overworld-v0")
    g.add_argument("--out", required=True)
    g.add_argument("--episodes", type=int, default=10)
    g.add_argument("--frames", type=int, default=1000)
    g.add_argument("--frame-skip", type=int, default=2)
    g.add_argument("--fps", type=int, default=None)
    g.add_argument("--sample-rate", type=int, default=24000)
    g.add_argument("--max-side", type=int, default=256)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(fn=cmd_record_gym)

    v = sub.add_parser("preview", help="write an MP4 with sound + PNG sheet of the live world or a dataset episode")
    v.add_argument("--out", default="preview.mp4")
    v.add_argument("--seconds", type=_seconds, default=20.0)
    v.add_argument("--seed", type=int, default=0, help="episode seed (start place, conditions)")
    v.add_argument("--dataset", help="preview an episode of this dataset instead of the live world")
    v.add_argument("--episode", type=int, default=0)
    _world_args(v)
    v.set_defaults(fn=cmd_preview)

    n = sub.add_parser("info", help="summarise a dataset; --check decodes and validates every episode")
    n.add_argument("dataset")
    n.add_argument("--check", action="store_true")
    n.set_defaults(fn=cmd_info)

    t = sub.add_parser("train", help="train a component; re-running the same command resumes")
    tsub = t.add_subparsers(dest="what", required=True)
    ta = tsub.add_parser("autoencoder", help="the video or audio autoencoder")
    ta.add_argument("--kind", choices=("video", "audio", "pixels"), default="video",
                    help="pixels: no network, frames normalised per colour channel with the data's statistics "
                         "(the codec of a pixel world model; only --data and --out apply)")
    ta.add_argument("--preset", help="video: tiny, f8 (default), f16, f8t4; audio: tiny, default")
    ta.add_argument("--data", required=True, help="dataset folder (train split trains, heldout split evaluates)")
    ta.add_argument("--out", required=True, help="checkpoint folder (resumed if it exists)")
    ta.add_argument("--steps", type=int, default=4000)
    ta.add_argument("--batch", type=int, default=None, help="clips per step (video 8, audio 16)")
    ta.add_argument("--clip-frames", type=int, default=None, help="frames per clip (video 4, audio 8)")
    ta.add_argument("--lr", type=float, default=5e-4)  # teacher: its own --lr below
    ta.add_argument("--crop", type=int, default=64, help="video: random training crop size (0 = full frames)")
    ta.add_argument("--eval-every", type=int, default=500)
    ta.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ta.add_argument("--seed", type=int, default=0)
    ta.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ta.add_argument("--max-minutes", type=float, default=None, help="save and stop after this long (resume later)")
    ta.add_argument("--shift-weight", type=float, default=0.0,
                    help="video: weight of the shift-consistency loss (a moved frame encodes to the moved latent); 0 = off")
    ta.add_argument("--init-from", help="start from this autoencoder run's weights (fine-tuning)")
    ta.add_argument("--decoder-only", action="store_true",
                    help="video: fine-tune only the decoder of --init-from; the encoder and latent normalisation stay "
                         "exactly, so world models trained on its latents can take the new decoder (export --video-decoder)")
    ta.add_argument("--adv-weight", type=float, default=0.0,
                    help="video: weight of a patch discriminator's push on decoded frames (VQGAN-balanced against "
                         "L1 + SSIM), for texture an L1 decoder averages away; 0 = off")
    ta.add_argument("--disc-lr", type=float, default=2e-4, help="--adv-weight: the patch discriminator's learning rate")
    ta.add_argument("--latent-blur", type=float, default=0.0,
                    help="--decoder-only: share of clips decoded from latents softened toward their 3x3 mean (a world "
                         "model's own latents are softer than the encoder's); 0 = off")
    ta.add_argument("--own-from", help="--decoder-only: a world model (folder or 'default') whose own rollouts' latents "
                                       "the decoder also learns to read, paired with the recorded frames")
    ta.add_argument("--own-share", type=float, default=0.0, help="--own-from: share of steps that decode its latents")
    ta.add_argument("--own-latents", default="default", help="--own-from: the latent cache of --data its rollouts start from")
    ta.add_argument("--own-clips", type=int, default=512, help="--own-from: own rollouts in the pool (made once, kept in --out)")
    ta.add_argument("--own-frames", type=int, default=16, help="--own-from: frames per own rollout, the recorded first included")
    ta.add_argument("--own-lowpass", type=int, default=1,
                    help="--own-from: pair its latents with the recorded frames only at k x k means, the critic judging "
                         "detail (needs --adv-weight); 1 = L1 + SSIM at full resolution")
    ta.set_defaults(fn=cmd_train)
    tt = tsub.add_parser("teacher", help="the many-step Omni teacher on a latent cache (also under torchrun)")
    tt.add_argument("--data", required=True, help="dataset folder(s) with a latent cache (worldstream encode); several, comma-separated, train together")
    tt.add_argument("--latents", default="default", help="name of the latent cache")
    tt.add_argument("--out", required=True)
    tt.add_argument("--preset", help="Omni preset: tiny, default, 1b")
    tt.add_argument("--steps", type=int, default=2000)
    tt.add_argument("--batch", type=int, default=None, help="global batch of clips (default 8)")
    tt.add_argument("--chunks", type=int, default=8, help="chunks per clip")
    tt.add_argument("--lr", type=float, default=None)
    tt.add_argument("--warmup", type=int, default=200)
    tt.add_argument("--eval-every", type=int, default=250)
    tt.add_argument("--fp32", action="store_true")
    tt.add_argument("--seed", type=int, default=0)
    tt.add_argument("--threads", type=int, default=0)
    _device_arg(tt)
    tt.add_argument("--max-minutes", type=float, default=None)
    tt.add_argument("--budget-minutes", type=float, default=None,
                    help="end the run after this long with its learning rate decayed to the end by then (--steps stays "
                         "the most): one-shot runs on a rented GPU. --max-minutes instead pauses a run to resume later")
    tt.add_argument("--window", type=int, default=0, help="attention window in chunks (0 = unbounded)")
    tt.add_argument("--sinks", type=int, default=0, help="first chunks always attended")
    tt.add_argument("--memory-topk", type=int, default=0, help="evicted chunks each chunk retrieves from memory")
    tt.add_argument("--init-from", help="start from this run's weights (fine-tuning)")
    tt.add_argument("--prev-frame", action="store_true",
                    help="predict each frame around the previous one (a copy is the model's easy answer)")
    tt.add_argument("--prev-shift", action="store_true",
                    help="with --prev-frame: predict around the previous frame moved by a learned global shift (the "
                         "view's scroll; use shift-consistent latents, train autoencoder --shift-weight)")
    tt.add_argument("--move-reach", type=int, default=0, metavar="PX",
                    help="with --prev-frame: predict around the previous frame moved by a whole number of pixels (at "
                         "most PX each way) that a head names; for pixel latents (train autoencoder --kind pixels)")
    tt.add_argument("--move-weight", type=float, default=0.05, help="--move-reach: weight of naming the best move")
    tt.add_argument("--hold-centre", type=int, default=0, metavar="PX",
                    help="--move-reach: the PX x PX square at the frame's centre stays put when the previous frame "
                         "moves (a camera that follows the player: 8 for the overworld's sprite)")
    tt.add_argument("--move-near", type=int, default=0, metavar="N",
                    help="--move-reach: the move head also reads the N x N tokens at the centre (what blocks a step)")
    tt.add_argument("--levels", choices=("diffusion", "next"), default="diffusion",
                    help="noise levels per chunk: diffusion (each its own) or next (clean history, then pure noise, "
                         "as a 1-step stream makes each frame)")
    tt.add_argument("--prev-degrade", type=float, default=0.0,
                    help="with --prev-frame: share of clips whose previous frame is blurred and noised, as a "
                         "1-step stream's own frames are, so the model sharpens it instead of copying the blur")
    tt.add_argument("--prev-level", action="store_true",
                    help="with --prev-degrade: degrade each chunk's previous frame at a random level and tell the "
                         "model that level, so a stream can degrade its own frames at a fixed level and say so")
    tt.add_argument("--prev-own", type=float, default=0.0, metavar="SHARE",
                    help="with --prev-level: share of clips whose previous frames are a student's one-step guesses "
                         "from the real history (its own loss of detail), the level saying 'own'; streams then "
                         "tell it which frames are their own")
    tt.add_argument("--prev-own-from", metavar="STUDENT", help="the student that makes the --prev-own guesses")
    tt.add_argument("--prev-own-chain", action="store_true",
                    help="with --prev-own: each guess is made from the student's own previous guess (history "
                         "stays real), so its errors compound along the previous frame as in a stream")
    tt.add_argument("--still-rows", type=int, default=0, metavar="N",
                    help="with --levels next: N rows of each batch are the model's own free runs of a still scene "
                         "(every key idle), each frame it makes fed back as history and the scene as its target, "
                         "so it learns to hold what it made (self-forcing where the answer is known)")
    tt.add_argument("--still-depth", type=int, default=192, metavar="FRAMES",
                    help="--still-rows: a run starts on a fresh scene after a random depth up to FRAMES")
    tt.add_argument("--compile", action="store_true",
                    help="torch.compile the blocks' dense parts: ~20%% faster steps after a minute of compiling")
    tt.add_argument("--task-probs", type=float, nargs=5, metavar="P",
                    help="shares of joint, video|audio, audio|video, image->world, continuation (default .5 .15 .15 .1 .1)")
    tt.add_argument("--change-share", type=float, default=0.0,
                    help="share of clips drawn around a caption change, whose history does not yet show the prompt "
                         "(default 0: ~4%% of plain clips hold one)")
    tt.set_defaults(fn=cmd_train)

    tl = tsub.add_parser("all", help="the whole pipeline on overworld data: record, autoencoders, teacher, "
                                      "streaming view, student, evaluation (re-run to resume)")
    tl.add_argument("--preset", default="default", choices=PIPELINE_PRESETS,
                    help="tiny: a minute-long smoke test; default: the shipped recipe from scratch; refine: the shipped "
                         "model trained further (its autoencoders, its weights as the teacher's start); refine_long: "
                         "the same with a teacher trained three times as long; prev: refine into a model that predicts "
                         "each frame around the previous one; prev_sharp: prev with half the teacher's clips given a blurred, "
                         "noisy previous frame to sharpen; refine_gpu: refine with 8x the batch in a time budget "
                         "per stage, for one GPU (about ten minutes); refine_gpu_long: the same with the teacher's "
                         "budget 5 minutes and the view's 1.5; refine_gpu_one_call: teacher 4, view 1.25 and "
                         "student 2.25 minutes, the whole round in one 10-minute GPU call; pixel: a world model on pixels "
                         "that predicts each frame around the last one moved by whole pixels, what the move uncovers "
                         "filled by the stream's remembered or drawn ground, trained to make frames in 1 step (no "
                         "video autoencoder, no view stage, no distillation); tiny_pixel: its smoke test")
    tl.add_argument("--out", default="pipeline", help="folder for data/, runs/ and eval/")
    tl.add_argument("--threads", type=int, default=0)
    tl.add_argument("--until", default="eval", choices=PIPELINE_STAGES,
                    help="the last stage to run (e.g. student: evaluate elsewhere; latents: the data only)")
    _device_arg(tl)
    tl.set_defaults(fn=cmd_train)

    ts = tsub.add_parser("student", help="distil a teacher into a 1-4 step student (guidance folded in)")
    ts.add_argument("--teacher", required=True, help="teacher checkpoint folder")
    ts.add_argument("--data", required=True, help="dataset folder(s), comma-separated, with the teacher's latent cache")
    ts.add_argument("--latents", default="default")
    ts.add_argument("--out", required=True)
    ts.add_argument("--steps", type=int, default=1000)
    ts.add_argument("--batch", type=int, default=4)
    ts.add_argument("--history", type=int, default=8, help="real chunks before the predicted one")
    ts.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4], help="step counts to train for")
    ts.add_argument("--teacher-sampler", choices=("heun", "euler", "x0"), default="heun",
                    help="the teacher's sampler (x0: a student as its own teacher, e.g. to fold in more guidance)")
    ts.add_argument("--teacher-steps", type=int, default=8, help="sampler steps of the teacher's targets")
    ts.add_argument("--text-scale", type=float, default=1.5, help="the teacher's prompt guidance, folded into the student")
    ts.add_argument("--action-scale", type=float, default=2.0, help="the teacher's action guidance, folded in")
    ts.add_argument("--self-forcing-from", type=int, default=200, help="step from which a share of the batches are own rollouts")
    ts.add_argument("--self-forcing-share", type=float, default=0.5, help="share of own-rollout batches from then on")
    ts.add_argument("--rollout-chunks", type=int, default=16)
    ts.add_argument("--random-rollout-length", action="store_true",
                    help="own rollouts of a random length, 2 to --rollout-chunks chunks (drift starts early)")
    ts.add_argument("--rollout-steps", type=int, default=1, help="student steps per chunk in its own rollouts")
    ts.add_argument("--change-share", type=float, default=0.0,
                    help="share of clips drawn around a caption change, whose history does not yet show the prompt "
                         "(default 0: ~4%% of plain clips hold one)")
    ts.add_argument("--prev-level", type=float, default=0.0,
                    help="a teacher trained with --prev-level: degrade the previous frame at this level in the "
                         "student's rollouts, targets and passes (its streams then use it too); 0 = clean")
    ts.add_argument("--objective", choices=("regression", "dmd", "adversarial"), default="regression",
                    help="own-rollout batches: regression onto the teacher's ODE endpoint, distribution matching, or "
                         "that regression plus a latent critic's push toward real transitions (adversarial)")
    ts.add_argument("--fake-lr", type=float, default=1e-4, help="dmd: the fake score's learning rate")
    ts.add_argument("--fake-updates", type=int, default=1, help="dmd: fake-score steps per student step")
    ts.add_argument("--adv-step", type=float, default=0.1,
                    help="adversarial: the critic's push on each own 1-step frame, RMS in latent units")
    ts.add_argument("--disc-lr", type=float, default=1e-4, help="adversarial: the critic's learning rate")
    ts.add_argument("--disc-gamma", type=float, default=1.0, help="adversarial: R1 + R2 gradient penalty weight")
    ts.add_argument("--disc-warmup", type=int, default=0, help="adversarial: steps in which only the critic learns")
    ts.add_argument("--adv-anchor", type=float, default=1.0,
                    help="adversarial: weight of the regression onto the teacher on own-rollout batches (0: the critic alone)")
    ts.add_argument("--moment-weight", type=float, default=0.0,
                    help="own-rollout batches: match the 1-step frame's per-channel mean and spread to the recorded "
                         "next frame's, at this weight (against colour drift and wash-out); 0 = off")
    ts.add_argument("--detail-weight", type=float, default=0.0,
                    help="own-rollout batches: match the 1-step frame's per-channel detail energy (neighbouring latent "
                         "pixels' mean absolute difference) to the recorded next frame's, at this weight (against blur); 0 = off")
    ts.add_argument("--own-at-one", action="store_true",
                    help="own-rollout batches at t = 1 only (the 1-step frame), teacher-forced batches at every level")
    ts.add_argument("--sink-every", type=int, default=0,
                    help="stream with the sinks refreshed every N chunks (the chunks that last left the window), and train "
                         "own-rollout batches on that view (needs --rollout-chunks >= sinks + window + N); 0 = sinks stay")
    ts.add_argument("--init-from", default="", help="start from this student checkpoint instead of the teacher (train further)")
    ts.add_argument("--lr", type=float, default=5e-5)
    ts.add_argument("--warmup", type=int, default=50, help="learning-rate warmup steps")
    ts.add_argument("--eval-every", type=int, default=100)
    ts.add_argument("--fp32", action="store_true")
    ts.add_argument("--seed", type=int, default=0)
    ts.add_argument("--threads", type=int, default=0)
    _device_arg(ts)
    ts.add_argument("--max-minutes", type=float, default=None)
    ts.add_argument("--budget-minutes", type=float, default=None,
                    help="end the run after this long with its learning rate decayed to the end by then (--steps stays "
                         "the most): one-shot runs on a rented GPU. --max-minutes instead pauses a run to resume later")
    ts.set_defaults(fn=cmd_train)

    gn = sub.add_parser("generate", help="prompt + action script -> MP4 with sound")
    gn.add_argument("--checkpoint", help="world model checkpoint folder or bundle (default: the shipped model)")
    gn.add_argument("--prompt", default="")
    gn.add_argument("--actions", default="idle", help="NAME:FRAMES,... e.g. walk_e:48,idle:24 (last one holds)")
    gn.add_argument("--seconds", type=_seconds, default=4.0)
    gn.add_argument("--events", help="timed events file: JSON Lines of {t, action|prompt|image|audio}")
    gn.add_argument("--size", type=_size, help="WIDTHxHEIGHT to generate at (default: the first training resolution)")
    gn.add_argument("--start", choices=("overworld", "empty"), default="empty",
                    help="begin in a real frame of the built-in world (at a place chosen by --seed) or from nothing")
    gn.add_argument("--out", default="generated.mp4")
    _rollout_args(gn)
    gn.add_argument("--seed", type=int, default=0)
    gn.add_argument("--threads", type=int, default=0)
    _device_arg(gn)
    gn.set_defaults(fn=cmd_generate)

    x = sub.add_parser("export", help="bundle a trained world model and its autoencoders into one folder "
                                      "(default: the package's default model)")
    x.add_argument("run", help="teacher or student run folder")
    x.add_argument("--out", help="bundle folder (default: worldstream/weights/default, the shipped model)")
    x.add_argument("--fp32", action="store_true", help="keep the world model's weights in fp32 (twice the size)")
    x.add_argument("--steps", type=int, help="a student's recommended sampler steps per chunk (default: as trained)")
    x.add_argument("--window", type=int, help="recent chunks the bundle streams with (default: as trained)")
    x.add_argument("--sinks", type=int, help="first chunks it keeps in view for good (default: as trained)")
    x.add_argument("--video-decoder", help="a video autoencoder run with the model's encoder and a fine-tuned decoder "
                                           "(train autoencoder --decoder-only) to bundle in its place")
    x.set_defaults(fn=cmd_export)

    e = sub.add_parser("encode", help="cache a dataset's latents (DATASET/latents/NAME/); resumable")
    e.add_argument("--data", required=True)
    e.add_argument("--video-ae", help="video autoencoder checkpoint folder")
    e.add_argument("--audio-ae", help="audio autoencoder checkpoint folder")
    e.add_argument("--name", default="default", help="name of this latent cache")
    e.add_argument("--threads", type=int, default=0)
    _device_arg(e)
    e.set_defaults(fn=cmd_encode)

    cp = sub.add_parser("captions", help="precompute the text encoder's embeddings of every caption in datasets, for "
                                         "training where the encoder is not installed (WORLDSTREAM_TEXT_TABLE=FILE)")
    cp.add_argument("--data", required=True, help="dataset folder(s), comma-separated")
    cp.add_argument("--out", required=True, help="the table to write (.safetensors)")
    cp.add_argument("--prompt", action="append", default=[], help="another prompt to include (repeatable)")
    cp.set_defaults(fn=cmd_captions)

    ev = sub.add_parser("eval", help="measure components on held-out data; writes JSON, PNG, WAV")
    ev.add_argument("what", choices=("suite", "tokenizers", "teacher", "stream"),
                    help="suite: every metric for several models side by side (table, JSON, plots); "
                         "stream: revisit consistency (memory on/off) and input/prompt latency")
    ev.add_argument("--model", action="append",
                    help="suite: NAME=PATH[,sampler=x0,steps=1,text=1,action=1,topk=4,p=0.9] (repeatable; "
                         "PATH default = the shipped model)")
    ev.add_argument("--drift-minutes", type=float, default=10.0, help="suite: length of the drift stream")
    ev.add_argument("--revisit-episodes", type=int, default=2, help="suite: held-out episodes followed for revisits")
    ev.add_argument("--speed-chunks", type=int, default=120,
                    help="suite: chunks timed per model (0: skip, e.g. when the CPU is shared; use bench engine alone)")
    ev.add_argument("--revisit-data", help="suite: dataset with long held-out episodes for revisits (default: --data)")
    ev.add_argument("--force", action="store_true", help="suite: re-measure models that already have results")
    ev.add_argument("--checkpoint", help="teacher, stream: the world model (default: the shipped model)")
    _rollout_args(ev)
    ev.add_argument("--clips", type=int, default=12)
    ev.add_argument("--walk-frames", type=int, default=48, help="teacher: frames generated per walking direction")
    ev.add_argument("--walk-starts", type=int, default=4,
                    help="starts per walking direction (8 directions), each scored against the game replayed from it")
    ev.add_argument("--prompt-starts", type=int, default=3, help="held-out starts per prompt")
    ev.add_argument("--prompt-frames", type=int, default=72, help="teacher: frames generated per prompt")
    ev.add_argument("--revisit-seconds", type=float, default=100.0, help="stream: seconds of each episode to follow")
    ev.add_argument("--latency-trials", type=int, default=20, help="stream: action latency trials")
    ev.add_argument("--only", choices=("revisit", "latency"), help="stream: run one of the two measurements")
    ev.add_argument("--data", required=True, help="dataset with a heldout split")
    ev.add_argument("--video-ae", action="append", help="video AE checkpoint (repeatable)")
    ev.add_argument("--audio-ae")
    ev.add_argument("--out", help="folder for the results (default: docs/results/eval for suite, else docs/results/WHAT)")
    ev.add_argument("--threads", type=int, default=2)
    _device_arg(ev)  # suite, teacher, stream: where the models run (tokenizers: the CPU)
    ev.set_defaults(fn=cmd_eval)

    for name, text in (("play", "the live world in your browser: starts the server and opens the page"),
                       ("serve", "the streaming server (HTTP + WebSocket) without opening a page")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--checkpoint", help="world model checkpoint folder or bundle (default: the shipped model)")
        sp.add_argument("--host", default="127.0.0.1", help="address to bind (anything but loopback needs --token)")
        sp.add_argument("--port", type=_port, default=8765)
        sp.add_argument("--token", help="access token (or WORLDSTREAM_TOKEN); required off loopback")
        sp.add_argument("--max-sessions", type=int, default=4)
        sp.add_argument("--image", help="start every session from this PNG/JPEG")
        sp.add_argument("--prompt", default="", help="with --image: the starting prompt")
        sp.add_argument("--start", choices=("overworld", "empty"), default="overworld" if name == "play" else "empty",
                        help="without --image: begin in a frame of the built-in world (play's default) or from nothing")
        sp.add_argument("--threads", type=int, default=0)
        _device_arg(sp)
        _rollout_args(sp)
        _compile_arg(sp)
        sp.set_defaults(fn=cmd_serve)

    b = sub.add_parser("bench", help="benchmarks that print tables")
    b.add_argument("what", choices=("world", "engine", "stream"),
                   help="world: render and recording speed of the built-in world; engine: the whole streaming path "
                        "(first frame, ms per chunk, fps, latency, memory); stream: a long stream's cost and drift")
    b.add_argument("--preset", help="engine: measure this Omni preset with random weights (labelled so) instead of a checkpoint")
    b.add_argument("--size", type=_size, default=(128, 128), help="engine: WIDTHxHEIGHT for a preset")
    b.add_argument("--device", default="cpu")
    b.add_argument("--chunks", type=int, default=200)
    b.add_argument("--window", type=int, default=12, help="engine: attention window for a preset")
    b.add_argument("--memory-topk", type=int, default=4, help="engine: memory chunks retrieved, for a preset")
    b.add_argument("--frames", type=int, default=600)
    b.add_argument("--checkpoint", help="engine, stream: world model checkpoint (default: the shipped model)")
    b.add_argument("--data", help="stream: dataset whose held-out frames are the real reference")
    b.add_argument("--minutes", type=float, default=30.0, help="stream: length of the stream")
    b.add_argument("--prompt", default="")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="stream: folder for JSON and PNG")
    b.add_argument("--threads", type=int, default=2)
    _rollout_args(b)
    _compile_arg(b)
    b.add_argument("--json", help="also write the results here")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .data.format import DatasetError
    from .data.video import MediaError

    try:
        return args.fn(args)
    except (DatasetError, MediaError, CheckpointError, ValueError) as e:
        print(f"worldstream {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (a missing folder, no permission, a full disk): say which file
        where = f"{e.filename}: " if e.filename else ""
        print(f"worldstream {args.command}: error: {where}{e.strerror or e}; check the path and that you can write there",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"worldstream {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
