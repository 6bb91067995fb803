"""The default model that ships inside the package, and self-contained model bundles.

A bundle is one folder that holds everything a world model needs to stream, so it can be copied,
committed or shared on its own:

    config.json          the world model's config (kind, OmniConfig, actions, fps, recommended
                         sampler), with its autoencoders named by relative path and SHA-256
    model.safetensors    the world model's weights (bf16: streaming runs in bf16 anyway, and it
                         halves the size; loading upcasts into the fp32 model)
    video_ae/            the video autoencoder (config.json + model.safetensors, fp32)
    audio_ae/            the audio autoencoder
    MANIFEST.json        SHA-256 of every file above; loading checks it and names any file that
                         changed or is missing

``worldstream export RUN --out DIR`` makes one from a trained teacher or student run folder;
``DEFAULT`` (``worldstream/weights/default``) is the one ``play``, ``generate``, ``bench``, the
gym env and the Python API load when no checkpoint is named.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, load_json, load_tensors, save_json, save_tensors
from ..tokenizers.text import sha256_of

DEFAULT = Path(__file__).parent / "default"
MANIFEST = "MANIFEST.json"
# the training run's resume state: meaningless outside it, and large
_TRAIN_ONLY = ("sampler_rng", "draw_rng", "noise_rng")


def resolve(checkpoint: str | Path | None) -> Path:
    """A checkpoint argument -> a folder: None or "default" means the shipped default model."""
    if checkpoint is None or str(checkpoint) == "default":
        if not (DEFAULT / "config.json").exists():
            raise CheckpointError(f"no default model in this installation ({DEFAULT} is empty); name a checkpoint "
                                  "folder, or train one with `worldstream train all` and bundle it with `worldstream export`")
        return DEFAULT
    return Path(checkpoint)


def verify(folder: str | Path) -> None:
    """Check every file a bundle's MANIFEST.json names against its SHA-256 (no manifest: nothing to check)."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        return
    manifest = load_json(folder / MANIFEST)
    bad = []
    for name, digest in manifest["sha256"].items():
        p = folder / name
        if not p.exists():
            bad.append(f"{name} is missing")
        elif sha256_of(p) != digest:
            bad.append(f"{name} changed (SHA-256 mismatch)")
    if bad:
        raise CheckpointError(f"{folder}: the model bundle is damaged: {'; '.join(bad)}. Restore it (git checkout, or "
                              "re-run `worldstream export`) or name another checkpoint")


def check_same_encoder(original: Path, tuned: Path, flag: str = "--video-decoder") -> None:
    """``tuned`` (a video autoencoder run) encodes exactly as ``original`` does: same config, the same
    encoder weights and latent normalisation bit for bit; else a clear error naming ``flag``, the option
    that named ``tuned``."""
    from ..tokenizers.store import load_autoencoder

    if not (tuned / "model.safetensors").exists():
        raise CheckpointError(f"{flag} {tuned}: no model.safetensors there (a video autoencoder run folder?)")
    a, b = load_autoencoder(original, "video_ae"), load_autoencoder(tuned, "video_ae")
    if a.cfg != b.cfg:
        raise CheckpointError(f"{flag} {tuned}: another autoencoder shape ({b.cfg}) than the model's ({a.cfg})")
    sa, sb = a.state_dict(), b.state_dict()
    differ = [k for k in sa if (k.startswith("enc") or k.startswith("latent_")) and not torch.equal(sa[k], sb[k])]
    if differ:
        raise CheckpointError(f"{flag} {tuned}: its encoder differs from the one this model's latents were "
                              f"made with ({len(differ)} tensors, e.g. {differ[0]}); fine-tune the decoder alone with "
                              f"`worldstream train autoencoder --decoder-only --init-from {original}`")


def export_bundle(run: str | Path, out: str | Path, half: bool = True, steps: int | None = None,
                  window: int | None = None, sinks: int | None = None,
                  video_decoder: str | Path | None = None) -> dict[str, Any]:
    """Copy a trained world model run and its autoencoders into one self-contained folder;
    ``steps`` sets the sampler step count the bundle recommends (what front ends run by default).

    ``window`` and ``sinks`` set the view the bundle streams with (recent chunks, first chunks kept):
    the weights do not depend on it, and a view other than the trained one can stream better. A 1-step
    student trained at window 8, sinks 1 drifts less at window 4, sinks 4 (fewer of its own frames to
    compound, more of the start's to anchor the light; docs/log.md, thirty-fifth session).

    ``video_decoder``: a video autoencoder run whose decoder alone was fine-tuned from the model's own
    (``train autoencoder --decoder-only``) goes into the bundle in its place; its encoder and latent
    normalisation must equal the recorded one's exactly (the latents the model knows), and the bundle
    records the original's SHA-256 as the one its latents were made with (``latents_sha256``; the
    trainers take latent caches made by either, ``engine.generate.reads_latents``)."""
    from ..engine.generate import autoencoder_dir, load_autoencoders, load_world_model
    from ..engine.stream import check_view

    run, out = resolve(run), Path(out)  # "default": the shipped bundle itself (e.g. to give it another view)
    model, meta = load_world_model(run)  # refuses anything that is not a world model
    load_autoencoders(meta, run)  # the autoencoders exist and match their recorded SHA-256
    check_view(window, sinks)
    if (window is not None or sinks is not None) and not meta["model"].get("window"):
        raise CheckpointError(f"{run}: this model was trained with an unbounded view; set its streaming view at load "
                              "time (World.load(window=..., sinks=...)) instead")
    if steps is not None and "rollout" not in meta:
        raise CheckpointError(f"{run}: a teacher has no recommended sampler to set --steps on; pass sampler "
                              "options at run time instead")
    if video_decoder is not None:  # before anything is written: a refused decoder leaves no partial bundle
        check_same_encoder(autoencoder_dir(meta["latents"]["video_ae"], run), Path(video_decoder))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = load_tensors(run / "model.safetensors")
    if half:
        tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}
    save_tensors(tmp / "model.safetensors", tensors)
    latents = {}
    for key, info in meta["latents"].items():
        if info is None:
            latents[key] = None
            continue
        src = autoencoder_dir(info, run)
        extra = {}
        if key == "video_ae" and video_decoder is not None:  # (checked above)
            extra = dict(latents_sha256=info.get("latents_sha256", info["sha256"]),  # a second swap keeps the first
                         decoder_from=str(Path(video_decoder).resolve()))
            src = Path(video_decoder)
        (tmp / key).mkdir()
        for name in ("config.json", "model.safetensors"):
            shutil.copyfile(src / name, tmp / key / name)
        ae_meta = load_json(tmp / key / "config.json")
        save_json(tmp / key / "config.json", {k: v for k, v in ae_meta.items() if k not in _TRAIN_ONLY})
        latents[key] = dict(info, path=key, sha256=sha256_of(tmp / key / "model.safetensors"),
                            source=info.get("source", str(src)), **extra)  # a bundle re-exported names the first source
    slim = {k: v for k, v in meta.items() if k not in _TRAIN_ONLY}
    slim.update(latents=latents, source=meta.get("source", str(run.resolve())), weights_dtype="bfloat16" if half else "float32")
    if steps is not None:
        slim["rollout"] = dict(slim["rollout"], steps=steps)
    view = {k: int(v) for k, v in (("window", window), ("sinks", sinks)) if v is not None}
    if view:  # the view it streams with; the one it was trained with is kept as trained_view
        slim["model"] = dict(slim["model"], **view)
        slim["trained_view"] = meta.get("trained_view") or {k: meta["model"][k] for k in ("window", "sinks")}
    save_json(tmp / "config.json", slim)
    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    (tmp / MANIFEST).write_text(json.dumps({"sha256": {f: sha256_of(tmp / f) for f in files}}, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"out": str(out), "bytes": size, "params": sum(p.numel() for p in model.parameters()), "files": files}
