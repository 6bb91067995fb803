"""A small Python client for the worldstream server, for games, agents and notebooks.

    from worldstream.client import Client
    with Client("ws://127.0.0.1:8765/ws") as c:
        c.act("walk_e")
        for frame in c.frames(limit=48):     # Frame(index, rgb (H, W, 3) uint8, latency info)
            ...
        c.prompt("night falls")

The connection runs on a background thread; frames arrive in a bounded queue (the oldest are
dropped when you read slower than the server makes them, like the browser page).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import threading
import time
from typing import Any, Iterator

import numpy as np

from .serve import protocol as P


class ClientError(RuntimeError):
    pass


@dataclasses.dataclass
class Frame:
    index: int
    rgb: np.ndarray  # (H, W, 3) uint8
    seq: int  # the last input of ours the server had applied when it made this frame
    received: float  # time.monotonic() on arrival


class Client:
    def __init__(self, url: str = "ws://127.0.0.1:8765/ws", token: str | None = None, prompt: str = "", seed: int = 0,
                 max_frames: int = 64, timeout: float = 60.0):
        self.url, self.token, self.timeout = url, token, timeout
        self.params = {"prompt": prompt, "seed": str(seed), **({"token": token} if token else {})}
        self.hello: dict[str, Any] | None = None
        self.status: dict[str, Any] = {}
        self.errors: queue.Queue = queue.Queue()
        self.audio: queue.Queue = queue.Queue(maxsize=256)
        self._frames: queue.Queue = queue.Queue(maxsize=max_frames)
        self._seq = 0
        self.sent: dict[int, float] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._ws = None
        self._failure: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="worldstream-client")
        self._thread.start()
        if not self._ready.wait(timeout):
            self.close()
            raise ClientError(f"no hello from {url} within {timeout} s")
        if self._failure:
            hint = "" if self._failure.startswith("refused") else (
                "; is a server running there (`worldstream serve` prints its ws:// address)?")
            raise ClientError(f"cannot connect to {url}: {self._failure}{hint}")

    # -- sending -------------------------------------------------------------------------------
    def _send(self, obj: dict[str, Any] | bytes) -> None:
        if self._ws is None or self._closed.is_set():
            raise ClientError("not connected")
        data = obj if isinstance(obj, bytes) else json.dumps(obj)
        coro = self._ws.send_bytes(data) if isinstance(data, bytes) else self._ws.send_str(data)
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    def _event(self, obj: dict[str, Any]) -> int:
        self._seq += 1
        self.sent[self._seq] = time.monotonic()
        self._send({**obj, "seq": self._seq})
        return self._seq

    def act(self, action: str) -> int:
        return self._event({"type": "action", "action": action})

    def keys(self, keys: list[str]) -> int:
        return self._event({"type": "keys", "keys": keys})

    def prompt(self, text: str) -> int:
        return self._event({"type": "prompt", "text": text})

    def image(self, data: bytes, mode: str = "restart") -> None:
        self._send(bytes([P.IMAGE_RESTART if mode == "restart" else P.IMAGE_BLEND]) + data)

    def pause(self) -> None:
        self._send({"type": "pause"})

    def resume(self) -> None:
        self._send({"type": "resume"})

    def reset(self, seed: int | None = None) -> None:
        self._send({"type": "reset", **({"seed": seed} if seed is not None else {})})

    def send_raw(self, data: str | bytes) -> None:
        """Anything at all (tests and fuzzing)."""
        if self._ws is None:
            raise ClientError("not connected")
        coro = self._ws.send_bytes(data) if isinstance(data, bytes) else self._ws.send_str(data)
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    # -- receiving -----------------------------------------------------------------------------
    def frames(self, limit: int | None = None, timeout: float | None = None) -> Iterator[Frame]:
        n = 0
        while limit is None or n < limit:
            try:
                f = self._frames.get(timeout=timeout or self.timeout)
            except queue.Empty:
                if self._failure:
                    raise ClientError(self._failure) from None
                raise ClientError(f"no frame within {timeout or self.timeout} s") from None
            n += 1
            yield f

    def next_error(self, timeout: float = 10.0) -> str:
        return self.errors.get(timeout=timeout)

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            if self._ws is not None:
                try:
                    asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop).result(5)
                except Exception:
                    pass
        self._thread.join(5)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the connection thread -----------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except Exception as e:
            self._failure = f"{type(e).__name__}: {e}"
        finally:
            self._ready.set()
            self._closed.set()

    async def _main(self) -> None:
        import aiohttp
        import simplejpeg

        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(self.url, params=self.params, max_msg_size=0) as ws:
                self._ws = ws
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        m = json.loads(msg.data)
                        if m["type"] == "hello":
                            self.hello = m
                            self._ready.set()
                        elif m["type"] == "status":
                            self.status = m
                        elif m["type"] == "error":
                            self.errors.put(m["message"])
                        elif m["type"] == "refused":
                            self._failure = f"refused: {m['message']}"
                            self._ready.set()
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        kind = msg.data[0]
                        if kind == P.FRAME:
                            index, _, seq, jpeg = P.unpack_frame(msg.data)
                            f = Frame(index, simplejpeg.decode_jpeg(jpeg), seq, time.monotonic())
                            if self._frames.full():
                                self._frames.get_nowait()
                            self._frames.put_nowait(f)
                        elif kind == P.AUDIO:
                            if self.audio.full():
                                self.audio.get_nowait()
                            self.audio.put_nowait(P.unpack_audio(msg.data))
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                    if self._closed.is_set():
                        break
