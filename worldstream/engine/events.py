"""Events a stream accepts at any time, validated when they arrive.

Timing rule: an event is checked when it is pushed (a bad one raises ``EventError`` there and
is never queued, so the stream goes on) and applied at the start of the next chunk. An event
pushed while a chunk is being made therefore applies to the chunk after it; events are applied
in the order they arrived. The stream logs each applied event with the chunk it applied to,
which makes a stream replayable (same checkpoint, seed and log -> same frames).
"""
from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np

KINDS = ("action", "prompt", "image", "audio")
IMAGE_MODES = ("restart", "blend")


class EventError(ValueError):
    """A bad event: says what is wrong and what to send instead. The stream is unaffected."""


@dataclasses.dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 1000
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_side: int = 4096
    max_audio_seconds: float = 60.0


@dataclasses.dataclass
class Event:
    kind: str  # "action" | "prompt" | "image" | "audio"
    value: Any  # action id; prompt text; image (H, W, 3) uint8; audio float32 PCM at the model's rate
    row: int = 0  # which stream of a batched stream
    mode: str = "restart"  # images: "restart" from it, or "blend" it into the next chunk

    def to_json(self) -> dict[str, Any]:
        """A loggable form (images and audio by shape and checksum, not by content)."""
        v = self.value
        if isinstance(v, np.ndarray):
            v = {"shape": list(v.shape), "sum": float(v.astype(np.float64).sum())}
        return {"kind": self.kind, "value": v, "row": self.row, "mode": self.mode}


def decode_image(data: bytes, limits: Limits = Limits()) -> np.ndarray:
    """PNG or JPEG bytes -> (H, W, 3) uint8, with size checks before and after decoding."""
    import av

    if len(data) > limits.max_image_bytes:
        raise EventError(f"image of {len(data)} bytes is larger than the limit of {limits.max_image_bytes}; "
                         "send a smaller PNG or JPEG")
    try:
        with av.open(io.BytesIO(data)) as c:
            frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    except Exception as e:  # PyAV raises several kinds for corrupt input
        raise EventError(f"could not decode the image ({type(e).__name__}: {e}); send a PNG or JPEG file") from None
    return check_image(frame, limits)


def check_image(img: Any, limits: Limits = Limits()) -> np.ndarray:
    if isinstance(img, (bytes, bytearray, memoryview)):
        return decode_image(bytes(img), limits)
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        desc = f"{type(img).__name__} {getattr(img, 'shape', '')} {getattr(img, 'dtype', '')}".strip()
        raise EventError(f"image must be an (H, W, 3) uint8 RGB array or PNG/JPEG bytes, got {desc}")
    if max(img.shape[:2]) > limits.max_image_side or min(img.shape[:2]) < 8:
        raise EventError(f"image of {img.shape[1]}x{img.shape[0]} is outside 8..{limits.max_image_side} pixels a side")
    return np.ascontiguousarray(img[..., :3])


def validate(event: Event, vocab, batch: int, sample_rate: int, limits: Limits = Limits()) -> Event:
    """A checked copy of ``event`` (action names resolved to ids, images decoded), or EventError."""
    if not isinstance(event, Event):
        raise EventError(f"expected an Event, got {type(event).__name__}")
    if event.kind not in KINDS:
        raise EventError(f"unknown event kind {event.kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(event.row, int) or not 0 <= event.row < batch:
        raise EventError(f"row {event.row!r} is not a stream of this batch (0..{batch - 1})")
    v = event.value
    if event.kind == "action":
        try:
            v = vocab.index(v)
        except ValueError as e:
            raise EventError(str(e)) from None
    elif event.kind == "prompt":
        if not isinstance(v, str):
            raise EventError(f"a prompt must be text (str), got {type(v).__name__}")
        if len(v) > limits.max_prompt_chars:
            raise EventError(f"prompt of {len(v)} characters is longer than {limits.max_prompt_chars}; shorten it")
    elif event.kind == "image":
        if event.mode not in IMAGE_MODES:
            raise EventError(f"image mode {event.mode!r}: use 'restart' or 'blend'")
        v = check_image(v, limits)
    elif event.kind == "audio":
        a = np.asarray(v)
        if a.dtype.kind not in "fi" or a.ndim != 1 or len(a) == 0:
            raise EventError(f"audio must be mono PCM samples (1-D float array at {sample_rate} Hz)")
        if len(a) > limits.max_audio_seconds * sample_rate:
            raise EventError(f"audio of {len(a) / sample_rate:.1f} s is longer than {limits.max_audio_seconds} s")
        v = (a / 32768.0 if a.dtype.kind == "i" else a).astype(np.float32)
        if not np.isfinite(v).all():
            raise EventError("audio contains NaN or infinite samples")
    return dataclasses.replace(event, value=v)
