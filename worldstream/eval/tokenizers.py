"""`worldstream eval tokenizers`: held-out quality and speed of the autoencoders and text encoder.

Video: PSNR / SSIM on held-out episodes, decoded the way the engine decodes (one latent step at
a time with the streaming state), in fp32 and bf16 (the bf16 numerics check); encode and
decode time per frame. Audio: spectral distance and SI-SNR on held-out audio, plus WAV files
(original and decoded) and a spectrogram PNG to listen to and look at. Text: ms per prompt.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.format import Dataset
from ..data.png import grid, save_png
from ..data.video import write_wav
from ..tokenizers.losses import psnr, si_snr, spectral_distance, ssim, stft_mag
from ..tokenizers.store import load_autoencoder


def _timed(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1000


@torch.no_grad()
def eval_video(ckpt: str | Path, dataset: str | Path, frames: int = 96, out: Path | None = None) -> dict[str, Any]:
    model = load_autoencoder(ckpt, "video_ae")
    ds = Dataset(dataset)
    tt, s = model.cfg.temporal, model.cfg.spatial
    res: dict[str, Any] = {"checkpoint": str(ckpt), "config": {k: v for k, v in vars(model.cfg).items()},
                           "params_encoder": sum(p.numel() for n, p in model.named_parameters() if n.startswith("enc")),
                           "params_decoder": sum(p.numel() for n, p in model.named_parameters() if n.startswith("dec"))}
    from ..train.autoencoder import latent_shift_error

    psnrs = {"fp32": [], "bf16": []}
    ssims, shifts = [], []
    examples = []
    for ep in ds.split("heldout"):
        n = min(frames, ep.n_frames) // tt * tt
        f = np.array(ep.frames()[:n])
        H, W = f.shape[1] // s * s, f.shape[2] // s * s
        x = torch.from_numpy(f[:, :H, :W]).permute(0, 3, 1, 2)[None].float() / 255.0
        z = model.encode(x)
        shifts.append(latent_shift_error(model, x[:, : 16 // tt * tt]))
        for mode in ("fp32", "bf16"):
            state, ys = {}, []
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                for k in range(z.shape[1]):  # one latent step at a time, as the engine streams
                    ys.append(model.decode(z[:, k : k + 1], state).float())
            y = torch.cat(ys, 1).clamp(0, 1)
            psnrs[mode] += [psnr(y[:, i], x[:, i]) for i in range(n)]
            if mode == "fp32":
                ssims.append(ssim(y[0], x[0]).item())
                examples += [f[n // 2, :H, :W], (y[0, n // 2].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)]
    res["heldout_frames"] = len(psnrs["fp32"])
    res["psnr_db"] = float(np.mean(psnrs["fp32"]))
    res["psnr_db_p10"] = float(np.percentile(psnrs["fp32"], 10))
    res["psnr_db_bf16_decode"] = float(np.mean(psnrs["bf16"]))
    res["ssim"] = float(np.mean(ssims))
    # how predictable a scrolling world is in this latent: 0 = a moved frame's latent is the moved
    # latent, ~1 = unrelated (train/autoencoder.py, ``latent_shift_error``)
    res["latent_shift_error"] = {f"{k}px": float(np.mean([d[k] for d in shifts])) for k in shifts[0]}
    x1 = torch.rand(1, tt, 3, 128, 128)
    z1 = model.encode(x1)
    for mode in ("fp32", "bf16"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            state = {}
            res[f"decode_ms_per_frame_128_{mode}"] = _timed(lambda: model.decode(z1, state), 30) / tt
            estate = {}
            res[f"encode_ms_per_frame_128_{mode}"] = _timed(lambda: model.encode(x1, estate), 30) / tt
    if out is not None:
        save_png(out / f"video_{Path(ckpt).name}_examples.png",
                 grid([np.kron(e, np.ones((2, 2, 1), np.uint8)) for e in examples[:8]], cols=4))
    return res


@torch.no_grad()
def eval_audio(ckpt: str | Path, dataset: str | Path, frames: int = 240, out: Path | None = None) -> dict[str, Any]:
    model = load_autoencoder(ckpt, "audio_ae")
    ds = Dataset(dataset)
    spf = model.cfg.samples_per_frame
    sds, snrs, clips = [], [], []
    for ep in ds.split("heldout"):
        a = torch.from_numpy(ep.audio()[: frames * spf])[None]
        state, ys = {}, []
        z = model.encode(a)
        tpf = model.cfg.tokens_per_frame
        for k in range(0, z.shape[1], tpf):  # one video frame of tokens at a time
            ys.append(model.decode(z[:, k : k + tpf], state))
        y = torch.cat(ys, 1)
        sds.append(spectral_distance(y, a))
        snrs.append(si_snr(y, a))
        clips.append((ep.name, a[0].numpy(), y[0].numpy(), ep.records()))
    res = {"checkpoint": str(ckpt), "config": {k: v for k, v in vars(model.cfg).items()},
           "params": sum(p.numel() for p in model.parameters()), "heldout_seconds": len(clips) * frames * spf / model.cfg.sample_rate,
           "spectral_distance_db": float(np.mean(sds)), "si_snr_db": float(np.mean(snrs)),
           "tokens_per_frame": model.cfg.tokens_per_frame}
    a1 = torch.rand(1, spf) * 0.2
    state = {}
    res["encode_ms_per_frame"] = _timed(lambda: model.encode(a1, state), 50)
    z1 = model.encode(a1)
    dstate = {}
    res["decode_ms_per_frame"] = _timed(lambda: model.decode(z1, dstate), 50)
    if out is not None:
        specs = []
        for name, a, y, recs in clips[:3]:
            write_wav(out / f"audio_{name}_original.wav", a, model.cfg.sample_rate)
            write_wav(out / f"audio_{name}_decoded.wav", y, model.cfg.sample_rate)
            for sig in (a, y):
                m = torch.log10(stft_mag(torch.from_numpy(sig)[None], 512)[0]).numpy()[::-1]  # (freq, time), low at bottom
                m = np.clip((m + 3) / 4, 0, 1)  # -60 dB floor .. +20 dB
                specs.append(np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2))
        save_png(out / "audio_spectrograms.png", grid(specs, cols=2))
    return res


def eval_text() -> dict[str, Any]:
    from ..tokenizers.text import TextEncoder

    t0 = time.perf_counter()
    te = TextEncoder()
    load = time.perf_counter() - t0
    prompts = [f"a snowy evening number {i}" for i in range(40)]
    t0 = time.perf_counter()
    for p in prompts:
        te.encode(p)
    ms = (time.perf_counter() - t0) / len(prompts) * 1000
    return {"load_s": load, "ms_per_new_prompt": ms, "params": sum(p.numel() for p in te.parameters()),
            "similarity_eating_bread": te.similarity("A man is eating food.", "A man is eating a piece of bread.")}


def run(dataset: str, video_aes: list[str], audio_ae: str | None, out: str | Path) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"dataset": dataset, "threads": torch.get_num_threads(), "video": [eval_video(v, dataset, out=out) for v in video_aes],
           "audio": eval_audio(audio_ae, dataset, out=out) if audio_ae else None, "text": eval_text()}
    (out / "tokenizers.json").write_text(json.dumps(res, indent=1, default=str))
    return res


def format_table(res: dict[str, Any]) -> str:
    lines = ["| video AE | params enc/dec | held-out PSNR (dB) | p10 | bf16 decode PSNR | SSIM | latent shift error 1 / 2 / 4 px "
             "| decode ms/frame fp32 / bf16 | encode ms/frame fp32 / bf16 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in res["video"]:
        c = v["config"]
        lines.append(f"| {Path(v['checkpoint']).name} (f{c['spatial']} t{c['temporal']} c{c['latent_channels']}) | "
                     f"{v['params_encoder'] / 1e6:.2f}M / {v['params_decoder'] / 1e6:.2f}M | {v['psnr_db']:.2f} | "
                     f"{v['psnr_db_p10']:.2f} | {v['psnr_db_bf16_decode']:.2f} | {v['ssim']:.3f} | "
                     + " / ".join(f"{e:.3f}" for e in v["latent_shift_error"].values()) + " | "
                     f"{v['decode_ms_per_frame_128_fp32']:.1f} / {v['decode_ms_per_frame_128_bf16']:.1f} | "
                     f"{v['encode_ms_per_frame_128_fp32']:.1f} / {v['encode_ms_per_frame_128_bf16']:.1f} |")
    a = res.get("audio")
    if a:
        lines += ["", "| audio AE | params | tokens/frame | spectral distance (dB) | SI-SNR (dB) | encode / decode ms per frame |",
                  "|---|---|---|---|---|---|",
                  f"| {Path(a['checkpoint']).name} | {a['params'] / 1e6:.2f}M | {a['tokens_per_frame']} | "
                  f"{a['spectral_distance_db']:.2f} | {a['si_snr_db']:.2f} | {a['encode_ms_per_frame']:.2f} / {a['decode_ms_per_frame']:.2f} |"]
    t = res["text"]
    lines += ["", f"Text encoder: {t['params'] / 1e6:.1f}M params, loads in {t['load_s']:.2f} s (with hash check), "
              f"{t['ms_per_new_prompt']:.1f} ms per new prompt, similarity check {t['similarity_eating_bread']:.4f}"]
    return "\n".join(lines)
