"""The rollout: generate chunk after chunk with the KV cache. One function for every user:
`worldstream generate`, the streaming engine, and (later) training on the model's own rollouts.

For each chunk: start from noise, integrate the velocity field with a sampler from
``diffusion.flow`` (many-step teacher or few-step student, one signature), with classifier-free
guidance as a closure over up to three conditioning branches (nothing / text / text + actions),
then commit the clean chunk into each branch's KV cache with one more pass at t = 0, so later
chunks attend to clean history (as in Self-Forcing and CausVid).

A stream defers that commit (``defer=True``): the next chunk's first denoising pass carries the
finished chunk too, at t = 0, and commits only it. The attention is block-causal, so the
finished chunk's keys and values are exactly those of a pass of its own, and a 1-step student
makes each chunk in one transformer call instead of two. Anything that needs the cache complete
(a prompt change, prefill, stacking streams into a batch) calls ``flush`` first.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from ..diffusion.flow import SAMPLERS, guide, interpolate, randn, time_grid
from ..model.cache import KVCache
from ..model.omni import Omni, degrade_at_level


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    sampler: str = "heun"  # "euler", "heun" (teacher) or "x0" (few-step student)
    steps: int = 20
    shift: float = 1.0  # time-grid shift toward noise (SD3 eq. 23)
    text_scale: float = 3.0  # guidance on the prompt (1 = no guidance)
    action_scale: float = 1.5  # guidance on the actions (1 = no guidance)
    history_noise: float = 0.0  # commit generated chunks at this noise level (GameNGen-style context noise)
    # a ``prev_level`` model: degrade the previous frame at this level and say so (``degrade_at_level``),
    # so the stream's own frames look to it like the degraded real frames it was trained on
    prev_level: float = 0.0

    def __post_init__(self):
        # a bad value from a command line, a bundle's meta or a client is a clear error here, before a
        # model is loaded or a stream made (0 steps would return the starting noise as the frame)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps {self.steps!r}: give a whole number of sampler steps per chunk, 1 or more")
        for name in ("shift", "text_scale", "action_scale", "history_noise", "prev_level"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} {v!r}: give a finite number")
        if self.shift <= 0:
            raise ValueError(f"shift {self.shift}: give a positive time-grid shift (1 = none)")
        if self.text_scale < 0 or self.action_scale < 0:
            raise ValueError(f"guidance scales {self.text_scale}, {self.action_scale}: give 0 or more (1 = none)")
        if not 0 <= self.history_noise <= 1 or not 0 <= self.prev_level <= 1:
            raise ValueError(f"history_noise {self.history_noise}, prev_level {self.prev_level}: each must be in [0, 1]")


@dataclasses.dataclass
class Conditioning:
    """What the model is asked for: the prompt (encoded) and the actions of every frame."""

    text: torch.Tensor | None  # (B, Nt, 384)
    text_mask: torch.Tensor | None  # (B, Nt)
    text_pooled: torch.Tensor | None  # (B, 384)
    actions: torch.Tensor  # (B, F) ids, -1 = none, for frames action_offset .. action_offset + F
    action_offset: int = 0  # a stream passes only the current chunk's actions

    def to(self, device) -> "Conditioning":
        """On the model's device (tensors there already are kept as they are: a deferred commit
        recognises its prompt by identity)."""
        return dataclasses.replace(self, **{f: _to(getattr(self, f), device)
                                            for f in ("text", "text_mask", "text_pooled", "actions")})


def _to(x: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if x is None else x.to(device)


@dataclasses.dataclass
class Pending:
    """A finished chunk not yet in a branch's cache: what its commit pass would be given."""

    video: torch.Tensor  # (B, cf, C, h, w) clean (or lightly noised) latents
    audio: torch.Tensor | None
    t: torch.Tensor  # (B, 1) their noise level
    start_frame: int
    kwargs: dict  # the branch's conditioning of that chunk (actions, text)


class Branch:
    """One conditioning branch with its own KV cache.

    ``stack``: several branches that share the prompt and differ only in whether they see the
    actions, stacked along the batch (group g's rows are ``g * B .. (g + 1) * B``) in one cache,
    so one transformer call serves them all; each group's ``use_actions``. Empty: one group."""

    def __init__(self, model: Omni, use_text: bool, use_actions: bool, stack: tuple[bool, ...] = ()):
        self.cache = model.new_cache()
        self.use_text, self.use_actions, self.stack = use_text, use_actions, stack
        self.pending: Pending | None = None  # a deferred commit
        self.last_video: torch.Tensor | None = None  # (B, C, h, w) the newest finished frame (``OmniConfig.prev_frame``)
        self.last_own: torch.Tensor | None = None  # (B,) bool: that frame was generated, not given (``OmniConfig.prev_own``)
        self._text: tuple | None = None  # (the prompt's tensor, its stacked copies): one stacked tensor per prompt

    @property
    def groups(self) -> int:
        return max(1, len(self.stack))

    def rows(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """A per-row input (B, ...) repeated for each stacked group."""
        return x if x is None or not self.stack else x.repeat(len(self.stack), *[1] * (x.dim() - 1))

    def kwargs(self, cond: Conditioning, frames: slice) -> dict:
        frames = slice(frames.start - cond.action_offset, frames.stop - cond.action_offset)
        acts = cond.actions[:, frames]
        if self.stack:
            a = torch.cat([acts if use else torch.full_like(acts, -1) for use in self.stack])
        else:
            a = acts if self.use_actions else torch.full_like(acts, -1)
        if self.use_text and cond.text is not None:
            text = (cond.text, cond.text_mask, cond.text_pooled)
            if self.stack:  # the same stacked tensor while the prompt is the same (a deferred commit checks it)
                if self._text is None or self._text[0] is not cond.text:
                    self._text = (cond.text, tuple(self.rows(x) for x in text))
                text = self._text[1]
            return dict(actions=a, text=text[0], text_mask=text[1], text_pooled=text[2])
        return dict(actions=a, text=None, text_mask=None, text_pooled=None)


def make_branches(model: Omni, cfg: RolloutConfig, stacked: bool = False) -> list[Branch]:
    """The guidance branches of a rollout: one (no guidance), or nothing / text / text + actions.
    ``stacked``: the text and text + action branches as one branch of twice the rows (one call per
    step instead of two, the same numbers: a distillation target's 11 teacher steps are 22 calls
    instead of 33). Streams keep three (they re-encode and split each branch's rows)."""
    if cfg.text_scale == 1.0 and cfg.action_scale == 1.0:
        return [Branch(model, True, True)]
    if stacked:
        return [Branch(model, False, False), Branch(model, True, True, stack=(False, True))]
    return [Branch(model, False, False), Branch(model, True, False), Branch(model, True, True)]


@dataclasses.dataclass
class Given:
    """What is given rather than generated in one chunk, per batch row (rows: (B,) bool).

    video: clean latents (an image to start from): committed as they are.
    audio: clean audio latents (sound to follow: "the weather follows the sound of rain").
    blend: latents to blend in (SDEdit, Meng et al. 2022): the chunk starts on the straight
        path from them to noise and is free once t <= blend_t, so it keeps their layout and
        colours and fits them to the history.
    """

    video: torch.Tensor | None = None
    video_rows: torch.Tensor | None = None
    audio: torch.Tensor | None = None
    audio_rows: torch.Tensor | None = None
    blend: torch.Tensor | None = None
    blend_rows: torch.Tensor | None = None
    blend_t: float = 0.6

    def to(self, device) -> "Given":
        return dataclasses.replace(self, **{f.name: _to(getattr(self, f.name), device)
                                            for f in dataclasses.fields(self) if f.name != "blend_t"})


def _commit(model: Omni, b: Branch, p: Pending) -> None:
    model(video=p.video, t_video=p.t, audio=p.audio, t_audio=p.t if p.audio is not None else None, cache=b.cache,
          start_frame=p.start_frame, **p.kwargs)
    b.cache.commit()


@torch.no_grad()
def flush(model: Omni, branches: list[Branch]) -> None:
    """Run the deferred commit of every branch on its own, so the caches hold every finished chunk."""
    for b in branches:
        if b.pending is not None:
            p, b.pending = b.pending, None
            _commit(model, b, p)


def _fused(model: Omni, b: Branch, p: Pending, video: torch.Tensor, t_video: torch.Tensor, audio: torch.Tensor | None,
           t_audio: torch.Tensor | None, kwargs: dict, prev: torch.Tensor | None,
           prev_level: torch.Tensor | None = None, ground=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pass over the pending chunk (at its noise level) and this chunk's denoising step;
    commits the pending chunk only; returns this chunk's velocities."""
    cf = p.video.shape[1]
    na = 0 if p.audio is None else p.audio.shape[1]
    kw = dict(kwargs, actions=torch.cat([p.kwargs["actions"], kwargs["actions"]], 1))
    out_v, out_a = model(video=torch.cat([p.video, video], 1), t_video=torch.cat([p.t, t_video], 1),
                         audio=None if p.audio is None else torch.cat([p.audio, audio], 1),
                         t_audio=None if p.audio is None else torch.cat([p.t, t_audio], 1),
                         cache=b.cache, start_frame=p.start_frame,
                         prev=None if prev is None else torch.cat([torch.zeros_like(p.video), prev], 1),
                         prev_level=None if prev_level is None else torch.cat([torch.zeros_like(p.t), prev_level], 1),
                         ground=ground, **kw)
    b.cache.commit(chunks=1)
    return out_v[:, cf:], (None if out_a is None else out_a[:, na:])


def _rows(rows: torch.Tensor | None, B: int, device) -> torch.Tensor:
    return torch.ones(B, dtype=torch.bool, device=device) if rows is None else rows


@torch.no_grad()
def generate_chunk(model: Omni, branches: list[Branch], cfg: RolloutConfig, cond: Conditioning, chunk: int,
                   video_shape: tuple[int, int, int], generator=None, given_video: torch.Tensor | None = None,
                   given: Given | None = None, noise: torch.Tensor | None = None,
                   commit: bool = True, defer: bool = False, ground=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Make chunk ``chunk`` (0-based) and commit it; returns (video (B, cf, C, h, w), audio or None).

    ``generator``: one torch.Generator, or one per batch row (batched streams). ``given_video``
    is shorthand for ``Given(video=...)`` on every row. ``noise`` (B, video + audio numbers)
    fixes the starting noise and ``commit=False`` leaves the caches as they were (distillation
    targets: the teacher's ODE endpoint from a known noise). ``defer=True`` leaves the commit
    to the next chunk's first pass (see the module's docstring). ``ground``: a ``move_reach`` model's
    ``engine.ground.Ground`` for these rows, which fills the strip each frame's move uncovers (without
    one, the border is repeated); rows given a picture start their ground anew.
    """
    mc = model.cfg
    B = cond.actions.shape[0]
    cf, tpf = mc.chunk_frames, mc.audio_tokens_per_frame
    C, h, w = video_shape
    frames = slice(chunk * cf, (chunk + 1) * cf)
    nv = cf * C * h * w
    na = cf * tpf * mc.audio_channels if mc.audio_channels else 0
    if given_video is not None:
        given = Given(video=given_video)
    dev = next(model.parameters()).device  # inputs move to the model; the noise is drawn on the CPU (flow.randn)
    given, cond = (given or Given()).to(dev), cond.to(dev)
    x = (randn((B, nv + na), generator=generator, device=dev) if noise is None
         else noise.reshape(B, nv + na).to(dev, copy=True))
    no = torch.zeros(B, dtype=torch.bool, device=dev)
    gv = _rows(given.video_rows, B, dev) if given.video is not None else no
    ga = _rows(given.audio_rows, B, dev) if given.audio is not None and na else no
    gb = _rows(given.blend_rows, B, dev) & ~gv if given.blend is not None else no
    if ground is not None and not mc.move_reach:
        raise ValueError("ground: only a model with a whole-pixel move head (move_reach) fills what its move uncovers")
    if branches[0].last_video is None:  # no previous frame (zeros) to move: nothing to fill, nothing to remember
        ground = None
    if cfg.prev_level > 0 and not mc.prev_level:
        raise ValueError(f"prev_level {cfg.prev_level}: this model was not trained to be told how degraded its previous "
                         "frame is (train the teacher with --prev-level); leave prev_level at 0")
    if cfg.prev_level > 0 and mc.prev_own:
        raise ValueError(f"prev_level {cfg.prev_level}: this model's level says whether the previous frame is its own "
                         "(it is set for you) and is never a degradation; leave prev_level at 0")
    prev = level = None  # every frame's previous finished frame (``previous_frames``), for a model that predicts around it
    if mc.prev_frame:
        last = branches[0].last_video
        prev = (torch.zeros(B, cf, C, h, w, device=dev) if last is None
                else last.to(dev)[:, None].expand(B, cf, C, h, w))
        if mc.prev_own and last is not None:  # the level says whose frame it is; nothing degrades it
            own = branches[0].last_own
            level = (torch.zeros(B, 1, device=dev) if own is None else own.to(dev).float()[:, None])
        elif cfg.prev_level > 0 and last is not None:  # (the zeros before a first chunk are not degraded)
            level = torch.full((B, 1), cfg.prev_level, device=dev)
            eps = randn((B, C * h * w), generator=generator, device=dev).view(B, 1, C, h, w)
            prev = degrade_at_level(prev, cf, level, eps, mc.prev_std, first=False)

    def unpack(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        v = z[:, :nv].view(B, cf, C, h, w)
        a = z[:, nv:].view(B, cf * tpf, mc.audio_channels) if na else None
        return v, a

    for b in branches:  # a deferred commit rides along with this chunk's first pass when it can
        p = b.pending
        if p is not None and (p.start_frame + cf != chunk * cf or p.kwargs["text"] is not b.kwargs(cond, frames)["text"]):
            flush(model, [b])

    def velocity(branch: Branch) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The branch's velocity (B, n); a stacked branch's, each group's rows after the other's (G * B, n)."""
        def fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            v, a = unpack(z)
            t = t.to(dev)
            tv = torch.where(gv, 0.0, t)[:, None]
            ta = torch.where(ga, 0.0, t)[:, None] if na else None
            v, a, tv, ta, pv, lv = (branch.rows(x) for x in (v, a, tv, ta, prev, level))
            kw = branch.kwargs(cond, frames)
            p, branch.pending = branch.pending, None
            if p is not None:
                out_v, out_a = _fused(model, branch, p, v, tv, a, ta, kw, pv, lv, ground)
            else:
                out_v, out_a = model(video=v, t_video=tv, audio=a, t_audio=ta, cache=branch.cache,
                                     start_frame=chunk * cf, prev=pv, prev_level=lv, ground=ground, **kw)
            return torch.cat([out_v.flatten(1)] + ([out_a.flatten(1)] if na else []), dim=1).float()  # ODE in fp32

        return fn

    # the most conditioned branch runs first: a move model's frame takes the move that branch names (``Ground``)
    fns = [velocity(b) for b in branches]
    if len(fns) == 1:
        inner = fns[0]
    elif len(fns) == 2:  # nothing, then text and text + actions stacked (``make_branches(stacked=True)``)
        def inner(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            vt, vb = fns[1](z, t).chunk(2)
            return guide(fns[0](z, t), vt, vb, cfg.text_scale, cfg.action_scale)
    else:
        def inner(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            vb = fns[2](z, t)
            vt = fns[1](z, t)
            return guide(fns[0](z, t), vt, vb, cfg.text_scale, cfg.action_scale)

    def keep_given(z: torch.Tensor) -> torch.Tensor:
        if gv.any() or ga.any():
            z = z.clone()
            if gv.any():
                z[gv, :nv] = given.video.flatten(1)[gv]
            if ga.any():
                z[ga, nv:] = given.audio.flatten(1)[ga]
        return z

    def fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(dev)
        z = keep_given(z)  # (a re-noising sampler may have moved them)
        out = inner(z, t)
        out[gv, :nv] = 0.0  # given parts do not move
        out[ga, nv:] = 0.0
        if gb.any():  # blended rows ride the straight line through the given latents while t > blend_t
            hold = gb & (t > given.blend_t)
            out[hold, :nv] = (z[hold, :nv] - given.blend.flatten(1)[hold]) / t[hold, None]
        return out

    z = keep_given(SAMPLERS[cfg.sampler](fn, x, time_grid(cfg.steps, cfg.shift), generator=generator))
    flush(model, branches)  # (a sampler that made no pass)
    if ground is not None and gv.any():  # a given picture: the ground it shows is new
        ground.forget(gv)
    video, audio = unpack(z)
    if not commit:
        return video, audio
    zero = torch.zeros(B, 1, device=dev)
    hv, ha, th = video, audio, zero
    if cfg.history_noise > 0 and not gv.any():  # generated history is trusted a little less than real
        th = torch.full((B, 1), cfg.history_noise, device=dev)
        eps = randn((B, nv + na), generator=generator, device=dev)
        hv = interpolate(video, eps[:, :nv].view_as(video), cfg.history_noise)
        ha = None if audio is None else interpolate(audio, eps[:, nv:].view_as(audio), cfg.history_noise)
    for b in branches:  # commit the chunk: its keys/values (clean, or lightly noised) become history
        b.last_video = video[:, -1]
        b.last_own = ~gv  # a given picture is real
        p = Pending(b.rows(hv), b.rows(ha), b.rows(th), chunk * cf, b.kwargs(cond, frames))
        if defer:
            b.pending = p
        else:
            _commit(model, b, p)
    return video, audio


@torch.no_grad()
def rollout(model: Omni, cfg: RolloutConfig, cond: Conditioning, n_chunks: int, video_shape: tuple[int, int, int],
            seed: int = 0, first_video: torch.Tensor | None = None,
            on_chunk: Callable[[int, torch.Tensor, torch.Tensor | None], None] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generate ``n_chunks`` chunks; returns all video latents (B, F, C, h, w) and audio latents."""
    g = torch.Generator().manual_seed(seed)
    branches = make_branches(model, cfg, stacked=True)
    vs, as_ = [], []
    for c in range(n_chunks):
        v, a = generate_chunk(model, branches, cfg, cond, c, video_shape, g, first_video if c == 0 else None, defer=True)
        vs.append(v)
        if a is not None:
            as_.append(a)
        if on_chunk is not None:
            on_chunk(c, v, a)
    return torch.cat(vs, 1), (torch.cat(as_, 1) if as_ else None)


@torch.no_grad()
def prefill(model: Omni, branches: list[Branch], cond: Conditioning, video: torch.Tensor,
            audio: torch.Tensor | None, own: bool = False) -> int:
    """Commit known clean chunks (e.g. real history, teacher forcing) into every branch's cache.

    video (B, F, C, h, w) with F a multiple of chunk_frames; returns the number of chunks committed.
    ``own``: its last frame is a model's own (a student's rollout), not a real one (``OmniConfig.prev_own``).

    One pass per branch over all the chunks: the pass applies the model's view (window, sinks,
    memory) as a mask, and the commit then evicts what left the window into the memory bank, so
    the cache ends as a chunk-by-chunk prefill leaves it, in one call instead of F / chunk_frames
    (tests/test_stream_view.py; a 16-chunk history was 48 guided teacher calls per distillation batch).
    """
    flush(model, branches)
    dev = next(model.parameters()).device
    cond, video, audio = cond.to(dev), video.to(dev), None if audio is None else audio.to(dev)
    mc = model.cfg
    cf = mc.chunk_frames
    n = video.shape[1] // cf
    if n:
        zero = torch.zeros(video.shape[0], n, device=video.device)
        frames = slice(0, n * cf)
        for b in branches:
            a = None if audio is None else b.rows(audio[:, : n * cf * mc.audio_tokens_per_frame])
            model(video=b.rows(video[:, : n * cf]), t_video=b.rows(zero), audio=a,
                  t_audio=b.rows(zero) if a is not None else None, cache=b.cache, start_frame=0, **b.kwargs(cond, frames))
            b.cache.commit()
    if n:
        for b in branches:
            b.last_video = video[:, n * cf - 1]
            b.last_own = torch.full((video.shape[0],), own, dtype=torch.bool, device=dev)
    return n


@torch.no_grad()
def own_rollout(student: Omni, cond: Conditioning, first_v: torch.Tensor, first_a: torch.Tensor | None,
                n_chunks: int, steps: int, generator: torch.Generator,
                prev_level: float = 0.0, sampler: str = "x0",
                history_noise: float = 0.0, ground=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A few-step student's own history for training: one real chunk, then ``n_chunks - 1`` of its
    own, as it streams them (its bounded view, ``steps`` steps of ``sampler``, the deferred commit,
    its previous frame degraded at ``prev_level``, its chunks committed at ``history_noise``, what its
    whole-pixel moves uncover filled by ``ground``): the history self-forcing distillation trains on."""
    rcfg = RolloutConfig(sampler=sampler, steps=steps, text_scale=1.0, action_scale=1.0, prev_level=prev_level,
                         history_noise=history_noise)
    branches = make_branches(student, rcfg)
    prefill(student, branches, cond, first_v, first_a)
    vs, as_ = [first_v], [] if first_a is None else [first_a]
    for c in range(1, n_chunks):
        v, a = generate_chunk(student, branches, rcfg, cond, c, tuple(first_v.shape[2:]), generator, defer=True,
                              ground=ground)
        vs.append(v)
        if a is not None:
            as_.append(a)
    return torch.cat(vs, 1), (torch.cat(as_, 1) if as_ else None)


@torch.no_grad()
def one_step_guesses(student: Omni, cond: Conditioning, video: torch.Tensor, audio: torch.Tensor | None,
                     steps: int, generator: torch.Generator, prev_level: float = 0.0,
                     chain: bool = False) -> torch.Tensor:
    """A few-step student's guess of every chunk from the real chunks before it (teacher forcing):
    video (B, F, C, h, w) real latents; returns guesses of the same shape, chunk 0 the real one
    (nothing comes before it). Each guess is exactly what a stream prefilled with the real chunks
    before it would make next: the real chunk, not the guess, is committed after each. One student
    pass a chunk (the deferred commit carries the real chunk along). These are the own previous
    frames an ``OmniConfig.prev_own`` teacher learns from. ``chain``: the previous frame the student
    is given is its own guess of it (told so to a ``prev_own`` student) while the cache stays real,
    so errors compound along the previous-frame path as in a stream, not along the history."""
    mc = student.cfg
    cf, tpf = mc.chunk_frames, mc.audio_tokens_per_frame
    rcfg = RolloutConfig(sampler="x0", steps=steps, text_scale=1.0, action_scale=1.0, prev_level=prev_level)
    branches = make_branches(student, rcfg)
    prefill(student, branches, cond, video[:, :cf], None if audio is None else audio[:, : cf * tpf])
    out = [video[:, :cf]]
    for c in range(1, video.shape[1] // cf):
        v, _ = generate_chunk(student, branches, rcfg, cond, c, tuple(video.shape[2:]), generator, defer=True)
        out.append(v.to(video.dtype))
        real_v = video[:, c * cf : (c + 1) * cf].to(v.device)
        real_a = None if audio is None else audio[:, c * cf * tpf : (c + 1) * cf * tpf].to(v.device)
        for b in branches:  # history stays real: commit the real chunk in place of the guess
            b.pending = dataclasses.replace(b.pending, video=real_v, audio=real_a)
            if not chain:
                b.last_video = real_v[:, -1]
                b.last_own = torch.zeros_like(b.last_own)
    return torch.cat(out, 1)
