"""The streaming server: HTTP + WebSocket (aiohttp) in front of the streaming engine.

Threads and queues:

    event loop (aiohttp)            one Connection per client: reads messages, validates them,
                                    pushes events into its Stream, sends frames from its queue
    worker thread (Worker)          all model work: creates streams, steps every due session at
                                    the model's frame rate, JPEG-encodes, hands frames back to the
                                    loop with call_soon_threadsafe

Model work never runs on the event loop. Sessions whose caches are full step together in one
forward (``engine.batch``); new ones step alone until theirs fill. Each client's outgoing queue is bounded: when a client
reads slower than frames are made, its oldest frames are dropped (counted in /metrics), never
buffered without limit. Sessions are capped (extra clients get a polite ``refused``), messages,
images, prompts and event rates are limited, and every bad message gets an ``error`` back while
the session goes on. Binds to loopback by default; any other address needs an access token.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import ipaddress
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from ..engine.events import Event, EventError, Limits
from ..engine.stream import Stream, StreamConfig, World
from . import protocol as P

STATIC = Path(__file__).parent / "static"


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None  # required when binding anywhere but loopback
    max_sessions: int = 4
    max_message_bytes: int = 8 * 1024 * 1024  # images included
    max_text_chars: int = 4096
    events_per_second: float = 60.0  # per client, burst of twice that
    queue_chunks: int = 4  # per-client outgoing frames before the oldest are dropped
    jpeg_quality: int = 90
    record_seconds: float = 300.0  # how much of a session `record` keeps
    stream: StreamConfig = StreamConfig()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Session:
    """One client's stream and the state the worker and its connection share."""

    ids = itertools.count(1)

    def __init__(self, prompt: str, seed: int, loop: asyncio.AbstractEventLoop, cfg: ServerConfig):
        self.id = next(Session.ids)
        self.prompt, self.seed, self.loop, self.cfg = prompt, seed, loop, cfg
        self.stream: Stream | None = None
        self.out: asyncio.Queue = asyncio.Queue()
        self.paused = False
        self.closed = False
        self.want_reset: int | None = None
        self.next_due = 0.0
        self.dropped = 0
        self.sent_times: collections.deque = collections.deque(maxlen=48)
        self.chunk_ms: collections.deque = collections.deque(maxlen=200)
        self.latency_ms: collections.deque = collections.deque(maxlen=200)
        self.arrivals: collections.deque = collections.deque(maxlen=256)  # (seq, arrival time) awaiting a frame
        self.last_seq = 0
        self.recording = False
        self.rec: collections.deque = collections.deque()
        self.tokens = 2 * cfg.events_per_second
        self.token_time = time.monotonic()
        self.ready = asyncio.Event()
        self.error: str | None = None
        self.all_latency_ms: collections.deque = collections.deque(maxlen=1)  # the server's, once connected

    def allow_event(self) -> bool:
        """Token bucket: events_per_second sustained, twice that in a burst."""
        now = time.monotonic()
        rate = self.cfg.events_per_second
        self.tokens = min(2 * rate, self.tokens + (now - self.token_time) * rate)
        self.token_time = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def offer(self, messages: list[bytes], applied_seq: int) -> None:
        """On the loop: queue a chunk's messages, dropping the oldest chunk when the client lags."""
        if self.closed:
            return
        while self.out.qsize() >= self.cfg.queue_chunks:
            self.out.get_nowait()
            self.dropped += 1
        self.out.put_nowait(messages)
        now = time.monotonic()
        self.sent_times.append(now)
        while self.arrivals and self.arrivals[0][0] <= applied_seq:
            ms = (now - self.arrivals.popleft()[1]) * 1000
            self.latency_ms.append(ms)
            self.all_latency_ms.append(ms)

    def fps(self) -> float:
        t = self.sent_times
        return (len(t) - 1) / (t[-1] - t[0]) * self._frames_per_chunk if len(t) > 1 and t[-1] > t[0] else 0.0

    _frames_per_chunk = 1


class Worker(threading.Thread):
    """Advances every due session, one chunk at a time, paced to the model's frame rate."""

    def __init__(self, world: World, cfg: ServerConfig, start=None):
        super().__init__(daemon=True, name="worldstream-worker")
        self.world, self.cfg, self.begin = world, cfg, start  # (not self.start: that is Thread.start)
        self.sessions: dict[int, Session] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.period = world.frames_per_chunk / world.fps
        self.chunk_ms: collections.deque = collections.deque(maxlen=500)
        self.batched = 0  # forwards that advanced several sessions at once
        self.largest_batch = 1

    def add(self, s: Session) -> None:
        s._frames_per_chunk = self.world.frames_per_chunk
        with self.lock:
            self.sessions[s.id] = s
        self.wake.set()

    def remove(self, s: Session) -> None:
        s.closed = True
        with self.lock:
            self.sessions.pop(s.id, None)

    def run(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        while not self.stop.is_set():
            with self.lock:
                sessions = list(self.sessions.values())
            now = time.monotonic()
            due = [s for s in sessions if not s.closed and (s.stream is None or s.want_reset is not None
                                                             or (not s.paused and s.next_due <= now))]
            if not due:
                waits = [s.next_due - now for s in sessions if not s.paused and s.stream is not None]
                self.wake.wait(timeout=min(waits + [0.05]))
                self.wake.clear()
                continue
            for group in self._groups(due, sessions, now):
                try:
                    self._advance(group[0]) if len(group) == 1 else self._advance_together(group)
                except Exception as e:  # a failing session must not take the others down
                    for s in group:
                        s.error = f"{type(e).__name__}: {e}"
                        s.loop.call_soon_threadsafe(s.offer, [json.dumps({"type": "error", "message": s.error}).encode()], 0)
                        s.paused = True

    def _groups(self, due: list[Session], sessions: list[Session], now: float) -> list[list[Session]]:
        """Due sessions whose streams can share one forward (engine.batch.signature), in groups;
        new, resetting or not-yet-full ones alone. Sessions due within the next period join a
        group of due ones early: paced sessions start out of phase and would otherwise rarely
        be due at the same moment."""
        from ..engine.batch import signature

        def sig(s: Session):
            return None if s.stream is None or s.want_reset is not None else signature(s.stream)

        groups: dict = {}
        for s in sorted(due, key=lambda s: s.next_due):
            k = sig(s)
            groups.setdefault(k if k is not None else ("alone", s.id), []).append(s)
        soon = [s for s in sessions if s not in due and not s.closed and not s.paused and s.stream is not None
                and s.next_due <= now + self.period]
        for s in soon:
            k = sig(s)
            if k is not None and k in groups:
                groups[k].append(s)
        return list(groups.values())

    def _advance_together(self, group: list[Session]) -> None:
        from ..engine.batch import step_together

        applied = [s.last_seq for s in group]
        chunks = step_together([s.stream for s in group])
        self.batched += 1
        self.largest_batch = max(self.largest_batch, len(group))
        for s, chunk, seq in zip(group, chunks, applied):
            self.chunk_ms.append(chunk.seconds * 1000 / len(group))
            s.chunk_ms.append(chunk.seconds * 1000)
            msgs = self._encode(s, chunk, seq)
            s.next_due = max(s.next_due + self.period, time.monotonic() - self.period)
            s.loop.call_soon_threadsafe(s.offer, msgs, seq)

    def _advance(self, s: Session) -> None:
        if s.stream is None or s.want_reset is not None:
            if s.want_reset is not None:
                s.seed, s.want_reset = s.want_reset, None
            image, prompt = self.begin(s.seed) if self.begin is not None else (None, "")
            s.prompt = s.prompt or prompt
            s.stream = self.world.stream(s.prompt, image=image, seed=s.seed, config=self.cfg.stream)
            s.next_due = time.monotonic()
            s.loop.call_soon_threadsafe(s.ready.set)
            return
        applied = s.last_seq
        chunk = s.stream.step()
        self.chunk_ms.append(chunk.seconds * 1000)
        s.chunk_ms.append(chunk.seconds * 1000)
        msgs = self._encode(s, chunk, applied)
        s.next_due = max(s.next_due + self.period, time.monotonic() - self.period)  # no burst to catch up
        s.loop.call_soon_threadsafe(s.offer, msgs, applied)

    def _encode(self, s: Session, chunk, applied: int) -> list[bytes]:
        import simplejpeg

        now = time.time()
        msgs = []
        for i, f in enumerate(chunk.frames[0]):
            jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(f), quality=self.cfg.jpeg_quality, colorspace="RGB")
            msgs.append(P.pack_frame(chunk.index + i, now, applied, jpeg))
        pcm = None
        if chunk.audio is not None:
            pcm = (np.clip(chunk.audio[0], -1, 1) * 32767).astype("<i2").tobytes()
            msgs.append(P.pack_audio(chunk.index, self.world.sample_rate, pcm))
        if s.recording:
            s.rec.append((msgs[: len(chunk.frames[0])], pcm))
            while len(s.rec) * self.period > self.cfg.record_seconds:
                s.rec.popleft()
        return msgs


class Server:
    def __init__(self, world: World, cfg: ServerConfig = ServerConfig(), device: str = "cpu", start=None):
        """``start(seed) -> (image or None, prompt)`` picks where a new session's world begins."""
        if not is_loopback(cfg.host) and not cfg.token:
            raise ValueError(f"binding to {cfg.host} exposes the server beyond this machine: pass an access token "
                             "(--token, or WORLDSTREAM_TOKEN) or bind to 127.0.0.1")
        self.world, self.cfg, self.device = world, cfg, device
        self.worker = Worker(world, cfg, start)
        self.connections: dict[int, Session] = {}
        self.refused = 0
        self.errors = 0
        self.started = time.time()
        self.latency_ms: collections.deque = collections.deque(maxlen=2000)  # input-to-frame, all sessions

    # -- app -----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_message_bytes)
        app.router.add_get("/", self.page)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/record/{sid}.mp4", self.record)
        app.router.add_static("/static/", STATIC)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        if not self.worker.is_alive():
            self.worker.start()

    async def _stop(self, app: web.Application) -> None:
        self.worker.stop.set()
        self.worker.wake.set()
        await asyncio.get_running_loop().run_in_executor(None, self.worker.join, 30)  # finish the chunk in flight

    def _authorised(self, request: web.Request) -> bool:
        if not self.cfg.token:
            return True
        given = request.query.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), self.cfg.token.encode())

    # -- HTTP ----------------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.Response:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": self.worker.is_alive(), "sessions": len(self.connections),
                                  "model": self.world.name})

    async def metrics(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "missing or wrong token"}, status=401)
        return web.json_response(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        def pct(xs, q):
            return float(np.percentile(list(xs), q)) if xs else None

        lat = list(self.latency_ms)
        return {"sessions": len(self.connections), "max_sessions": self.cfg.max_sessions, "refused": self.refused,
                "errors": self.errors, "uptime_s": time.time() - self.started,
                "worker_ms_per_chunk": {"p50": pct(self.worker.chunk_ms, 50), "p95": pct(self.worker.chunk_ms, 95)},
                "batched_steps": self.worker.batched, "largest_batch": self.worker.largest_batch,
                "input_to_frame_ms": {"p50": pct(lat, 50), "p95": pct(lat, 95)},
                "per_session": [{"id": s.id, "fps": s.fps(), "queue": s.out.qsize(), "dropped": s.dropped,
                                 "paused": s.paused, "frame": s.stream.frame_index if s.stream else 0}
                                for s in self.connections.values()]}

    async def record(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return web.json_response({"error": "missing or wrong token"}, status=401)
        try:
            s = self.connections[int(request.match_info["sid"])]
        except (KeyError, ValueError):
            return web.json_response({"error": "no such live session"}, status=404)
        if not s.rec:
            return web.json_response({"error": "nothing recorded: send {\"type\": \"record\", \"on\": true} first"},
                                     status=404)
        data = await asyncio.get_running_loop().run_in_executor(None, self._mp4, list(s.rec))
        return web.Response(body=data, content_type="video/mp4",
                            headers={"Content-Disposition": f'attachment; filename="worldstream-{s.id}.mp4"'})

    def _mp4(self, rec: list) -> bytes:
        import tempfile

        import simplejpeg

        from ..data.video import PreviewWriter

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "rec.mp4"
            scale = max(1, 384 // max(self.world.height, self.world.width))
            with PreviewWriter(path, self.world.fps, self.world.sample_rate, scale) as w:
                for frames, pcm in rec:
                    rgb = [simplejpeg.decode_jpeg(P.unpack_frame(m)[3]) for m in frames]
                    w.write(rgb, None if pcm is None else np.frombuffer(pcm, "<i2").astype(np.float32) / 32767)
            return path.read_bytes()

    # -- WebSocket -----------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=2 * self.cfg.max_message_bytes, heartbeat=20)
        await ws.prepare(request)
        if not self._authorised(request):
            await self._refuse(ws, "missing or wrong access token: open the page with ?token=... ")
            return ws
        if len(self.connections) >= self.cfg.max_sessions:
            await self._refuse(ws, f"the server is full ({self.cfg.max_sessions} sessions); try again in a minute")
            return ws
        s = Session(request.query.get("prompt", ""), int(request.query.get("seed", "0") or 0),
                    asyncio.get_running_loop(), self.cfg)
        s.all_latency_ms = self.latency_ms
        self.connections[s.id] = s
        sender = None
        try:
            self.worker.add(s)
            await asyncio.wait_for(s.ready.wait(), timeout=60)
            await ws.send_json(self._hello(s))
            sender = asyncio.create_task(self._send(ws, s))
            await self._receive(ws, s)
        except asyncio.TimeoutError:
            await ws.send_json({"type": "error", "message": "the model did not start a stream in 60 s"})
        finally:
            self.worker.remove(s)
            self.connections.pop(s.id, None)
            if sender is not None:
                sender.cancel()
            await ws.close()
        return ws

    async def _refuse(self, ws: web.WebSocketResponse, message: str) -> None:
        self.refused += 1
        await ws.send_json({"type": "refused", "message": message})
        await ws.close()

    def _hello(self, s: Session) -> dict[str, Any]:
        w, r = self.world, s.stream.rcfg
        lim = self.cfg.stream.limits
        return {"type": "hello", "session": s.id, "model": w.name, "device": self.device, "fps": w.fps,
                "width": w.width, "height": w.height, "sample_rate": w.sample_rate, "steps": r.steps,
                "sampler": r.sampler, "actions": list(w.vocab.names), "frames_per_chunk": w.frames_per_chunk,
                "limits": {"max_message_bytes": self.cfg.max_message_bytes, "max_prompt_chars": lim.max_prompt_chars,
                           "events_per_second": self.cfg.events_per_second}}

    async def _send(self, ws: web.WebSocketResponse, s: Session) -> None:
        last_status = 0.0
        while not ws.closed:
            try:
                msgs = await asyncio.wait_for(s.out.get(), timeout=1.0)
                for m in msgs:
                    await (ws.send_bytes(m) if m[:1] != b"{" else ws.send_str(m.decode()))
            except asyncio.TimeoutError:
                pass
            except ConnectionResetError:
                return
            if time.monotonic() - last_status > 1.0:
                last_status = time.monotonic()
                ms = list(s.chunk_ms)
                await ws.send_json({"type": "status", "fps": round(s.fps(), 2), "paused": s.paused,
                                    "ms_per_chunk_p50": float(np.median(ms)) if ms else None,
                                    "input_to_frame_ms_p50": float(np.median(s.latency_ms)) if s.latency_ms else None,
                                    "queue": s.out.qsize(), "dropped": s.dropped,
                                    "frame": s.stream.frame_index if s.stream else 0})

    async def _receive(self, ws: web.WebSocketResponse, s: Session) -> None:
        async for msg in ws:
            try:
                if msg.type == WSMsgType.TEXT:
                    m = P.parse_text(msg.data, self.cfg.max_text_chars)
                elif msg.type == WSMsgType.BINARY:
                    m = P.parse_binary(msg.data, self.cfg.max_message_bytes)
                elif msg.type == WSMsgType.ERROR:
                    return
                else:
                    continue
                await self._handle(ws, s, m)
            except (P.ProtocolError, EventError) as e:
                self.errors += 1
                await ws.send_json({"type": "error", "message": str(e)})

    async def _handle(self, ws: web.WebSocketResponse, s: Session, m: P.Message) -> None:
        if m.type == "ping":
            await ws.send_json({"type": "pong", "t": m.data.get("t")})
            return
        if m.type in ("pause", "resume"):
            s.paused = m.type == "pause"
            s.next_due = time.monotonic()
            self.worker.wake.set()
            return
        if m.type == "reset":
            seed = m.data.get("seed")
            s.want_reset = int(seed) if seed is not None else int(np.random.default_rng().integers(2**31))
            self.worker.wake.set()
            return
        if m.type == "record":
            s.recording = m.data["on"]
            if s.recording:
                s.rec.clear()
            return
        if not s.allow_event():
            raise P.ProtocolError(f"too many events: at most {self.cfg.events_per_second:.0f} a second")
        if m.type == "keys":
            ev = Event("action", self.world.vocab.from_keys(m.data["keys"]))
        elif m.type == "action":
            ev = Event("action", m.data["action"])
        elif m.type == "prompt":
            ev = Event("prompt", m.data["text"])
            s.prompt = m.data["text"]  # a reset keeps the current prompt
        else:  # image: decoding is work, keep it off the loop
            ev = Event("image", m.image, mode=m.data["mode"])
            await asyncio.get_running_loop().run_in_executor(None, s.stream.push, ev)
            self._arrived(s, m)
            return
        s.stream.push(ev)
        self._arrived(s, m)

    def _arrived(self, s: Session, m: P.Message) -> None:
        if m.seq is not None:
            s.last_seq = max(s.last_seq, m.seq)
            s.arrivals.append((m.seq, time.monotonic()))


def overworld_start(width: int, height: int):
    """Begin each session in the built-in world: a real frame at a seed-chosen spawn, its caption."""
    from ..worlds.overworld import Overworld, OverworldConfig

    world = Overworld(OverworldConfig(width=width, height=height))

    def start(seed: int):
        step = world.reset(seed=seed % 2**31)
        return step.frame, step.caption or "a sunny day in the overworld"

    return start


def run(world: World, cfg: ServerConfig, device: str = "cpu", open_page: bool = False, warmup: int = 3,
        start=None) -> None:
    """Warm the model up, start the server and (optionally) open the page; blocks until Ctrl-C.
    A compiled model warms up for as long as a stream takes to fill its window and memory, so no
    session waits for compilation."""
    if cfg.stream.compile:
        print("worldstream: compiling the model for this machine (once per process) ...", flush=True)
    seconds = world.warm_up(cfg.stream, chunks=max(warmup, 40 if cfg.stream.compile else 0))
    if cfg.stream.compile:
        print(f"worldstream: compiled and warmed up in {seconds:.1f} s", flush=True)
    server = Server(world, cfg, device, start)
    url = f"http://{cfg.host}:{cfg.port}/" + (f"?token={cfg.token}" if cfg.token else "")

    async def opened(app: web.Application) -> None:
        print(f"worldstream: serving {world.name} at {url}", flush=True)
        if open_page:
            import webbrowser

            threading.Timer(0.3, webbrowser.open, args=(url,)).start()

    app = server.app()
    app.on_startup.append(opened)
    web.run_app(app, host=cfg.host, port=cfg.port, print=None)


class Background:
    """Run a Server on its own thread and event loop (tests, benchmarks, notebooks)."""

    def __init__(self, server: Server, host: str = "127.0.0.1", port: int = 0):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.port = port
        self.host = host
        self.thread = threading.Thread(target=self._run, daemon=True, name="worldstream-server")
        self.thread.start()
        if not self.started.wait(60):
            raise RuntimeError("the server did not start within 60 s")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.server.app())
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, self.host, self.port)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
