"""Can the pixel world model's output layer express a sharp frame at all?

``bench/pixel_vs_latent.py``'s pixel model reads each 16 x 16 x 3 patch (768 numbers) of its clean
guess from ``video_out``, a linear layer from the 256-wide stream: every frame it can make lies,
patch by patch, in b + span(W), 256 of 768 dimensions. If that span held no grain, no training and
no critic could make the frames sharp. This projects held-out frames onto it (least squares) and
onto the best 256-d span of the frames themselves (PCA), and reports the PSNR and the sharpness of
what is left.

    .venv/bin/python bench/pixel_output_span.py --data pipeline/data/overworld \\
        --weights pipeline/exp/pixels40/pixel.safetensors
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from pixel_vs_latent import Pixels  # noqa: E402
from rollout_vs_still import psnr  # noqa: E402

from worldstream.checkpoint import load_tensors  # noqa: E402
from worldstream.data.format import Dataset  # noqa: E402
from worldstream.eval.stream import sharpness  # noqa: E402

P = 16  # the pixel model's patch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights", required=True, help="a pixel model saved by bench/pixel_vs_latent.py")
    ap.add_argument("--frames", type=int, default=24, help="held-out frames to project")
    a = ap.parse_args()
    eps = Dataset(a.data).split("heldout")
    real = np.stack([eps[i % len(eps)].frames()[(50 + 37 * i) % eps[i % len(eps)].n_frames] for i in range(a.frames)])
    pix = Pixels(real)
    state = load_tensors(Path(a.weights))
    W, b = state["video_out.weight"].float(), state["video_out.bias"].float()  # (768, 256), (768,)
    z = pix.encode(real)
    n, _, h, w = z.shape
    gh, gw = h // P, w // P
    # the model's own patch order (Omni.forward): (gh, gw, C, p, p)
    patches = z.reshape(n, 3, gh, P, gw, P).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3 * P * P) - b
    spans = {f"output layer, b + span(W) ({W.shape[1]} of {W.shape[0]})": torch.linalg.qr(W)[0],
             f"best {W.shape[1]}-d span of the frames (PCA)": torch.linalg.svd(patches, full_matrices=False)[2][: W.shape[1]].T}
    print(f"{a.frames} held-out frames, sharpness {sharpness(real):.3f}")
    for name, basis in spans.items():
        proj = (patches @ basis) @ basis.T + b
        got = pix.decode(proj.reshape(n, gh, gw, 3, P, P).permute(0, 3, 1, 4, 2, 5).reshape(n, 3, h, w))
        print(f"{name}: PSNR {np.mean([psnr(g, r) for g, r in zip(got, real)]):.1f} dB, sharpness {sharpness(got):.3f}")


if __name__ == "__main__":
    main()
