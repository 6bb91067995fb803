"""The streaming engine: endless generation that takes input while it runs.

Every front end (the Python API, ``worldstream generate``, the gym env, the server) drives a
``Stream``. A stream holds one or more rows (independent worlds advanced in one forward pass),
the bounded KV cache of each guidance branch, the autoencoders' streaming decode state and the
current prompt and action of each row. ``step()`` applies the events that arrived since the
last chunk (rule in ``events.py``), makes the next chunk with the one rollout function
(``rollout.generate_chunk``), decodes it to RGB frames and PCM audio, and logs what it applied.

    world = World.load()      # the shipped default model (or a checkpoint folder) + autoencoders + text encoder
    s = world.stream(prompt="a sunny meadow", seed=0)
    chunk = s.step("walk_e")                            # RGB frames (B, n, H, W, 3), audio (B, n * spf)
    s.prompt("it starts to snow")                       # applies to the next chunk
    s.save("walk.mp4")                                  # when made with record=True

A prompt change swaps the prompt's keys/values in the cache (exactly what a stream started
with that prompt would hold) and, with ``recache`` on, re-encodes the window's chunks under the
new prompt (LongLive's KV re-cache, Yang et al. 2025), so the change shows within a few chunks.
"""
from __future__ import annotations

import collections
import dataclasses
import numbers
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import CheckpointError
from ..data.video import resize_crop, write_preview_mp4
from ..device import autocast, fast_bf16, torch_device
from ..tokenizers.actions import ActionVocab
from .events import Event, EventError, Limits, validate
from .generate import load_autoencoders, load_world_model
from .ground import ground_for
from .rollout import Branch, Conditioning, Given, RolloutConfig, flush, generate_chunk, make_branches


def _is_whole(value: Any) -> bool:
    """An int or a numpy integer (a seed drawn with numpy is one), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_view(window: int | None, sinks: int | None) -> None:
    """A streaming view's window (1 or more chunks) and sinks (0 or more); None: not given."""
    for name, value, least in (("window", window, 1), ("sinks", sinks, 0)):
        if value is not None and (not _is_whole(value) or value < least):
            raise ValueError(f"{name} must be a whole number of chunks, {least} or more; got {value!r}")


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    rollout: RolloutConfig | None = None  # None: the checkpoint's recommendation (or the teacher default)
    memory_chunks: int = 256  # memory bank capacity (pooled chunks), when the model has memory
    recache: bool = True  # re-encode the window under a new prompt
    blend_t: float = 0.6  # how much of a blended image survives (noise level it is free from)
    record: bool = False  # keep every frame and sample for save()
    # bfloat16 autocast where it is fast (``device.fast_bf16``: AMX CPUs, GPUs; float32 elsewhere): ~2x faster;
    # models trained under it
    bf16: bool = True
    # torch.compile the transformer's dense parts (Omni.compile_dense): ~1.4x faster chunks on a 2-core
    # CPU, for seconds of compiling in a process's first stream (World.warm_up does it up front);
    # play, serve and bench turn it on, short-lived uses (tests, generate) leave it off
    compile: bool = False
    limits: Limits = Limits()


@dataclasses.dataclass
class Chunk:
    index: int  # stream frame index of the first frame
    frames: np.ndarray  # (B, n, H, W, 3) uint8
    audio: np.ndarray | None  # (B, n * samples_per_frame) float32 in [-1, 1]
    seconds: float  # wall time to make and decode it

    @property
    def rgb(self) -> np.ndarray:
        """The last frame of row 0 (H, W, 3)."""
        return self.frames[0, -1]


def recommended_rollout(meta: dict[str, Any]) -> RolloutConfig:
    """A checkpoint's own sampler (a student records its step count, guidance folded in); a model trained on
    next-frame levels (``TeacherTrainConfig.levels``) makes each frame in one x0 step from pure noise, as it
    was trained; else the teacher's measured best: Heun 8 with prompt guidance 1.5 and action guidance 2 (log.md)."""
    r = meta.get("rollout")
    if not r and meta.get("train", {}).get("levels") == "next":
        r = {"sampler": "x0", "steps": 1, "text_scale": 1.0, "action_scale": 1.0}
    return RolloutConfig(**r) if r else RolloutConfig(sampler="heun", steps=8, text_scale=1.5, action_scale=2.0)


class World:
    """A loaded world model: the Omni transformer, its autoencoders and text encoder, the action
    vocabulary and the stream geometry."""

    def __init__(self, model, meta: dict[str, Any], vae, aae, prompts=None):
        from ..data.latents import PromptBank

        self.model, self.meta, self.vae, self.aae = model, meta, vae, aae
        self._runtime: dict[tuple[bool, bool], torch.nn.Module] = {}  # (bf16, compiled) -> the transformer streams run
        self._decoders: dict[bool, tuple] = {}  # compiled -> (video decode, audio decode or None)
        self.prompts = prompts or PromptBank()
        self.vocab = ActionVocab(tuple(meta["actions"]["names"]), tuple(meta["actions"].get("axes", [])))
        self.fps = int(meta["fps"])
        self.sample_rate = aae.cfg.sample_rate if aae is not None else 24000
        self.samples_per_frame = self.sample_rate // self.fps
        self.latent_shape = tuple(meta["latent_shape"])  # (C, h, w) of the training resolution
        s = vae.cfg.spatial
        self.height, self.width = self.latent_shape[1] * s, self.latent_shape[2] * s
        self.frames_per_chunk = model.cfg.chunk_frames * vae.cfg.temporal
        self.name = Path(meta.get("path", "world")).name

    @property
    def device(self) -> torch.device:
        """Where the transformer and autoencoders run (``World.to``); streams keep their
        bookkeeping, random generators and outputs on the CPU."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "World":
        """Move the models to ``device`` (e.g. "cuda"); the text encoder stays on the CPU (a prompt
        is encoded once, then its embedding moves)."""
        device = torch_device(device)
        self.model.to(device)
        self.vae.to(device)
        if self.aae is not None:
            self.aae.to(device)
        self._runtime.clear()
        self._decoders.clear()
        return self

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, window: int = 16, sinks: int = 1,
             size: tuple[int, int] | None = None) -> "World":
        """Load a teacher or student checkpoint, a bundle, or (None) the default model that ships
        with the package. A model trained with an unbounded view gets a
        bounded one for streaming (``window`` chunks and ``sinks``, no memory) so it runs forever;
        a model trained with a view keeps its own. ``size`` (width, height) streams at another
        resolution than the first one it was trained at (any multiple of 16 with the f8 AE)."""
        from ..weights import resolve

        check_view(window, sinks)
        if size is not None and (not isinstance(size, (tuple, list)) or len(size) != 2
                                 or not all(_is_whole(v) and v > 0 for v in size)):
            raise ValueError(f"size must be (width, height) in pixels, two positive whole numbers; got {size!r}")
        path = resolve(checkpoint)  # None: the default model that ships with the package
        if not (path / "config.json").exists():
            raise CheckpointError(f"{path}: no world model checkpoint here (config.json missing); train one with "
                                  "`worldstream train teacher` or pass the folder of one")
        model, meta = load_world_model(path)
        if model.cfg.window == 0:
            model.cfg = dataclasses.replace(model.cfg, window=window, sinks=sinks, memory_topk=0)
        vae, aae = load_autoencoders(meta, path)
        meta = dict(meta, path=str(path))
        if size is not None:
            step = vae.cfg.spatial * model.cfg.patch
            if size[0] % step or size[1] % step:
                raise ValueError(f"size {size[0]}x{size[1]}: width and height must be multiples of {step}")
            meta["latent_shape"] = [meta["latent_shape"][0], size[1] // vae.cfg.spatial, size[0] // vae.cfg.spatial]
        return cls(model, meta, vae.eval(), aae.eval() if aae is not None else None)

    def stream(self, prompt: str | list[str] = "", image: Any = None, seed: int | list[int] = 0, batch: int = 1,
               config: StreamConfig | None = None) -> "Stream":
        """Start a stream of ``batch`` rows (one prompt and seed each, or the same for all)."""
        if not _is_whole(batch) or batch < 1:
            raise ValueError(f"batch must be a whole number of rows, 1 or more; got {batch!r}")
        for s in seed if isinstance(seed, list) else [seed]:
            if not _is_whole(s):
                raise TypeError(f"seed must be a whole number (or a list of one per row), got {type(s).__name__} {s!r}")
        prompts = prompt if isinstance(prompt, list) else [prompt] * batch
        seeds = [int(s) for s in seed] if isinstance(seed, list) else [int(seed) + i for i in range(batch)]
        if len(prompts) != batch or len(seeds) != batch:
            raise ValueError(f"{len(prompts)} prompts and {len(seeds)} seeds for a batch of {batch}")
        return Stream(self, prompts, seeds, config or StreamConfig(), image)

    def rollout_config(self) -> RolloutConfig:
        return recommended_rollout(self.meta)

    def runtime_model(self, bf16: bool, compiled: bool = False):
        """The transformer a stream runs. Under bf16 autocast, a copy whose linear layers hold
        their weights in bf16 already: autocast would otherwise re-cast every weight on every pass
        (log.md: ~870 casts a chunk), and it rounds them exactly the same way, so the frames are the
        same. ``compiled``: a copy of that with its dense parts compiled (``Omni.compile_dense``).
        ``self.model`` (fp32) stays the master; its config (the attention view) is shared."""
        import copy

        key = (bf16, compiled)
        if key not in self._runtime:
            if compiled:
                m = copy.deepcopy(self.runtime_model(bf16)).compile_dense()
            elif bf16:
                m = copy.deepcopy(self.model)
                for mod in m.modules():
                    # the QK-norms' bf16 inputs meet fp32 weights otherwise and fall back to an unfused
                    # kernel (with a warning on every stream)
                    if isinstance(mod, (torch.nn.Linear, torch.nn.RMSNorm)):
                        mod.to(torch.bfloat16)
            else:
                m = self.model
            self._runtime[key] = m.eval()
        m = self._runtime[key]
        m.cfg = self.model.cfg  # a view changed on the master (memory budget, window) applies
        return m

    def decoders(self, compiled: bool = False) -> tuple:
        """The autoencoders' streaming decode functions, (video, audio or None), each called as
        ``decode(latents, state)``. ``compiled``: with ``torch.compile`` (inductor), which fuses the
        decoders' norms, activations and state updates around their convolutions: 10.5 -> 7.7 ms a
        frame for both at 128x128 (log.md, eighth session), to bf16 rounding of the same frames."""
        if compiled not in self._decoders:
            fns = (self.vae.decode, self.aae.decode if self.aae is not None else None)
            if compiled:
                fns = tuple(None if f is None else torch.compile(f, dynamic=None) for f in fns)
            self._decoders[compiled] = fns
        return self._decoders[compiled]

    def warm_up(self, config: "StreamConfig | None" = None, chunks: int = 40) -> float:
        """Stream throwaway chunks so a compiled model has compiled what a stream meets: the window
        and the memory bank filling (``chunks`` of one stream: sizes seen to change are compiled
        as symbols from then on), and, when compiled, prompts of other lengths (a few chunks of two
        more streams) and two streams stepped as one batch.
        A server does this before taking sessions. Returns the seconds it took."""
        t0 = time.perf_counter()
        names = [n for n in self.vocab.names if n.startswith("walk")] or list(self.vocab.names)
        streams = [("", chunks)]
        if config is not None and config.compile:  # (eager passes have nothing to compile per prompt length)
            streams += [("a sunny meadow", min(chunks, 4)), ("snow falls on a quiet village at night", min(chunks, 4))]
        for prompt, n in streams:
            s = self.stream(prompt, seed=0, config=config)
            for i in range(n):
                s.step(names[(i // 6) % len(names)])
        if config is not None and config.compile:
            # a server steps full streams together (``engine.batch``): a batch of two is another shape,
            # which compiled mid-stream would stall every session for about a minute (measured: 58 s).
            # Two streams with a small bank fill in a few chunks and compile it; the bank's size is a
            # symbol by then, so full-size banks need nothing more
            from .batch import signature, step_together

            small = dataclasses.replace(config, memory_chunks=4)
            pair = [self.stream("", seed=i, config=small) for i in range(2)]
            c = self.model.cfg
            for i in range(c.sinks + c.window + small.memory_chunks + 2):
                for s in pair:
                    s.step(names[(i // 6) % len(names)])
            for _ in range(3):
                sig = signature(pair[0])
                if sig is not None and sig == signature(pair[1]):
                    step_together(pair)
            for _ in range(2):  # and alone again after a batch: a pass with no deferred commit, full bank
                for s in pair:
                    s.step(names[0])
        return time.perf_counter() - t0

    def image_latent(self, img: np.ndarray) -> torch.Tensor:
        """An RGB image -> clean latents (1, 1, C, h, w) at the stream's size (resized, centre-cropped)."""
        H, W = img.shape[:2]
        s = min(W / self.width, H / self.height)  # scale to cover the stream's frame, then crop the middle
        size = (max(self.width, round(W / s)), max(self.height, round(H / s)), self.width, self.height)
        frame = resize_crop(img, size) if img.shape[:2] != (self.height, self.width) else img
        x = torch.from_numpy(frame).to(self.device).permute(2, 0, 1).float()[None, None] / 255
        x = x.repeat(1, self.vae.cfg.temporal, 1, 1, 1)
        with torch.no_grad():
            return self.vae.encode(x)


def to_frames(x: torch.Tensor) -> np.ndarray:
    """Decoded video (B, n, 3, H, W) in [0, 1] -> uint8 RGB (B, n, H, W, 3) on the CPU (made 8-bit
    where it was decoded: a quarter of the bytes to copy off a GPU)."""
    return (x.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()


def to_pcm(a: torch.Tensor | None) -> np.ndarray | None:
    return None if a is None else a.float().clamp(-1, 1).cpu().numpy()


def release_freed_memory() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``; elsewhere nothing).

    A stream's tensors are the same sizes forever, but glibc keeps freed blocks in its heaps: a
    trim costs ~6 ms and hands back ~30 MB per 128 chunks (log.md, sixth session), so a stream trims
    every 256 chunks and its RSS stays within ~60 MB of its floor, for a blip on one chunk in 256.
    (The ~6 MB a minute a 30-minute benchmark once showed was the benchmark keeping frames alive,
    not this; with it fixed, RSS over 30 minutes has a slope of +0.10 MB/min.)"""
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None
TRIM_EVERY = 256  # chunks between heap trims (release_freed_memory)


class Stream:
    def __init__(self, world: World, prompts: list[str], seeds: list[int], config: StreamConfig, image: Any = None):
        self.world, self.config = world, config
        self.rcfg = config.rollout or world.rollout_config()
        self.B = len(prompts)
        self.seeds = list(seeds)
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.prompts = list(prompts)
        self.actions = [world.vocab.index("idle") if "idle" in world.vocab.names else 0] * self.B
        self.frame_index = 0
        self.log: list[tuple[int, Event]] = []  # (chunk number, applied event): replay with Stream.replay
        self.timings: collections.deque[float] = collections.deque(maxlen=10_000)  # recent chunks: a stream runs forever
        self._pending: collections.deque[Event] = collections.deque()
        self._lock = threading.Lock()
        self._audio_in: list[np.ndarray] = [np.zeros(0, np.float32) for _ in range(self.B)]
        self._audio_enc_state: list[dict] = [{} for _ in range(self.B)]
        self._frames: list[np.ndarray] = []
        self._audio: list[np.ndarray] = []
        self.chunks_made = 0
        self._reset_context()
        self._encode_prompts()
        if image is not None:
            self.push(Event("image", image))

    # -- events ------------------------------------------------------------------------------
    def push(self, event: Event) -> None:
        """Validate now (EventError on bad input; nothing else changes), apply at the next chunk.
        Safe to call from another thread while a chunk is being made."""
        ev = validate(event, self.world.vocab, self.B, self.world.sample_rate, self.config.limits)
        if ev.kind == "image" and ev.mode == "restart" and self.B > 1:
            raise EventError("restarting one row of a batched stream is not supported; "
                             "use mode='blend' or a stream of its own")
        with self._lock:
            self._pending.append(ev)

    def act(self, action: int | str, row: int = 0) -> None:
        self.push(Event("action", action, row))

    def prompt(self, text: str, row: int = 0) -> None:
        self.push(Event("prompt", text, row))

    def image(self, image: Any, row: int = 0, mode: str = "restart") -> None:
        self.push(Event("image", image, row, mode))

    def audio(self, pcm: np.ndarray, row: int = 0) -> None:
        self.push(Event("audio", pcm, row))

    # -- stepping ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, action: int | str | list | None = None, position: tuple | list | None = None) -> Chunk:
        """Make the next chunk. ``action``: one for every row, or a list with one per row; it is
        pushed as events first, so it applies to this chunk (and holds until changed).
        ``position``: where this chunk is in the world, (x, y) or one per row, when the source
        knows it (a game's player position): memory chunks near it are retrieved first."""
        if action is not None:
            acts = action if isinstance(action, list) else [action] * self.B
            if len(acts) != self.B:
                raise EventError(f"step got {len(acts)} actions for a stream of {self.B} row(s); "
                                 "pass one action for every row, or a list with one per row")
            for row, a in enumerate(acts):
                self.act(a, row)
        t0 = time.perf_counter()
        with self._lock:
            events, self._pending = list(self._pending), collections.deque()
        with self._autocast():
            given = self._apply(events)
        w, m = self.world, self._model()
        cf = m.cfg.chunk_frames
        acts = torch.tensor(self.actions)[:, None].repeat(1, cf)
        cond = Conditioning(self.text, self.text_mask, self.text_pooled, acts, action_offset=self.chunk * cf)
        pos = None
        if position is not None:
            pos = torch.tensor(position if isinstance(position, list) else [position] * self.B, dtype=torch.float32)
            if pos.shape != (self.B, 2):
                raise EventError(f"position must be (x, y) or one (x, y) per row, got {position!r}")
        for b in self.branches:
            b.cache.position = pos
        with self._autocast():
            v, a = generate_chunk(m, self.branches, self.rcfg, cond, self.chunk, w.latent_shape, self.generators,
                                  given=given, defer=True, ground=self.ground)
        v, a = v.float(), None if a is None else a.float()
        vdecode, adecode = w.decoders(self.config.compile)
        with self._autocast():
            x = vdecode(v, self.vstate)
            pcm = adecode(a, self.astate) if adecode is not None and a is not None else None
        frames, pcm = to_frames(x), to_pcm(pcm)
        return self._finish(v, a, acts, frames, pcm, time.perf_counter() - t0)

    def _finish(self, v: torch.Tensor, a: torch.Tensor | None, acts: torch.Tensor, frames: np.ndarray,
                pcm: np.ndarray | None, seconds: float) -> Chunk:
        """The bookkeeping of one made chunk, stepped alone or in a batch (``batch.step_together``)."""
        self._remember(self.chunk, v, a, acts)
        self.chunk += 1
        self.chunks_made += 1
        out = Chunk(self.frame_index, frames, pcm, seconds)
        self.frame_index += frames.shape[1]
        self.timings.append(seconds)
        if self.chunks_made % TRIM_EVERY == 0:
            release_freed_memory()
        if self.config.record:
            self._frames += list(frames[0])
            if pcm is not None:
                self._audio.append(pcm[0])
        return out

    def save(self, path: str | Path) -> Path:
        """Write row 0 of everything streamed so far (needs ``StreamConfig(record=True)``) as MP4 with sound."""
        if not self._frames:
            raise RuntimeError("nothing recorded: start the stream with StreamConfig(record=True) and step it")
        pcm = np.concatenate(self._audio) if self._audio else None
        scale = max(1, 384 // max(self._frames[0].shape[:2]))
        write_preview_mp4(Path(path), self._frames, pcm, self.world.fps, self.world.sample_rate, scale=scale)
        return Path(path)

    @classmethod
    def replay(cls, world: World, prompts: list[str], seeds: list[int], log: list[tuple[int, Event]], n_chunks: int,
               config: StreamConfig | None = None) -> list[Chunk]:
        """Re-run a stream from its event log: the same checkpoint, seeds and log give the same frames."""
        s = cls(world, prompts, seeds, config or StreamConfig())
        by_chunk = collections.defaultdict(list)
        for c, ev in log:
            by_chunk[c].append(ev)
        out = []
        for c in range(n_chunks):
            for ev in by_chunk.get(c, []):
                s.push(ev)
            out.append(s.step())
        return out

    # -- internals -----------------------------------------------------------------------------
    def _bf16(self) -> bool:  # asked for, and fast on this device (a CPU without bf16 units streams in fp32)
        return self.config.bf16 and fast_bf16(self.world.device.type)

    def _autocast(self):
        return autocast(self.world.device.type, self.config.bf16)

    def _model(self):
        return self.world.runtime_model(self._bf16(), self.config.compile)

    def _reset_context(self) -> None:
        """Empty caches and decode state: a new world (at start, or restarting from an image)."""
        m = self.world.model
        self.branches: list[Branch] = make_branches(m, self.rcfg)
        for b in self.branches:
            b.cache = m.new_cache(self.config.memory_chunks)
        self.chunk = 0  # chunk index within the current context
        # a whole-pixel move model: the ground this stream has shown, which fills what each move uncovers
        self.ground = ground_for(m, self.B, self.seeds)
        self.vstate, self.astate = {}, {}
        self.recent: dict[int, tuple] = {}  # chunk -> (video, audio, actions) for re-encoding the window

    def _encode_prompts(self) -> None:
        dev = self.world.device  # moved once per prompt: a deferred commit recognises its prompt by identity
        self.text, self.text_mask, self.text_pooled = (t.to(dev) for t in self.world.prompts.batch(self.prompts))

    def _apply(self, events: list[Event]) -> Given:
        w = self.world
        given = Given(blend_t=self.config.blend_t)
        changed = torch.zeros(self.B, dtype=torch.bool)
        restart = blend = None
        for ev in events:
            if ev.kind == "action" and ev.value == self.actions[ev.row]:
                continue  # actions hold until changed: a repeat changes nothing, and logging it would grow the log every chunk
            self.log.append((self.chunks_made, ev))
            if ev.kind == "action":
                self.actions[ev.row] = ev.value
            elif ev.kind == "prompt":
                self.prompts[ev.row] = ev.value
                changed[ev.row] = True
            elif ev.kind == "audio":
                self._audio_in[ev.row] = np.concatenate([self._audio_in[ev.row], ev.value])
            elif ev.kind == "image":
                lat = w.image_latent(ev.value)
                if ev.mode == "restart":
                    restart = lat
                else:
                    blend = blend if blend is not None else torch.zeros(self.B, *lat.shape[1:], device=lat.device)
                    blend[ev.row] = lat[0]
                    given.blend_rows = (given.blend_rows if given.blend_rows is not None
                                        else torch.zeros(self.B, dtype=torch.bool))
                    given.blend_rows[ev.row] = True
        if restart is not None:
            self._reset_context()
            self._encode_prompts()
            given.video = restart.expand(self.B, -1, -1, -1, -1)
        elif bool(changed.any()):
            self._change_prompts(changed)
        new_look = changed if given.blend_rows is None else changed | given.blend_rows
        if self.ground is not None and bool(new_look.any()):  # a new prompt or blended picture: the remembered
            self.ground.forget(new_look)                         # ground shows the old look
        given.blend = blend
        self._take_audio(given)
        return given

    def _change_prompts(self, rows: torch.Tensor) -> None:
        """New prompt keys/values in every text branch; re-encode the window for the changed rows."""
        m = self._model()  # (called under autocast, from _apply)
        flush(m, self.branches)  # the last chunk goes in under the prompt it was made with
        self._encode_prompts()
        for b in self.branches:
            if not b.use_text:
                continue
            old = (list(b.cache.k), list(b.cache.v))
            m.encode_prompt(b.cache, self.text, self.text_mask, self.text_pooled)
            if self.config.recache:
                self._recache(b, rows, old)

    def _recache(self, b: Branch, rows: torch.Tensor, old: tuple[list, list]) -> None:
        cache, m, w = b.cache, self._model(), self.world
        kept = sorted(set(cache.chunk_of.tolist()))
        window = [c for c in kept if c >= cache.sinks]
        if not window:
            return
        cache.drop_chunks_from(window[0])
        cf = m.cfg.chunk_frames
        for c in window:
            v, a, acts = self.recent[c]
            cond = Conditioning(self.text, self.text_mask, self.text_pooled, acts, action_offset=c * cf).to(w.device)
            zero = torch.zeros(self.B, 1, device=w.device)
            m(video=v, t_video=zero, audio=a, t_audio=zero if a is not None else None, cache=cache,
              start_frame=c * cf, **b.kwargs(cond, slice(c * cf, (c + 1) * cf)))
            cache.commit()
        keep = ~rows  # rows whose prompt did not change keep exactly their old keys/values
        if bool(keep.any()):
            for i in range(cache.n_layers):
                cache.k[i][keep] = old[0][i][keep]
                cache.v[i][keep] = old[1][i][keep]

    def _remember(self, chunk: int, v: torch.Tensor, a: torch.Tensor | None, acts: torch.Tensor) -> None:
        self.recent[chunk] = (v, a, acts)
        cache = self.branches[-1].cache
        kept = set(cache.chunk_of.tolist())
        for c in [c for c in self.recent if c not in kept and c < cache.n_chunks]:  # (not yet committed: kept)
            del self.recent[c]

    def _take_audio(self, given: Given) -> None:
        """Rows with given sound: encode the next chunk's samples (the picture follows the sound)."""
        w = self.world
        if w.aae is None:
            return
        n = self.world.frames_per_chunk * w.samples_per_frame
        rows = torch.tensor([len(x) >= n for x in self._audio_in])
        if not bool(rows.any()):
            return
        lat = []
        for r in range(self.B):
            if rows[r]:
                pcm = torch.from_numpy(self._audio_in[r][:n].copy())[None].to(w.device)
                self._audio_in[r] = self._audio_in[r][n:]
                lat.append(w.aae.encode(pcm, self._audio_enc_state[r])[0])
            else:
                lat.append(None)
        shape = next(x for x in lat if x is not None).shape
        given.audio = torch.stack([x if x is not None else torch.zeros(shape, device=w.device) for x in lat])
        given.audio_rows = rows
