"""The Omni transformer: one causal transformer over one token stream of every modality.

Token stream (one chunk = ``chunk_frames`` latent frames; shapes for one sample):

    [text prefix: Nt tokens]  [chunk 0: actions | video patches | audio tokens]  [chunk 1: ...]  ...

* Video latents (C, h, w) per latent frame become (h/p)(w/p) patch tokens; audio latents give
  ``audio_tokens_per_frame`` tokens per frame; each frame has one action token (id -1 = no
  action, a learned "null" embedding, which is also what conditioning dropout uses); text
  tokens are projected from the frozen text encoder (384 -> D).
* A learned modality embedding tells tokens apart; a 3-D rotary position (time, row, column)
  says where they are, so any resolution works without a fixed grid.
* Attention is block-causal: a token sees its own chunk fully, earlier chunks and the text
  prefix, never a later chunk. How far back it sees in full (the window), which first chunks
  stay (sinks) and which older chunks it retrieves pooled (memory) is the attention view
  (``model.attention``), set in this config and used the same way in training and streaming.
  Past chunks come from a bounded ``KVCache`` when streaming; training passes the whole clip
  through the same code.
* Each chunk and modality has its own noise level t (diffusion forcing, Chen et al. 2024); it
  conditions the tokens through adaLN-Zero (Peebles & Xie 2023, DiT sec. 3.2) together with the
  pooled text embedding. The model predicts flow-matching velocities for video and audio.
* The conditioning is the same for every token of one frame and modality, so it is made once per
  such *group* (a few rows, not one per token) and the adaLN projections, a third of a block's
  matmul work, run on the groups; tokens pick their group's modulation by index (by broadcast
  when a pass has one group, as a streamed one-frame chunk has).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.flow import velocity_around
from .attention import ViewContext, attend
from .cache import KVCache
from .rope import Rotation, rope_angles, rotate

VIDEO, AUDIO, ACTION, TEXT = range(4)  # modality ids


@dataclasses.dataclass(frozen=True)
class OmniConfig:
    """One config class from the test model to ~1B parameters."""

    width: int = 384  # D: model width
    depth: int = 8  # transformer blocks
    heads: int = 6  # attention heads (head dim = width / heads)
    mlp_ratio: float = 4.0
    latent_channels: int = 16  # video latent channels (from the video AE)
    patch: int = 1  # video latent patch size (p x p latents per token)
    chunk_frames: int = 1  # latent frames per chunk (the unit of causality and of streaming)
    audio_channels: int = 32  # audio latent channels (from the audio AE); 0 = no audio
    audio_tokens_per_frame: int = 2
    n_actions: int = 17  # action vocabulary size
    text_width: int = 384  # frozen text encoder width
    action_adaln: bool = True  # each frame's action also modulates its tokens (adaLN), as in DIAMOND / Oasis
    # the attention view (model.attention), the same in training and streaming
    window: int = 0  # chunks seen in full (own chunk included); 0 = unbounded
    sinks: int = 0  # first chunks kept forever (with sink_every: the sinks, refreshed)
    # > 0: every this many chunks the sinks become the chunks that last left the window
    # (``model.cache``), so a long stream that moves on is not held to its first frames
    sink_every: int = 0
    memory_tokens: int = 4  # pooled keys per chunk in the memory bank
    memory_topk: int = 0  # memory chunks each query chunk retrieves (0 = no memory); a budget when memory_p > 0
    memory_p: float = 0.0  # > 0: adaptive, keep the fewest chunks whose score mass reaches p (<= memory_topk)
    outside: int = 8  # frames: the time distance at which text, sinks and memory sit
    rope_theta: float = 10000.0
    # predict around the previous frame (``diffusion.flow.velocity_around``): a noisy frame's tokens
    # also see the last clean frame before its chunk, and the output is the frame's *change* from it,
    # preconditioned so that a zero output copies that frame. The plain velocity must rebuild the
    # frame from history through attention and reproduce its input noise exactly, and its one-step
    # guess did worse than a copy (log.md, fourteenth and fifteenth sessions)
    prev_frame: bool = False
    prev_std: float = 0.0  # std of a frame's change in the training latents (the preconditioning's sigma_data)
    # also told how degraded the previous frame is (``degrade_prev``'s level, per chunk): trained on
    # real frames degraded at random levels and streamed with its own frames degraded at one fixed
    # level, so a generated frame and a real one look alike to it (GameNGen, Valevski et al. 2024,
    # conditions on its context noise the same way). Unconditioned degradation sharpened every frame,
    # degraded or not (log.md, nineteenth session)
    prev_level: bool = False
    # the level says instead whether the previous frame is the stream's own (1) or a real one (0),
    # and nothing degrades it: trained on a student's one-step guesses of the previous frame from the
    # real history (``engine.rollout.one_step_guesses``), so the model learns the student's own loss
    # of detail rather than a stand-in for it (Self-Forcing, Huang et al. 2025, trains on the model's
    # own frames for the same reason; log.md, twenty-fourth session)
    prev_own: bool = False
    # predict around the previous frame *moved by a learned global shift* (``move_frames``): a small
    # head reads each frame's pooled output and says how far (in latent pixels, at most
    # ``PREV_SHIFT_MAX``) the view moved since the last frame, and the frame is predicted around the
    # moved copy. A scrolling view's next frame is the last one moved by a pixel or two: on a
    # shift-consistent latent (``--shift-weight``) that is a sub-cell bilinear move, which a copy
    # misses and the prev-frame network learnt only slowly (walks 18%; log.md, fifteenth and
    # eighteenth sessions). The global motion compensation of video codecs (MPEG-4 part 2's GMC)
    prev_shift: bool = False
    # > 0: predict around the previous frame moved by a *whole* number of latent pixels, a choice among every
    # move (dy, dx) in [-move_reach, move_reach]^2 (``move_grid``) made by a head on each frame's pooled tokens,
    # learnt by cross-entropy against the move that best explains the recorded frame (``best_move``) and taken
    # as its argmax in a stream. On a pixel model (``tokenizers.pixels``) a walking view scrolls by whole
    # pixels, so the moved frame keeps every grain of the ground it showed and the network draws only what
    # changed; the strip the move uncovers is filled by the stream's ``engine.ground.Ground`` (global motion
    # compensation, as video codecs predict a frame; log.md, forty-second to forty-fifth sessions)
    move_reach: int = 0
    # > 0: the side in pixels of the square at the frame's centre that stays where it was when the previous frame
    # moves: the camera follows the player, so the player's sprite does not scroll with the ground. Moved along,
    # the network had to put the sprite back every frame and a fraction it missed each time added up to a player
    # drifting off centre with ghosts behind it (forty-fifth session). 8 = the overworld's tile, its sprite's box.
    # Measured, not adopted: the player stays, but the pixels held where the move carried it leave trails (log.md,
    # forty-sixth session)
    hold_centre: int = 0
    # > 0: the move head also reads the move_near x move_near patch tokens at the frame's centre, not only the
    # frame's mean: what stops a step (water, a rock next to the player) is there, and a mean over the whole
    # frame dilutes it to a sixty-fourth (stops were 0 of 61 with the mean alone; still 0 of 61 with 2 x 2 in a
    # 752-step fine-tune, forty-sixth session: measured, not adopted)
    move_near: int = 0

    def __post_init__(self) -> None:
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"width {self.width} / heads {self.heads} must give an even head dim")
        if self.prev_frame and self.prev_std <= 0:
            raise ValueError("prev_frame needs prev_std > 0: the std of a frame's change in the training latents")
        if self.prev_level and not self.prev_frame:
            raise ValueError("prev_level conditions on the previous frame's degradation: it needs prev_frame")
        if self.prev_own and not self.prev_level:
            raise ValueError("prev_own tells the model through its level input whether the previous frame is its own: "
                             "it needs prev_level")
        if self.prev_shift and not self.prev_frame:
            raise ValueError("prev_shift moves the previous frame the model predicts around: it needs prev_frame")
        if self.move_reach < 0 or (self.move_reach and not self.prev_frame) or (self.move_reach and self.prev_shift):
            raise ValueError(f"move_reach {self.move_reach}: a whole-pixel move of the previous frame needs prev_frame "
                             "and replaces prev_shift; give 0 (none) or a reach of 1 or more pixels")
        if self.hold_centre < 0 or self.move_near < 0 or ((self.hold_centre or self.move_near) and not self.move_reach):
            raise ValueError(f"hold_centre {self.hold_centre}, move_near {self.move_near}: a held centre and a head "
                             "that reads the centre's tokens belong to a whole-pixel move (move_reach); give 0 or more")


def omni_preset(name: str) -> OmniConfig:
    presets = {
        "tiny": OmniConfig(width=64, depth=2, heads=2, latent_channels=8, audio_channels=8),
        "tiny_pixel": OmniConfig(width=64, depth=2, heads=2, latent_channels=3, audio_channels=8, patch=8),
        "default": OmniConfig(width=256, depth=8, heads=4, patch=2),  # ~9M, 64 tokens per 16x16 latent frame
        "pixel": OmniConfig(width=256, depth=8, heads=4, patch=16),  # the same on 128x128 pixels (``tokenizers.pixels``)
        "1b": OmniConfig(width=2048, depth=14, heads=16, latent_channels=32, patch=2),
    }
    if name not in presets:
        raise ValueError(f"unknown Omni preset {name!r}; choose from {sorted(presets)}")
    return presets[name]


def previous_frames(video: torch.Tensor, chunk_frames: int, before: torch.Tensor | None = None) -> torch.Tensor:
    """For every frame of video (B, F, C, h, w), the last frame of the chunk before its own
    (``OmniConfig.prev_frame``): the newest clean frame a stream has when it makes that chunk.
    The first chunk's is ``before`` (B, C, h, w), or zeros (nothing before it)."""
    lasts = video[:, chunk_frames - 1 :: chunk_frames]  # (B, K, C, h, w)
    first = torch.zeros_like(lasts[:, :1]) if before is None else before[:, None].to(video.dtype)
    return torch.cat([first, lasts[:, :-1]], 1).repeat_interleave(chunk_frames, dim=1)


PREV_SHIFT_MAX = 0.5  # latent pixels (4 px of an f8 frame): the game scrolls 1-2 px a frame walking or running


def move_frames(z: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Frames ``z`` (B, F, C, h, w) whose content moved by ``shift`` (B, F, 2) latent pixels (dy, dx),
    the border repeated: out[i, j] = z[i - dy, j - dx]; whole pixels by index (exact: a scrolling
    view's texture kept as it was), the rest bilinear. Differentiable in the fractional part of
    ``shift`` (``OmniConfig.prev_shift``), and the latent move ``train.autoencoder.shift_latent``
    teaches a shift-consistent autoencoder to match."""
    dt = z.dtype
    z, shift = z.float(), shift.float()
    whole = shift.round()
    if (whole != 0).any():  # out[i] = z[clamp(i - n)] for the whole part n, per frame
        h, w = z.shape[-2:]
        iy = (torch.arange(h, device=z.device) - whole[..., :1].long()).clamp(0, h - 1)  # (B, F, h)
        ix = (torch.arange(w, device=z.device) - whole[..., 1:].long()).clamp(0, w - 1)  # (B, F, w)
        C = z.shape[2]
        z = z.gather(3, iy[:, :, None, :, None].expand(-1, -1, C, -1, w))
        z = z.gather(4, ix[:, :, None, None, :].expand(-1, -1, C, h, -1))
        shift = shift - whole

    def along(z: torch.Tensor, d: torch.Tensor, dim: int) -> torch.Tensor:
        n = z.shape[dim]
        before = torch.cat([z.narrow(dim, 0, 1), z.narrow(dim, 0, n - 1)], dim)  # z[i - 1]
        after = torch.cat([z.narrow(dim, 1, n - 1), z.narrow(dim, n - 1, 1)], dim)  # z[i + 1]
        d = d[:, :, None, None, None]
        return z + d.clamp_min(0) * (before - z) + (-d).clamp_min(0) * (after - z)

    return along(along(z, shift[..., 0], 3), shift[..., 1], 4).to(dt)


def move_grid(reach: int) -> torch.Tensor:
    """(candidates, 2) every whole-pixel move (dy, dx) in [-reach, reach]^2, row-major (none in the middle)."""
    r = torch.arange(-reach, reach + 1, dtype=torch.float32)
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)


def centre_square(h: int, w: int, side: int) -> tuple[slice, slice]:
    """Rows and columns of the ``side`` x ``side`` square at the centre of an h x w frame, where a camera that
    follows the player draws it (the overworld: pixels h/2 - side/2 to h/2 + side/2)."""
    if side > min(h, w):
        raise ValueError(f"a held centre of {side} px does not fit a {h} x {w} frame")
    return slice((h - side) // 2, (h + side) // 2), slice((w - side) // 2, (w + side) // 2)


def centre_tokens(tokens: torch.Tensor, gh: int, gw: int, n: int) -> torch.Tensor:
    """(B, F, n * n * D): the n x n tokens at the centre of each frame's gh x gw grid of ``tokens``
    (B, F, gh * gw, D), in order, so a head sees which side of the player each lies on."""
    if n > min(gh, gw):
        raise ValueError(f"move_near {n}: more tokens than a {gh} x {gw} grid holds")
    B, Fr, _, D = tokens.shape
    ys, xs = centre_square(gh, gw, n)
    return tokens.view(B, Fr, gh, gw, D)[:, :, ys, xs].reshape(B, Fr, n * n * D)


def best_move(prev: torch.Tensor, target: torch.Tensor, reach: int, hold: int = 0) -> torch.Tensor:
    """Index into ``move_grid(reach)`` of the whole-pixel move of ``prev`` (B, C, h, w) that brings it closest
    to ``target``, judged inside a ``reach``-pixel margin (the repeated border is not evidence) and outside the
    ``hold`` x ``hold`` centre and the places a move carries it (the player, who does not move with the ground:
    ``OmniConfig.hold_centre``)."""
    h, w = prev.shape[-2:]
    r = reach
    prev, target = prev.float(), target[..., r : h - r, r : w - r].float()
    weight = torch.ones(h - 2 * r, w - 2 * r, device=prev.device)
    if hold:  # the square and every place a move of at most ``reach`` carries it (``Omni.move_previous`` keeps those)
        ys, xs = centre_square(h, w, hold)
        weight[max(0, ys.start - 2 * r) : ys.stop, max(0, xs.start - 2 * r) : xs.stop] = 0
    # inside the margin a move is a shifted slice: moved[i, j] = prev[i - dy, j - dx] (``move_frames``, exact)
    err = torch.stack([((prev[..., r - dy : h - r - dy, r - dx : w - r - dx] - target).square() * weight).sum((1, 2, 3))
                       for dy, dx in move_grid(reach).long().tolist()], 1)
    return err.argmin(1).to(prev.device)


PREV_NOISE_MAX = 0.5  # noise added to a previous frame at degradation level 1, in units of the frame change's std


def degrade_prev(prev: torch.Tensor, chunk_frames: int, blur: torch.Tensor, noise: torch.Tensor, eps: torch.Tensor,
                 std: float, first: bool = True) -> torch.Tensor:
    """Previous frames (B, F, C, h, w) as ``previous_frames`` gives them, each chunk's moved toward its
    3x3 local mean by ``blur`` and noised by ``noise`` x ``std`` with ``eps`` (B, K, C, h, w); ``blur``
    and ``noise`` are (B,) per clip or (B, K) per chunk, in [0, 1]. A 1-step student regresses toward
    the mean of the futures it cannot tell apart, so its frames come out smoothed; GameNGen
    (Valevski et al. 2024) noises the context for the same reason. ``first``: ``prev`` starts at a
    clip's first chunk, whose previous frame (zeros: none before it) is left as it is."""
    lasts = prev[:, ::chunk_frames].float()  # (B, K, C, h, w)
    B, K = lasts.shape[:2]
    flat = lasts.flatten(0, 1)
    smooth = F.avg_pool2d(flat, 3, stride=1, padding=1, count_include_pad=False).view_as(lasts)
    b, n = (x.reshape(B, -1, 1, 1, 1).to(lasts) for x in (blur, noise))
    out = torch.lerp(lasts, smooth, b) + n * std * eps.to(lasts)
    if first:
        out[:, 0] = lasts[:, 0]
    return out.to(prev.dtype).repeat_interleave(chunk_frames, dim=1)


def degrade_at_level(prev: torch.Tensor, chunk_frames: int, level: torch.Tensor, eps: torch.Tensor,
                     std: float, first: bool = True) -> torch.Tensor:
    """``degrade_prev`` at one level per chunk (B, K): blur ``level``, noise ``level`` x PREV_NOISE_MAX
    (``OmniConfig.prev_level``)."""
    return degrade_prev(prev, chunk_frames, level, level * PREV_NOISE_MAX, eps, std, first)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of noise levels t in [0, 1] (scaled by 1000 as in DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero modulation per token group."""

    def __init__(self, cfg: OmniConfig):
        super().__init__()
        D = cfg.width
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(D, 3 * D)
        self.q_norm = nn.RMSNorm(D // cfg.heads, eps=1e-6)  # QK-norm keeps attention logits tame
        self.k_norm = nn.RMSNorm(D // cfg.heads, eps=1e-6)
        self.proj = nn.Linear(D, D)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        hidden = int(D * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, D))
        self.ada = nn.Linear(D, 6 * D)
        nn.init.zeros_(self.ada.weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, group: torch.Tensor | None, rot: Rotation,
                ctx: ViewContext, cache: KVCache | None, layer: int) -> torch.Tensor:
        """x (B, N, D); cond (B, G, D) per conditioning group, ``group`` (N,) each token's group
        (None: one group, broadcast)."""
        q, k, v, mod = self.before_attention(x, cond, group, rot.cos, rot.sin)
        a = attend(q, k, v, ctx, cache, layer)  # (B, H, N, Dh)
        return self.after_attention(x, mod, a)

    # The dense parts of a block, apart from the attention view's bookkeeping, so a streaming copy
    # can compile them (``compile_dense``): on a 2-core CPU a streamed chunk is a few hundred
    # small ops per block, and their dispatch, not the matmuls, is most of its time.
    def before_attention(self, x: torch.Tensor, cond: torch.Tensor, group: torch.Tensor | None, cos: torch.Tensor,
                         sin: torch.Tensor):
        B, N, D = x.shape
        H = self.heads
        mod = self.ada(F.silu(cond))
        if group is not None:
            mod = mod[:, group]
        shift1, scale1 = mod[..., :D], mod[..., D : 2 * D]
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).view(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each (B, H, N, Dh)
        return rotate(self.q_norm(q), cos, sin), rotate(self.k_norm(k), cos, sin), v, mod  # row/column only

    def after_attention(self, x: torch.Tensor, mod: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        gate1, shift2, scale2, gate2 = mod[..., 2 * D :].chunk(4, dim=-1)
        x = x + gate1 * self.proj(a.transpose(1, 2).reshape(B, N, D))
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class Omni(nn.Module):
    def __init__(self, cfg: OmniConfig):
        super().__init__()
        self.cfg = cfg
        D, p = cfg.width, cfg.patch
        self.video_in = nn.Linear(cfg.latent_channels * p * p, D)
        # the previous frame's patches, weighted by the noise level (clean tokens do not need it);
        # zero at the start so a plain checkpoint fine-tunes from where it stood
        self.prev_in = nn.Linear(cfg.latent_channels * p * p, D) if cfg.prev_frame else None
        # the previous frame's degradation level, into a video token's conditioning (weighted like prev_in)
        self.prev_level_in = nn.Linear(D, D) if cfg.prev_level else None
        # how far the view moved since the previous frame (dy, dx), from a frame's pooled output tokens
        self.prev_shift_out = nn.Linear(D, 2) if cfg.prev_shift else None
        # or which whole-pixel move (``move_reach``): logits over ``move_grid``, from the trunk's pooled frame tokens
        self.move_head = nn.Linear(D, (2 * cfg.move_reach + 1) ** 2) if cfg.move_reach else None
        # the tokens around the player, for the same logits (zero at the start: a fine-tune starts where it stood)
        self.move_near = nn.Linear(cfg.move_near**2 * D, (2 * cfg.move_reach + 1) ** 2) if cfg.move_near else None
        if self.move_near is not None:
            nn.init.zeros_(self.move_near.weight)
            nn.init.zeros_(self.move_near.bias)
        if cfg.move_reach:
            self.register_buffer("moves", move_grid(cfg.move_reach), persistent=False)
        self.audio_in = nn.Linear(cfg.audio_channels, D) if cfg.audio_channels else None
        self.action_emb = nn.Embedding(cfg.n_actions + 1, D)  # last id: no action / dropped
        self.action_cond = nn.Embedding(cfg.n_actions + 1, D) if cfg.action_adaln else None
        self.text_in = nn.Linear(cfg.text_width, D)
        self.text_pool = nn.Linear(cfg.text_width, D)
        self.modality = nn.Embedding(4, D)
        self._layouts: dict = {}  # (K, h, w) -> token layout at start frame 0
        self._rotations: dict = {}  # pass shape -> its rotary cos/sin, made once (``_context``, ``_blocks``)
        self.streamed_attention = None  # a compiled ``attention.streamed_attention`` (``compile_dense``); None: eager
        self.streamed_memory = None  # likewise ``attention.streamed_memory``
        self.t_mlp = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.out_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.out_ada = nn.Linear(D, 2 * D)
        self.video_out = nn.Linear(D, cfg.latent_channels * p * p)
        self.audio_out = nn.Linear(D, cfg.audio_channels) if cfg.audio_channels else None
        for m in (self.out_ada, self.video_out, self.audio_out, self.prev_in, self.prev_level_in, self.prev_shift_out):
            if m is not None:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    # -- token layout ------------------------------------------------------------------------------
    def layout(self, K: int, h: int, w: int, start_frame: int) -> tuple:
        """Per-token (modality, chunk index, position (t, row, col)) for K chunks of one sample, and
        the conditioning groups (one frame, one modality) as (each token's group, each group's frame
        within the pass, whether it is audio)."""
        if (K, h, w) not in self._layouts:  # made once per shape: a stream asks for the same one every pass
            mods, chunks, pos = self._layout(K, h, w)
            key = pos[:, 0] * 2 + (mods == AUDIO).long()
            g_key, g_stream = torch.unique(key, return_inverse=True)
            self._layouts[(K, h, w)] = (mods, chunks, pos, (g_stream, g_key // 2, g_key % 2 == 1))
        mods, chunks, pos, grp = self._layouts[(K, h, w)]
        if start_frame:
            pos = pos.clone()
            pos[:, 0] += start_frame
        return mods, chunks, pos, grp

    def _layout(self, K: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, p = self.cfg, self.cfg.patch
        gh, gw = h // p, w // p
        mods, chunks, pos = [], [], []
        for c in range(K):
            for f in range(cfg.chunk_frames):
                t = c * cfg.chunk_frames + f
                mods.append(torch.tensor([ACTION])), chunks.append(torch.tensor([c])), pos.append(torch.tensor([[t, 0, 0]]))
                rr, cc = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
                n = gh * gw
                mods.append(torch.full((n,), VIDEO)), chunks.append(torch.full((n,), c))
                pos.append(torch.stack([torch.full((n,), t), rr.flatten(), cc.flatten()], dim=1))
                if cfg.audio_channels:
                    a = cfg.audio_tokens_per_frame
                    mods.append(torch.full((a,), AUDIO)), chunks.append(torch.full((a,), c))
                    pos.append(torch.stack([torch.full((a,), t), torch.zeros(a, dtype=torch.long), torch.arange(a)], dim=1))
        return torch.cat(mods), torch.cat(chunks), torch.cat(pos)

    def forward(self, video: torch.Tensor, t_video: torch.Tensor, actions: torch.Tensor,
                audio: torch.Tensor | None = None, t_audio: torch.Tensor | None = None,
                text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                text_pooled: torch.Tensor | None = None, cache: KVCache | None = None,
                start_frame: int = 0, prev: torch.Tensor | None = None,
                prev_level: torch.Tensor | None = None, move: torch.Tensor | None = None,
                ground=None, return_moves: bool = False) -> tuple:
        """Velocities for K chunks.

        video (B, F, C, h, w) noisy latents with F = K * chunk_frames; t_video (B, K) per-chunk
        noise level; actions (B, F) ids (-1 = none); audio (B, F * audio_tokens_per_frame, Ca)
        and t_audio (B, K); text (B, Nt, 384) per-token embeddings with mask (B, Nt) and pooled
        (B, 384). With a cache, the text prefix is read from it when it holds one, and these
        chunks follow the cached ones (``start_frame`` = frames already generated). ``prev``
        (B, F, C, h, w): each frame's previous clean frame (``previous_frames``), for a
        ``prev_frame`` model; None = zeros (no previous frame; a clean pass does not need it).
        ``prev_level`` (B, K): how degraded each chunk's ``prev`` is (``degrade_at_level``), for a
        ``prev_level`` model; None = 0 (a clean previous frame).
        A ``move_reach`` model moves each ``prev`` by ``move`` (B, F, 2) whole latent pixels when given
        (training: the best move, ``best_move``), else by its head's choice; ``ground`` (an
        ``engine.ground.Ground``) fills what the move uncovers in the frames this pass makes (t > 0).
        Returns (v_video like video, v_audio like audio or None), and with ``return_moves`` the move
        head's logits (B, F, candidates) too (None without one).
        """
        cfg, p = self.cfg, self.cfg.patch
        B, Fr, C, h, w = video.shape
        if Fr % cfg.chunk_frames or h % p or w % p or C != cfg.latent_channels:
            raise ValueError(f"video latents {tuple(video.shape)} do not fit: need (B, K*{cfg.chunk_frames}, "
                             f"{cfg.latent_channels}, h, w) with h, w multiples of {p}")
        K = Fr // cfg.chunk_frames
        if cfg.audio_channels and audio is None:
            raise ValueError("this model has audio tokens: pass audio latents (zeros and t_audio=1 to generate them)")
        mods, chunk_of, pos, groups = self.layout(K, h, w, start_frame)
        dev = video.device
        mods, chunk_of, pos, groups = mods.to(dev), chunk_of.to(dev), pos.to(dev), tuple(g.to(dev) for g in groups)
        g_stream = groups[0]
        if prev is not None and prev.shape != video.shape:
            raise ValueError(f"prev {tuple(prev.shape)} must match video {tuple(video.shape)}")
        if not cfg.prev_frame:
            prev = None
        elif prev is None:
            prev = torch.zeros_like(video)
        if prev_level is not None and prev_level.shape != t_video.shape:
            raise ValueError(f"prev_level {tuple(prev_level.shape)} must match t_video {tuple(t_video.shape)}: one per chunk")
        if self.prev_level_in is None or prev is None:
            prev_level = None
        elif prev_level is None:
            prev_level = torch.zeros_like(t_video)
        x, cond = self._embed(video, actions, audio, t_video, t_audio, text_pooled, mods, *groups[1:], prev=prev,
                              prev_level=prev_level)
        n_stream, n_groups = x.shape[1], cond.shape[1]
        group = g_stream
        # the text prefix goes into this pass unless the cache already holds the prompt
        n_text = 0
        if text is not None and (cache is None or not cache.has_text):
            tx, tcond = self._text_tokens(text, text_pooled)
            n_text = text.shape[1]
            x, cond = torch.cat([tx, x], dim=1), torch.cat([tcond, cond], dim=1)
            group = torch.cat([torch.zeros(n_text, dtype=g_stream.dtype, device=g_stream.device), g_stream + 1])
        first_chunk = cache.n_chunks if cache is not None else start_frame // cfg.chunk_frames
        ctx = self._context(first_chunk + chunk_of, pos[:, 0], start_frame, n_text,
                            text_mask if n_text else None, B, x.device, layout=(K, h, w))
        if cache is not None:
            cache.stage_info(first_chunk + chunk_of, pos[:, 0], ctx.text_valid if n_text else None)
        pos_sp = torch.cat([torch.zeros(n_text, 3, dtype=pos.dtype, device=pos.device), pos])
        x = self._blocks(x, cond, None if cond.shape[1] == 1 else group, pos_sp, ctx, cache, layout=(K, h, w, n_text))
        vv, va, moved, logits = self._head(x[:, x.shape[1] - n_stream :], cond[:, cond.shape[1] - n_groups :],
                                           g_stream, Fr, h, w)
        if prev is not None:
            t = t_video.repeat_interleave(cfg.chunk_frames, dim=1)[:, :, None, None, None].float()
            if logits is not None:
                if move is not None and move.shape != (B, Fr, 2):
                    raise ValueError(f"move {tuple(move.shape)} must be ({B}, {Fr}, 2): one whole-pixel move per frame")
                moved = self.moves[logits.argmax(-1)] if move is None else move.to(logits)
            if moved is not None:
                prev = self.move_previous(prev, moved, t, ground, start_frame, cfg.hold_centre)
            vv = velocity_around(vv, video, prev, t, cfg.prev_std)
        return (vv, va, logits) if return_moves else (vv, va)

    @staticmethod
    def move_previous(prev: torch.Tensor, moved: torch.Tensor, t: torch.Tensor, ground=None,
                      first_frame: int = 0, hold: int = 0) -> torch.Tensor:
        """The previous frames (B, F, C, h, w) moved by ``moved`` (B, F, 2) before the output is added; ``t``
        (B, F, 1, 1, 1) their noise levels. With a ``ground``, the frames this pass makes (t > 0; frame
        ``first_frame + f``) get the strip their whole-pixel move uncovers filled from it. ``hold``: the side of
        the square at the centre kept where it was (``OmniConfig.hold_centre``)."""
        out = move_frames(prev, moved)
        if ground is not None:
            out = out.clone()
            for f in range(prev.shape[1]):
                if bool((t[:, f] > 0).any()):
                    out[:, f] = ground.fill(first_frame + f, prev[:, f], moved[:, f], out[:, f])
        if hold:  # the square stays, and where the move carried its pixels the previous frame stays too: no ghost
            ys, xs = centre_square(*prev.shape[-2:], hold)
            square = torch.zeros(*prev.shape[:2], 1, *prev.shape[-2:], device=prev.device)
            square[..., ys, xs] = 1.0
            keep = (square + move_frames(square, moved)) > 0
            out = torch.where(keep, prev.to(out.dtype), out)
        return out

    # The pass's embedding of its tokens and its output head: pure tensor functions, so a streaming
    # copy compiles them like the blocks' dense parts (``compile_dense``).
    def _embed(self, video: torch.Tensor, actions: torch.Tensor, audio: torch.Tensor | None, t_video: torch.Tensor,
               t_audio: torch.Tensor | None, text_pooled: torch.Tensor | None, mods: torch.Tensor,
               g_frame: torch.Tensor, g_audio: torch.Tensor, prev: torch.Tensor | None = None,
               prev_level: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stream tokens x (B, N, D) and the conditioning of each group (B, G, D)."""
        cfg, p = self.cfg, self.cfg.patch
        B, Fr, C, h, w = video.shape
        gh, gw = h // p, w // p
        D = cfg.width

        def patches(z: torch.Tensor) -> torch.Tensor:  # (B, F, gh*gw, C*p*p)
            return z.reshape(B, Fr, C, gh, p, gw, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(B, Fr, gh * gw, C * p * p)

        # tokens per frame: video patches (B, F, gh*gw, D)
        vt = self.video_in(patches(video))
        if prev is not None:
            t_frame = t_video.repeat_interleave(cfg.chunk_frames, dim=1)[:, :, None, None]
            vt = vt + t_frame.to(vt.dtype) * self.prev_in(patches(prev))
        action_ids = torch.where(actions < 0, cfg.n_actions, actions)
        at = self.action_emb(action_ids)[:, :, None]  # (B, F, 1, D)
        per_frame = [at, vt]
        if cfg.audio_channels:
            per_frame.append(self.audio_in(audio.view(B, Fr, cfg.audio_tokens_per_frame, -1)))
        x = torch.cat(per_frame, dim=2).reshape(B, -1, D)  # (B, K * tokens_per_chunk, D)
        x = x + self.modality(mods)[None]
        # conditioning per group (one frame, one modality): its chunk's noise level for its modality
        # (actions follow video), the frame's action, the pooled text
        g_chunk = g_frame // cfg.chunk_frames
        t_g = t_video[:, g_chunk]
        if cfg.audio_channels:
            t_g = torch.where(g_audio[None], t_audio[:, g_chunk], t_g)
        cond = self.t_mlp(timestep_embedding(t_g, D))  # (B, G, D)
        if prev_level is not None:  # video groups only, weighted by their noise level: clean tokens ignore prev
            w = torch.where(g_audio[None], 0.0, t_g)[..., None]
            cond = cond + w.to(cond.dtype) * self.prev_level_in(timestep_embedding(prev_level[:, g_chunk], D))
        if self.action_cond is not None:  # a token of frame f is modulated by the action of frame f
            cond = cond + self.action_cond(action_ids)[:, g_frame]
        if text_pooled is not None:
            cond = cond + self.text_pool(text_pooled)[:, None]
        return x, cond

    def _head(self, x: torch.Tensor, cond: torch.Tensor, g_stream: torch.Tensor, Fr: int, h: int,
              w: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The stream tokens' velocities: video (B, F, C, h, w), audio (B, F * tokens, Ca) or None,
        a ``prev_shift`` model's move of each frame's previous frame (B, F, 2), else None, and a ``move_reach``
        model's logits over its whole-pixel moves (B, F, candidates), else None."""
        cfg, p = self.cfg, self.cfg.patch
        B, _, D = x.shape
        C, gh, gw = cfg.latent_channels, h // p, w // p
        mod = self.out_ada(F.silu(cond))
        if cond.shape[1] > 1:
            mod = mod[:, g_stream]
        shift, scale = mod.chunk(2, dim=-1)
        x_in = x
        x = self.out_norm(x) * (1 + scale) + shift
        per_chunk = x.view(B, Fr, -1, D)
        vv = self.video_out(per_chunk[:, :, 1 : 1 + gh * gw])  # (B, F, gh*gw, C*p*p)
        logits = None
        if self.move_head is not None:  # from the trunk's tokens, before the output's modulation
            frame_tokens = x_in.view(B, Fr, -1, D)[:, :, 1 : 1 + gh * gw]
            logits = self.move_head(frame_tokens.mean(2).float())
            if self.move_near is not None:
                logits = logits + self.move_near(centre_tokens(frame_tokens, gh, gw, cfg.move_near).float())
        moved = None  # (not the adaLN shift above)
        if self.prev_shift_out is not None:
            moved = PREV_SHIFT_MAX * torch.tanh(self.prev_shift_out(per_chunk[:, :, 1 : 1 + gh * gw].mean(2)).float())
        vv = vv.view(B, Fr, gh, gw, C, p, p).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Fr, C, h, w)
        va = None
        if cfg.audio_channels:
            va = self.audio_out(per_chunk[:, :, 1 + gh * gw :]).reshape(B, Fr * cfg.audio_tokens_per_frame, -1)
        return vv, va, moved, logits

    def _text_tokens(self, text: torch.Tensor, text_pooled: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt's tokens (B, Nt, D) and their one conditioning group (B, 1, D)."""
        B, Nt, _ = text.shape
        D = self.cfg.width
        tx = self.text_in(text) + self.modality.weight[TEXT]
        cond = self.t_mlp(timestep_embedding(torch.zeros(B, 1, device=text.device), D))
        if text_pooled is not None:
            cond = cond + self.text_pool(text_pooled)[:, None]
        return tx, cond

    def _context(self, chunk_of: torch.Tensor, time_of: torch.Tensor, t_ref: int, n_text: int,
                 text_mask: torch.Tensor | None, B: int, device, layout: tuple | None = None) -> ViewContext:
        """The view of one pass. ``layout`` (K, h, w): the pass's token layout, whose time rotations
        (relative to the pass's first frame) are the same in every pass of that shape, so they are
        made once (a stream makes the same pass forever)."""
        cfg = self.cfg
        Dh = cfg.width // cfg.heads

        def time_angles(t: torch.Tensor) -> torch.Tensor:
            z = torch.zeros_like(t)
            return rope_angles(torch.stack([t - t_ref, z, z], dim=1), Dh, cfg.rope_theta)

        if n_text and text_mask is None:
            text_mask = torch.ones(B, n_text, dtype=torch.bool, device=device)
        key = ("time", layout, str(device))
        rot = self._rotations.get(key) if layout is not None else None
        if rot is None:
            outside = torch.tensor([t_ref - cfg.outside], device=device)
            rot = (Rotation(time_angles(time_of)), Rotation(time_angles(outside)))
            if layout is not None:
                self._rotations[key] = rot
        return ViewContext(n_text=n_text, text_valid=text_mask, chunk_of=chunk_of, rot_q=rot[0], rot_outside=rot[1],
                           time_angles=time_angles, sinks=cfg.sinks, window=cfg.window, memory_tokens=cfg.memory_tokens,
                           memory_topk=cfg.memory_topk, memory_p=cfg.memory_p,
                           streamed=self.streamed_attention, memory=self.streamed_memory)

    def _blocks(self, x: torch.Tensor, cond: torch.Tensor, group: torch.Tensor | None, pos: torch.Tensor,
                ctx: ViewContext, cache: KVCache | None, layout: tuple | None = None) -> torch.Tensor:
        """Run the blocks; ``pos`` rotates by row and column here, time is the attention view's job.
        ``layout`` (K, h, w, text tokens) names the pass's shape: its rotation is made once."""
        key = ("space", layout, str(x.device))
        rot = self._rotations.get(key) if layout is not None else None
        if rot is None:
            pos = pos.clone()
            pos[:, 0] = 0
            rot = Rotation(rope_angles(pos, self.cfg.width // self.cfg.heads, self.cfg.rope_theta))
            if layout is not None:
                self._rotations[key] = rot
        for i, block in enumerate(self.blocks):
            x = block(x, cond, group, rot, ctx, cache, i)
        return x

    def compile_dense(self) -> "Omni":
        """Compile the dense parts of every block, of a streamed pass's attention, and the pass's
        token embedding and output head with ``torch.compile`` (inductor), for streaming: they are
        shape-stable once a stream's cache has filled, and fusing their small ops is what makes a
        chunk fast on a CPU (a teacher's training step compiles them too: ``--compile``). The
        attention view's bookkeeping stays eager. Returns self; compilation happens at the first
        passes."""
        import torch._dynamo

        from .attention import streamed_attention, streamed_memory

        # automatic dynamic shapes (``dynamic=None``): a size that changes (the window and the bank
        # filling, a prompt's length) is compiled once as a symbol, so a new prompt or stream does not
        # recompile (measured: 18 s of warm-up, then 37 ms for a first chunk with a new prompt; static
        # shapes took 29 s and 3 s per new prompt length, at the same speed per chunk)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        if next(self.parameters()).device.type == "cuda":
            # Inductor's tiling analysis asserts on one of streamed_memory's fused reductions on CUDA
            # (torch 2.11, an H200: `get_pw_red_splits`, pytorch/pytorch#197077); its two paths
            # there are turned off. Not yet measured here (log.md, twelfth session)
            import torch._inductor.config as inductor

            inductor.loop_reindexing_after_fusion = False
            inductor.triton.coalesce_tiling_analysis = False
        self.streamed_attention = torch.compile(streamed_attention, dynamic=None)
        self.streamed_memory = torch.compile(streamed_memory, dynamic=None)
        self._embed = torch.compile(self._embed, dynamic=None)
        self._head = torch.compile(self._head, dynamic=None)
        for b in self.blocks:
            b.before_attention = torch.compile(b.before_attention, dynamic=None)
            b.after_attention = torch.compile(b.after_attention, dynamic=None)
        return self

    def new_cache(self, memory_chunks: int = 256) -> KVCache:
        """An empty cache bounded by this model's attention view; ``memory_chunks`` caps the bank."""
        c = self.cfg
        return KVCache(len(self.blocks), sinks=c.sinks, window=c.window,
                       memory_chunks=memory_chunks if c.memory_topk and c.window else 0, memory_tokens=c.memory_tokens,
                       sink_every=c.sink_every if c.window else 0)

    @torch.no_grad()
    def encode_prompt(self, cache: KVCache, text: torch.Tensor, text_mask: torch.Tensor | None,
                      text_pooled: torch.Tensor | None) -> None:
        """Put a (new) prompt into a cache: its tokens attend only to each other, so this equals
        the prefix a stream started with this prompt would have; the chunks already cached keep
        theirs (re-commit them to re-encode them under the new prompt)."""
        tx, cond = self._text_tokens(text, text_pooled)
        B, Nt = text.shape[:2]
        empty = torch.zeros(0, dtype=torch.long, device=text.device)
        ctx = self._context(empty, empty, 0, Nt, text_mask, B, text.device)
        cache.text = [None] * cache.n_layers  # the pass below must not read the old prompt
        cache.stage_info(empty, empty, ctx.text_valid)
        self._blocks(tx, cond, None, torch.zeros(Nt, 3, dtype=torch.long, device=text.device), ctx, cache)
        cache.commit()
