"""The streaming server: protocol, limits, refusal, fuzzing, a short load test, the page in Chromium."""
import json
import random
import socket
import time
import urllib.request

import numpy as np
import pytest
import torch

from worldstream.client import Client, ClientError
from worldstream.data.png import encode_png
from worldstream.engine.rollout import RolloutConfig
from worldstream.engine.stream import StreamConfig, World
from worldstream.serve.server import Background, Server, ServerConfig, overworld_start

FAST = StreamConfig(rollout=RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0), memory_chunks=4)


@pytest.fixture(scope="module")
def world(tiny_teacher):
    torch.set_num_threads(1)
    return World.load(tiny_teacher)


@pytest.fixture()
def server(world):
    bg = Background(Server(world, ServerConfig(port=0, max_sessions=3, stream=FAST, events_per_second=1000),
                           start=overworld_start(world.width, world.height)))  # sessions begin in a real frame
    yield bg
    bg.close()


def _ws(bg):
    return bg.url.replace("http", "ws") + "/ws"


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_connect_receive_frames_and_sound_send_inputs(server, world):
    with Client(_ws(server), prompt="a sunny meadow") as c:
        assert c.hello["width"] == world.width and c.hello["actions"] == list(world.vocab.names)
        first = list(c.frames(limit=3))
        assert first[0].rgb.shape == (world.height, world.width, 3)
        seq = c.act("walk_e")
        c.prompt("it begins to snow")
        c.keys(["w", "Shift"])
        later = [f for f in c.frames(limit=24) if f.seq >= seq]
        assert later, "frames report the inputs they applied"
        assert c.audio.qsize() > 0
        assert _get(server.url + "/health")["sessions"] == 1
    m = _get(server.url + "/metrics")
    assert m["input_to_frame_ms"]["p50"] is not None


def test_bad_messages_get_errors_and_the_session_goes_on(server):
    with Client(_ws(server)) as c:
        list(c.frames(limit=2))
        bad = ["{not json", "[1, 2]", '{"type": "teleport"}', '{"type": "keys", "keys": "w"}',
               '{"type": "action", "action": "fly"}', '{"type": "prompt", "text": 5}',
               json.dumps({"type": "prompt", "text": "x" * 3000}), '{"type": "keys", "keys": ["w"], "seq": -1}',
               "x" * 5000]
        for msg in bad:
            c.send_raw(msg)
            assert len(c.next_error()) > 10
        for data in (b"\x05hello", b"", b"\x10not an image", b"\x10" + b"\x00" * (9 * 2**20)):
            c.send_raw(data)
            assert len(c.next_error()) > 10
        img = np.zeros((40, 60, 3), np.uint8)
        img[:, :30] = 255
        c.image(encode_png(img))  # a good image still works after all that
        assert len(list(c.frames(limit=5))) == 5


def test_refusal_beyond_the_session_limit(server):
    clients = [Client(_ws(server)) for _ in range(3)]
    try:
        with pytest.raises(ClientError, match="full"):
            Client(_ws(server))
        assert _get(server.url + "/metrics")["refused"] == 1
    finally:
        for c in clients:
            c.close()
    time.sleep(0.5)
    assert _get(server.url + "/health")["sessions"] == 0


def test_fuzz_no_crash_no_leak_others_unaffected(server):
    rng = random.Random(0)
    kinds = ["keys", "action", "prompt", "pause", "resume", "reset", "record", "ping", "nope", 7, None]
    with Client(_ws(server)) as calm:
        list(calm.frames(limit=2))
        for round_ in range(3):
            with Client(_ws(server)) as noisy:
                for _ in range(700):
                    r = rng.random()
                    if r < 0.3:
                        msg = json.dumps({"type": rng.choice(kinds), rng.choice(["keys", "text", "action", "seed", "on"]):
                                          rng.choice([["w"], "walk_e", 3, None, True, "x" * rng.randint(0, 50), {"a": 1}]),
                                          "seq": rng.choice([1, -4, "a", 2**40, None])})
                    elif r < 0.6:
                        msg = "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 80)))
                    else:
                        msg = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
                    noisy.send_raw(msg)
                noisy.send_raw('{"type": "resume"}')
                list(noisy.frames(limit=2))  # still served after the storm
            got = list(calm.frames(limit=4))
            assert len(got) == 4
    time.sleep(0.5)
    assert _get(server.url + "/health") == {"ok": True, "sessions": 0, "model": server.server.world.name}


def test_off_loopback_needs_a_token(world):
    with pytest.raises(ValueError, match="token"):
        Server(world, ServerConfig(host="0.0.0.0"))
    bg = Background(Server(world, ServerConfig(port=0, token="s3cret", stream=FAST)))
    try:
        with pytest.raises(ClientError, match="token"):
            Client(_ws(bg))
        with Client(_ws(bg), token="s3cret") as c:
            assert len(list(c.frames(limit=2))) == 2
    finally:
        bg.close()


def test_a_short_load_test(server):
    """3 clients for 5 s: everyone gets frames; queues stay bounded; nothing leaks."""
    clients = [Client(_ws(server), seed=i) for i in range(3)]
    try:
        t0 = time.monotonic()
        counts = [0, 0, 0]
        while time.monotonic() - t0 < 5:
            for i, c in enumerate(clients):
                counts[i] += c._frames.qsize()
                while not c._frames.empty():
                    c._frames.get_nowait()
            time.sleep(0.2)
        m = _get(server.url + "/metrics")
        assert all(n > 5 for n in counts), counts
        assert all(s["queue"] <= 4 for s in m["per_session"])
        assert m["batched_steps"] > 0 and m["largest_batch"] >= 2, m  # full sessions share forwards
    finally:
        for c in clients:
            c.close()


def test_serve_refuses_a_taken_port_and_a_bad_image_before_loading_the_model(tmp_path, capsys):
    """Loading and compiling takes half a minute; these are errors at once, before it (the checkpoint
    named does not exist, so an error about it would mean the model was loaded first)."""

    from worldstream.cli import main

    missing = ["--checkpoint", str(tmp_path / "no_model"), "--no-compile"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)] + missing) == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
    (tmp_path / "start.png").write_bytes(b"not a png")
    assert main(["serve", "--port", "0", "--image", str(tmp_path / "start.png")] + missing) == 2
    assert "could not decode the image" in capsys.readouterr().err
    assert main(["serve", "--port", "0", "--image", str(tmp_path / "none.png")] + missing) == 2
    assert "cannot read it" in capsys.readouterr().err
    assert main(["serve", "--port", "0"] + missing) == 2  # past the checks: now the checkpoint
    assert "no_model" in capsys.readouterr().err


def test_a_client_without_a_server_is_told_what_to_check():
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ClientError, match=f"cannot connect to ws://127.0.0.1:{port}/ws.*is a server running"):
        Client(f"ws://127.0.0.1:{port}/ws", timeout=10)
