"""The wire protocol between the streaming server and its clients (browser page, Python client).

One WebSocket per client at ``/ws``. Documented for people in docs/protocol.md.

Server -> client
    binary, first byte is the kind:
      0x01 FRAME  header <B I d I> = kind, frame index, server time (s), last applied input seq;
                  then one JPEG image (the frame at its native size)
      0x02 AUDIO  header <B I I>   = kind, index of the chunk's first frame, sample rate;
                  then int16 little-endian mono PCM for that chunk
    text, JSON objects with a "type":
      hello    {model, device, fps, width, height, sample_rate, steps, sampler, actions, limits, session}
      status   {fps, ms_per_chunk_p50, queue, dropped, paused, frame}     (about once a second)
      error    {message}        a bad message; the session goes on
      refused  {message}        no session (server full, bad token); the socket then closes
      pong     {t}              echo of a ping

Client -> server
    text, JSON objects with a "type" (and an optional integer "seq" the server echoes in frames):
      keys     {keys: [KeyboardEvent.key, ...]}   the keys held now -> an action (WASD/arrows, shift runs)
      action   {action: name}                     an action by name
      prompt   {text: "..."}                      a new prompt, applied to the next chunk
      pause | resume | reset {seed?} | record {on: bool} | ping {t}
    binary, first byte is the kind:
      0x10 IMAGE_RESTART, 0x11 IMAGE_BLEND  then PNG or JPEG bytes
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

FRAME, AUDIO = 0x01, 0x02
IMAGE_RESTART, IMAGE_BLEND = 0x10, 0x11
FRAME_HEADER = struct.Struct("<BIdI")
AUDIO_HEADER = struct.Struct("<BII")
CONTROL = ("pause", "resume", "reset", "record", "ping")
EVENTS = ("keys", "action", "prompt")


class ProtocolError(ValueError):
    """A malformed message: the text says what is wrong; the session goes on."""


@dataclass
class Message:
    type: str
    data: dict[str, Any]
    seq: int | None = None
    image: bytes | None = None


def pack_frame(index: int, server_time: float, seq: int, jpeg: bytes) -> bytes:
    return FRAME_HEADER.pack(FRAME, index, server_time, seq) + jpeg


def unpack_frame(msg: bytes) -> tuple[int, float, int, bytes]:
    kind, index, t, seq = FRAME_HEADER.unpack_from(msg)
    if kind != FRAME:
        raise ProtocolError(f"not a frame message (kind {kind})")
    return index, t, seq, msg[FRAME_HEADER.size :]


def pack_audio(index: int, sample_rate: int, pcm16: bytes) -> bytes:
    return AUDIO_HEADER.pack(AUDIO, index, sample_rate) + pcm16


def unpack_audio(msg: bytes) -> tuple[int, int, bytes]:
    kind, index, rate = AUDIO_HEADER.unpack_from(msg)
    if kind != AUDIO:
        raise ProtocolError(f"not an audio message (kind {kind})")
    return index, rate, msg[AUDIO_HEADER.size :]


def parse_text(text: str, max_chars: int) -> Message:
    """A client's JSON message -> Message, or ProtocolError saying what to send instead."""
    if len(text) > max_chars:
        raise ProtocolError(f"message of {len(text)} characters is over the limit of {max_chars}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError('a message must be a JSON object with a "type", e.g. {"type": "keys", "keys": ["w"]}')
    kind = obj["type"]
    if kind not in EVENTS + CONTROL:
        raise ProtocolError(f"unknown message type {kind!r}; use one of {', '.join(EVENTS + CONTROL)}")
    seq = obj.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**32):
        raise ProtocolError('"seq" must be an integer from 0 to 2^32 - 1')
    if kind == "keys":
        keys = obj.get("keys")
        if not isinstance(keys, list) or len(keys) > 16 or not all(isinstance(k, str) and len(k) <= 16 for k in keys):
            raise ProtocolError('"keys" must be a list of up to 16 key names, e.g. ["w", "Shift"]')
    elif kind == "action" and not isinstance(obj.get("action"), str):
        raise ProtocolError('"action" must be an action name, e.g. "walk_n"')
    elif kind == "prompt" and not isinstance(obj.get("text"), str):
        raise ProtocolError('"text" must be a string: the new prompt')
    elif kind == "reset" and obj.get("seed") is not None and (not isinstance(obj["seed"], int) or isinstance(obj["seed"], bool)):
        raise ProtocolError('"seed" must be an integer')
    elif kind == "record" and not isinstance(obj.get("on"), bool):
        raise ProtocolError('"on" must be true or false')
    return Message(kind, obj, seq)


def parse_binary(data: bytes, max_bytes: int) -> Message:
    if len(data) > max_bytes:
        raise ProtocolError(f"binary message of {len(data)} bytes is over the limit of {max_bytes}; send a smaller image")
    if not data or data[0] not in (IMAGE_RESTART, IMAGE_BLEND):
        raise ProtocolError("binary messages from a client must start with 0x10 (image: restart) or 0x11 (image: blend)")
    return Message("image", {"mode": "restart" if data[0] == IMAGE_RESTART else "blend"}, image=bytes(data[1:]))
