"""A world model's own latents beside the frames the game showed: what a decoder learns to read them from.

The video decoder is trained on the encoder's latents, but in a stream it decodes a world model's
own, which drift in a way the encoder never makes: 8 frames into a walk the shipped student's
latents decode to frames 7 dB further from the truth than the encoder's latents of the same frames,
and 30% softer (log.md, thirty-ninth session). Part of that drift is systematic (contrast shrinks,
edges soften, the player sprite fades) and so learnable. A pool of the world model's own rollouts,
each from a recorded frame with the recording's keys and caption (``engine.rollout.own_rollout``, the
very rollout it streams and self-forcing trains on), paired with the recorded frames at the same
times, lets ``train autoencoder --decoder-only --own-from MODEL`` ask the decoder for the true frame
from the model's latent of it. Early in a rollout the latent still follows the recording, so the pair
says what the drift hid; later the truth has moved on, and a full-resolution pairing asks for the
conditional mean: measured, it gains 0.9 dB on held-out rollouts by blurring them 35%. Pairing only
the coarse picture (``own_lowpass``: L1 of 4 x 4 means) and leaving the detail to the patch critic
(``adv_weight``) gains 0.6 dB and sharpens them 40%, but on a long walk's latents, further drifted than
the pool's, the critic then lays a fine speckle over the scene, and a decoder that reads own latents
reads the encoder's (a stream's first frames) worse: not shipped (log.md, thirty-ninth session).

The pool is made once per run (``own_clips`` rollouts, batched) and saved in the run folder, so a
resumed run reads the same pairs.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import CheckpointError, load_json, load_tensors, save_json, save_tensors
from ..data.format import Dataset, DatasetError
from ..data.latents import LatentClips, PromptBank
from ..device import autocast
from ..engine.generate import autoencoder_dir, load_world_model, reads_latents
from ..engine.rollout import Conditioning, own_rollout
from ..weights import check_same_encoder, resolve


@dataclasses.dataclass
class OwnPool:
    """Own rollouts (N, F, C, h, w), normalised latents, frame 0 the recorded one, and where each began."""

    latents: torch.Tensor
    episodes: list  # data.format.Episode per rollout
    starts: list[int]  # its first frame in that episode

    def frames(self, i: int, first: int, n: int) -> np.ndarray:
        """The recorded frames (n, H, W, 3) uint8 at rollout ``i``'s frames first .. first + n - 1."""
        s = self.starts[i] + first
        return np.array(self.episodes[i].frames()[s : s + n])  # a copy: the cache is memory-mapped read-only


def check_world_model(model: str, autoencoder: str | Path) -> Path:
    """The world model's folder, once its latents are known to be ``autoencoder``'s: same encoder, same
    normalisation (else its own latents would mean something else to this decoder)."""
    path = resolve(model)
    if not (path / "config.json").exists():
        raise CheckpointError(f"--own-from {model}: no world model checkpoint there (no config.json); name a run "
                              "folder, a bundle (worldstream export) or 'default'")
    info = load_json(path / "config.json").get("latents", {}).get("video_ae")
    if info is None:
        raise ValueError(f"--own-from {model}: not a world model checkpoint with a video autoencoder")
    check_same_encoder(autoencoder_dir(info, path), Path(autoencoder), flag="--init-from")
    return path


@torch.no_grad()
def make_pool(model: str, dataset: str, latents: str, split: str, clips: int, frames: int, seed: int,
              batch: int = 8, progress: bool = True) -> OwnPool:
    """``clips`` own rollouts of ``frames`` frames of the world model ``model`` from random recorded
    frames of ``dataset``'s ``split`` (latent cache ``latents``), with their keys and caption, 1 step a
    frame (how the shipped student streams); a fixed seed draws the same pool."""
    wm, meta = load_world_model(model)
    try:
        source = LatentClips(dataset, latents, split, frames, seed=seed)
    except DatasetError as e:  # (its advice names the trainers' --latents; here the option is --own-latents)
        raise DatasetError(str(e).replace("--latents", "--own-latents")) from None
    if not reads_latents(meta, source.ident):
        raise DatasetError(f"latent cache {latents!r} of {dataset} was not made with {model}'s video autoencoder; "
                           f"encode it with that model's autoencoders (worldstream encode)")
    if len(source.buckets) > 1:
        raise DatasetError(f"{dataset}: frames of several sizes; a decoder's pool needs one (one dataset folder)")
    prompts = PromptBank()
    g = torch.Generator().manual_seed(seed)
    tpf = source.tokens_per_frame
    out, episodes, starts = [], [], []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=clips, desc=f"own rollouts of {Path(str(model)).name}", unit="rollout")
    while len(starts) < clips:
        clip = source.sample(min(batch, clips - len(starts)))
        text, mask, pooled = prompts.batch(clip.captions)
        cond = Conditioning(text, mask, pooled, clip.actions)
        first_a = None if clip.audio is None else clip.audio[:, :tpf]
        with autocast("cpu", True):
            v, _ = own_rollout(wm, cond, clip.video[:, :1], first_a, frames, 1, g)
        out.append(v.half())
        episodes += [ep for ep, _ in clip.start]
        starts += [s for _, s in clip.start]
        if bar is not None:
            bar.update(v.shape[0])
    if bar is not None:
        bar.close()
    return OwnPool(torch.cat(out), episodes, starts)


def save_pool(path: Path, pool: OwnPool) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_tensors(path / "latents.safetensors", {"latents": pool.latents.contiguous()})
    save_json(path / "index.json", {"episodes": [ep.name for ep in pool.episodes], "starts": pool.starts})


def load_pool(path: Path, dataset: str) -> OwnPool:
    index = load_json(path / "index.json")
    by_name = {ep.name: ep for split in ("train", "heldout") for ep in Dataset(dataset).split(split)}
    missing = [n for n in index["episodes"] if n not in by_name]
    if missing:
        raise DatasetError(f"{path}: episode {missing[0]} is not in {dataset}; delete {path} to make the pool anew")
    return OwnPool(load_tensors(path / "latents.safetensors")["latents"], [by_name[n] for n in index["episodes"]],
                   list(index["starts"]))


def pool(path: Path, model: str, dataset: str, latents: str, split: str, clips: int, frames: int, seed: int,
         progress: bool = True) -> OwnPool:
    """The pool saved at ``path``, made there first if it is not yet."""
    if not (path / "index.json").exists():
        made = make_pool(model, dataset, latents, split, clips, frames, seed, progress=progress)
        save_pool(path, made)
        return made
    kept = load_pool(path, dataset)
    if tuple(kept.latents.shape[:2]) != (clips, frames):
        raise DatasetError(f"{path} holds {kept.latents.shape[0]} rollouts of {kept.latents.shape[1]} frames, not "
                           f"{clips} of {frames}; delete it to make the pool anew, or train into another --out")
    return kept


def draw(pool: OwnPool, rng: np.random.Generator, n: int, clip_frames: int, crop: int, spatial: int,
         align: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` windows of ``clip_frames`` own frames (never the recorded frame 0), each with a random
    ``crop``-px square on the ``align``-px grid (0: whole frames): normalised latents (n, T, C, h, w)
    and the recorded frames there (n, T, 3, H, W) in [0, 1]."""
    N, F, _, h, w = pool.latents.shape
    if F - 1 < clip_frames:
        raise ValueError(f"own rollouts of {F} frames hold no {clip_frames}-frame window after the recorded one")
    zs, xs = [], []
    for _ in range(n):
        i, first = int(rng.integers(N)), int(rng.integers(1, F - clip_frames + 1))
        z = pool.latents[i, first : first + clip_frames].float()
        x = torch.from_numpy(pool.frames(i, first, clip_frames)).permute(0, 3, 1, 2).float() / 255.0
        if crop and crop < min(h, w) * spatial:
            oy = int(rng.integers((h * spatial - crop) // align + 1)) * align
            ox = int(rng.integers((w * spatial - crop) // align + 1)) * align
            z = z[..., oy // spatial : (oy + crop) // spatial, ox // spatial : (ox + crop) // spatial]
            x = x[..., oy : oy + crop, ox : ox + crop]
        zs.append(z)
        xs.append(x)
    return torch.stack(zs), torch.stack(xs)
