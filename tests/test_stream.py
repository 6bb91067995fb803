"""The streaming engine: events and their timing, replay, batching, bounded memory, bad input."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from worldstream.data.png import encode_png
from worldstream.engine import stream as stream_mod
from worldstream.engine.events import Event, EventError
from worldstream.engine.rollout import RolloutConfig
from worldstream.engine.stream import Stream, StreamConfig, World

FAST = StreamConfig(rollout=RolloutConfig(sampler="euler", steps=2, text_scale=2.0, action_scale=1.5))


@pytest.fixture(scope="module")
def world(tiny_teacher):
    torch.set_num_threads(1)
    return World.load(tiny_teacher)


def test_a_stream_makes_frames_and_sound(world):
    s = world.stream("a sunny meadow", seed=3, config=FAST)
    c = s.step("walk_e")
    assert c.frames.shape == (1, world.frames_per_chunk, world.height, world.width, 3) and c.frames.dtype == np.uint8
    assert c.audio.shape == (1, world.frames_per_chunk * world.samples_per_frame) and c.audio.dtype == np.float32
    assert c.rgb.shape == (world.height, world.width, 3) and s.frame_index == world.frames_per_chunk


def test_an_event_during_a_chunk_applies_to_the_next_one(world, monkeypatch):
    s = world.stream("a sunny meadow", config=FAST)
    real = stream_mod.generate_chunk
    seen = []

    def generate_and_meanwhile_press(model, branches, rcfg, cond, chunk, *a, **kw):
        seen.append(int(cond.actions[0, 0]))
        if chunk == 1:
            s.act("walk_n")  # arrives while chunk 1 is being made
        return real(model, branches, rcfg, cond, chunk, *a, **kw)

    monkeypatch.setattr(stream_mod, "generate_chunk", generate_and_meanwhile_press)
    for _ in range(3):
        s.step()
    idle, north = world.vocab.index("idle"), world.vocab.index("walk_n")
    assert seen == [idle, idle, north]
    assert [(c, e.kind, e.value) for c, e in s.log] == [(2, "action", north)]


def test_same_seed_and_event_log_replay_the_same_frames(world):
    s = world.stream("a sunny meadow", seed=5, config=FAST)
    frames = []
    for i in range(6):
        if i == 2:
            s.prompt("it begins to snow")
        if i == 3:
            s.act("run_w")
        frames.append(s.step().frames)
    again = Stream.replay(world, ["a sunny meadow"], [5], s.log, 6, FAST)
    for a, b in zip(frames, again):
        assert np.array_equal(a, b.frames)


def test_batched_streams_equal_separate_streams(world):
    prompts, seeds = ["a sunny meadow", "night in the forest"], [1, 2]
    both = world.stream(prompts, seed=seeds, batch=2, config=FAST)
    alone = [world.stream(p, seed=sd, config=FAST) for p, sd in zip(prompts, seeds)]
    for i in range(5):
        acts = ["walk_e", "idle"] if i < 2 else ["run_s", "walk_w"]
        if i == 3:  # a prompt change in one row only (re-encodes that row's window)
            both.prompt("it begins to snow", row=1)
            alone[1].prompt("it begins to snow")
        b = both.step(acts)
        for r in range(2):
            a = alone[r].step(acts[r])
            assert np.abs(b.frames[r].astype(int) - a.frames[0].astype(int)).max() <= 1, (i, r)
            np.testing.assert_allclose(b.audio[r], a.audio[0], atol=1e-4)


def test_memory_and_cache_stay_bounded(world):
    s = world.stream("a sunny meadow", config=StreamConfig(rollout=RolloutConfig(sampler="x0", steps=1, text_scale=1.0,
                                                                                  action_scale=1.0), memory_chunks=4))
    sizes = []
    for _ in range(20):
        s.step("walk_e")
        cache = s.branches[0].cache
        sizes.append((cache.n_tokens, cache.nbytes(), len(s.recent)))
    assert len(set(sizes[8:])) == 1, sizes
    assert len(cache.mem_chunk_of) == 4 * world.model.cfg.memory_tokens


def test_bad_events_are_rejected_and_the_stream_goes_on(world):
    s = world.stream("a sunny meadow", config=FAST)
    s.step()
    s.act("walk_e")  # a good event queued before the bad ones survives them
    bad = [Event("action", "fly"), Event("action", 99), Event("prompt", 42), Event("prompt", "x" * 5000),
           Event("image", b"not an image at all"), Event("image", np.zeros((9000, 10, 3), np.uint8)),
           Event("image", np.zeros((32, 32), np.float32)), Event("image", b"\x89PNG" + b"0" * (17 * 2**20)),
           Event("audio", np.array([np.nan, 0.0])), Event("teleport", 1), Event("action", "idle", row=3),
           Event("image", np.zeros((32, 32, 3), np.uint8), mode="sideways")]
    for ev in bad:
        with pytest.raises(EventError) as e:
            s.push(ev)
        assert len(str(e.value)) > 20  # says what is wrong
    with pytest.raises(EventError, match="2 actions for a stream of 1 row"):
        s.step(["walk_n", "walk_s"])
    s.step()
    assert [(e.kind, e.value) for _, e in s.log] == [("action", world.vocab.index("walk_e"))]
    for bad in ({"seed": "a"}, {"seed": 1.5}, {"seed": [0, None], "batch": 2}):
        with pytest.raises(TypeError, match="seed must be a whole number"):
            world.stream("x", config=FAST, **bad)
    with pytest.raises(ValueError, match="batch must be"):
        world.stream("x", batch=0, config=FAST)
    assert world.stream("x", seed=np.int64(3), config=FAST).seeds == [3]  # a seed drawn with numpy is fine


def test_load_refuses_a_bad_view_or_size(tiny_teacher):
    for kwargs, msg in (({"window": 0}, "window must be"), ({"sinks": -1}, "sinks must be"),
                        ({"size": (0, 0)}, "size must be"), ({"size": (64,)}, "size must be"),
                        ({"size": (50, 40)}, "multiples of")):
        with pytest.raises(ValueError, match=msg):
            World.load(tiny_teacher, **kwargs)


def test_restart_from_an_image_and_blend_one_in(world):
    s = world.stream("a sunny meadow", config=FAST)
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :, 2] = 200  # blue, another size and aspect: resized and cropped to the stream
    s.step()
    s.image(encode_png(img))
    c = s.step()
    expect = world.vae.decode(world.image_latent(img), {}).clamp(0, 1)
    got = torch.from_numpy(c.frames[0]).permute(0, 3, 1, 2).float() / 255
    assert (got - expect).abs().max() < 2 / 255  # the restart frame is the image through the autoencoder
    assert s.chunk == 1  # a new context
    t = world.stream("a sunny meadow", config=FAST)
    u = world.stream("a sunny meadow", config=FAST)
    t.step(), u.step()
    u.image(img, mode="blend")
    assert not np.array_equal(t.step().frames, u.step().frames)


def test_given_sound_is_kept(world):
    s = world.stream("rain", config=dataclasses.replace(FAST, bf16=False))  # compared exactly with a float decode
    n = world.frames_per_chunk * world.samples_per_frame
    pcm = (0.3 * np.sin(np.arange(3 * n) / 7.0)).astype(np.float32)
    s.audio(pcm)
    c = s.step()
    with torch.no_grad():
        expect = world.aae.decode(world.aae.encode(torch.from_numpy(pcm[:n])[None], {}), {}).clamp(-1, 1)[0].numpy()
    np.testing.assert_allclose(c.audio[0], expect, atol=1e-5)  # the picture follows the sound; the sound is kept


def test_the_world_model_as_a_gym_env(tiny_teacher):
    import gymnasium as gym

    from worldstream.engine.gym_env import register

    register()
    env = gym.make("worldstream/WorldModel-v0", checkpoint=str(tiny_teacher), config=FAST, max_frames=3)
    obs, info = env.reset(seed=0, options={"prompt": "night falls"})
    assert env.observation_space.contains(obs) and info["audio"].ndim == 1
    done = False
    n = 0
    while not done:
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        done = term or trunc
        n += 1
    assert n == 2 and env.observation_space.contains(obs)  # reset made frame 1
    obs2, _ = env.reset(seed=0, options={"prompt": "night falls"})
    assert np.array_equal(obs2, env.reset(seed=0, options={"prompt": "night falls"})[0])  # seeded


def test_generate_follows_a_timed_events_file(tiny_teacher, tmp_path):
    import json

    import av

    from worldstream.cli import main
    from worldstream.data.video import write_wav

    img = np.zeros((40, 40, 3), np.uint8)
    img[10:30] = 255
    (tmp_path / "start.png").write_bytes(encode_png(img))
    write_wav(tmp_path / "rain.wav", (0.1 * np.random.default_rng(0).standard_normal(12000)).astype(np.float32), 24000)
    events = [{"t": 0, "image": "start.png"}, {"t": 0.1, "action": "walk_e"}, {"t": 0.2, "prompt": "night falls"},
              {"t": 0.3, "audio": "rain.wav"}, {"t": 0.4, "image": "start.png", "mode": "blend"}]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    out = tmp_path / "gen.mp4"
    assert main(["generate", "--checkpoint", str(tiny_teacher), "--events", str(tmp_path / "events.jsonl"),
                 "--seconds", "0.5", "--sampler", "euler", "--steps", "1", "--out", str(out)]) == 0
    with av.open(str(out)) as c:
        assert c.streams.video and c.streams.audio
        assert sum(1 for _ in c.decode(video=0)) == 12
    (tmp_path / "bad.jsonl").write_text('{"t": 0, "action": "fly"}')
    assert main(["generate", "--checkpoint", str(tiny_teacher), "--events", str(tmp_path / "bad.jsonl"),
                 "--out", str(out)]) == 2
    assert main(["generate", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    # begin in a real frame of the built-in world (as `play` does), the repository's example tour
    assert main(["generate", "--checkpoint", str(tiny_teacher), "--start", "overworld", "--events",
                 str(Path(__file__).parents[1] / "examples" / "tour.jsonl"),
                 "--seconds", "0.25", "--sampler", "x0", "--steps", "1", "--out", str(out)]) == 0


def test_generate_refuses_bad_settings_and_outputs_before_streaming(tiny_teacher, tmp_path, capsys):
    """Each of these would have streamed for the whole length and then failed (or written an empty or
    endless file, or frames of pure noise); each is a clear error before the model is loaded."""
    from worldstream.cli import main

    ck = ["generate", "--checkpoint", str(tiny_teacher), "--sampler", "x0"]
    bad = {"--out": (str(tmp_path / "out.txt"), "name it .mp4"), "--seconds": ("0", "positive, finite"),
           "--steps": ("0", "1 or more"), "--shift": ("0", "positive time-grid shift"),
           "--size": ("abc", "look like 128x128")}
    for flag, (value, says) in bad.items():
        args = ck + [flag, value] + (["--out", str(tmp_path / "a.mp4")] if flag != "--out" else [])
        if flag in ("--seconds", "--size"):  # argparse's own errors exit
            with pytest.raises(SystemExit):
                main(args)
        else:
            assert main(args) == 2
        assert says in capsys.readouterr().err, flag
    assert not list(tmp_path.iterdir())
    # an output in a folder that does not exist yet: the folder is made
    assert main(ck + ["--steps", "1", "--seconds", "0.1", "--out", str(tmp_path / "new" / "a.mp4")]) == 0
    assert (tmp_path / "new" / "a.mp4").stat().st_size > 0


def test_long_stream_and_latency_measurements_run(world, latent_dataset, tmp_path):
    from worldstream.eval.stream import latency, long_stream, plot_long_stream

    r = RolloutConfig(sampler="euler", steps=1, text_scale=1.0, action_scale=1.0)
    res = long_stream(world, latent_dataset, minutes=0.1, rollout=r, sample_every_s=0.5, progress=False, judge_renders=20,
                      memory_chunks=8)
    assert res["chunks"] == 144 and len(res["per_minute"]) == 1 and res["samples"]
    assert abs(res["slope_cache_mb_per_minute"]) < 1e-6  # the bounded cache has filled and stays put
    # a snapshot that is a view keeps its minute's whole frame stack alive: the benchmark's own ~6 MB a
    # minute that read as the stream's RSS creep (log.md, sixth session)
    assert all(f.base is None for f in res["snapshots"][1:])
    plot_long_stream(res, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    lat = latency(world, latent_dataset, r, trials=3, prompt_trials=1, max_chunks=3, judge_renders=20)
    assert 0 < lat["action_ms"]["p50"] < 10_000


def test_streams_started_at_different_times_step_together_as_they_would_alone(world):
    from worldstream.engine.batch import signature, step_together

    exact = dataclasses.replace(FAST, bf16=False, memory_chunks=8)
    a, b, c = (world.stream(p, seed=sd, config=exact) for p, sd in (("a meadow", 1), ("night falls", 2), ("snow", 3)))
    a2, b2, c2 = (world.stream(p, seed=sd, config=exact) for p, sd in (("a meadow", 1), ("night falls", 2), ("snow", 3)))
    for s, n in ((a, 30), (b, 21), (c, 17)):  # different ages, all past the window and a full memory bank
        for twin in (s, {a: a2, b: b2, c: c2}[s]):
            for i in range(n):
                twin.step(["walk_e", "idle", "run_n"][i % 3])
    assert signature(a) is not None and signature(a) == signature(b) == signature(c)
    b.prompt("it begins to snow")  # each stream's own events still apply
    b2.prompt("it begins to snow")
    for i in range(4):
        for s in (a, b, c):
            s.act(["walk_w", "run_s", "idle"][i % 3])
        together = step_together([a, b, c])
        alone = [s.step(["walk_w", "run_s", "idle"][i % 3]) for s in (a2, b2, c2)]
        for t, u in zip(together, alone):
            assert np.abs(t.frames.astype(int) - u.frames.astype(int)).max() <= 1
            np.testing.assert_allclose(t.audio, u.audio, atol=1e-4)
            assert t.index == u.index
    young = world.stream("x", config=exact)
    young.step()
    assert signature(young) is None  # not full yet: steps alone


def test_a_held_action_is_logged_once_and_still_replays(world):
    s = world.stream("a sunny meadow", seed=2, config=FAST)
    frames = [s.step("walk_e" if i < 5 else "walk_n").frames for i in range(8)]  # a front end sends the key every chunk
    e, n = world.vocab.index("walk_e"), world.vocab.index("walk_n")
    assert [(c, ev.value) for c, ev in s.log] == [(0, e), (5, n)]  # the log grows with changes, not with chunks
    again = Stream.replay(world, ["a sunny meadow"], [2], s.log, 8, FAST)
    for a, b in zip(frames, again):
        np.testing.assert_array_equal(a, b.frames)


def test_a_compiled_stream_makes_the_frames_of_an_eager_one(world):
    """``StreamConfig(compile=True)`` (play, serve, bench) runs the same model with its dense parts
    compiled: the same frames up to bf16 rounding, past the window and into the memory bank, and a
    new prompt needs no recompiling."""
    x0 = StreamConfig(rollout=RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0))
    eager = world.stream("a sunny meadow", seed=5, config=x0)
    compiled = world.stream("a sunny meadow", seed=5, config=dataclasses.replace(x0, compile=True))
    for i in range(8):  # window 2 + 1 sink: chunks leave into the memory bank from chunk 3 on
        a, b = eager.step("walk_e" if i < 4 else "walk_n"), compiled.step("walk_e" if i < 4 else "walk_n")
        diff = np.abs(a.frames.astype(int) - b.frames.astype(int))
        assert diff.mean() < 1.0 and diff.max() <= 24, (i, diff.mean(), diff.max())
    assert world.runtime_model(True, True) is not world.runtime_model(True, False)
    other = world.stream("a much longer prompt about snow falling on a quiet village at night", seed=5,
                         config=dataclasses.replace(x0, compile=True))
    assert other.step("idle").frames.shape == a.frames.shape


def test_a_device_that_is_not_there_is_a_clear_error_and_the_world_stays_usable(world):
    with pytest.raises(ValueError, match="not a device name"):
        world.to("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            world.to("cuda")
    assert world.to("cpu").device.type == "cpu"
    assert world.stream("", seed=0, config=FAST).step("walk_e").frames.shape[1] == world.frames_per_chunk
