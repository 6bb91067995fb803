"""Naming the device a model runs on: one check for every command that takes ``--device``."""
from __future__ import annotations

import functools
import os
import time
import warnings

import torch


def torch_device(name: str | torch.device) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1") as a torch device; a name that is not a device, or a GPU
    this PyTorch cannot see, is a ValueError that says what to use instead."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device {name!r}: not a device name; use cpu or cuda (cuda:1 for the second GPU)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: this PyTorch sees no CUDA GPU (torch {torch.__version__}); "
                         "use --device cpu, or install a CUDA build of PyTorch on a machine with a GPU")
    return device


def autocast(device_type: str, bf16: bool = True):
    """bfloat16 autocast for ``device_type`` ("cpu", "cuda") when ``bf16`` is asked for *and* the
    device has fast bfloat16 matmuls (``fast_bf16``); float32 otherwise. Every training and
    streaming pass enters its autocast here, so a CPU without bf16 units runs at float32 speed
    instead of bf16 emulation (~400x slower on an AVX2-only CPU, docs/log.md, sixteenth session)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16 and fast_bf16(device_type))


@functools.lru_cache(maxsize=None)
def fast_bf16(device_type: str) -> bool:
    """Whether bfloat16 autocast pays on this machine's ``device_type``. A GPU: whether it supports
    bf16. A CPU: measured once per process (under a second), since PyTorch has no flag for it: a 256x256
    bf16 matmul must cost at most 4x its float32 twin. With AMX or AVX512-BF16 bf16 is ~2.5x
    faster than float32 (the README's speeds); with AVX2 alone oneDNN has no bf16 kernel and the
    fallback ran 0.33 GFLOP/s against 134 (a 2-core AMD EPYC). ``WORLDSTREAM_BF16=0`` / ``=1``
    decides instead of measuring."""
    forced = os.environ.get("WORLDSTREAM_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    a = torch.randn(256, 256)

    def cost(x: torch.Tensor) -> float:
        x @ x  # (first call: kernel selection)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            x @ x
            best = min(best, time.perf_counter() - t)
        return best

    f32, b16 = cost(a), cost(a.bfloat16())
    fast = b16 <= 4 * f32
    if not fast:
        warnings.warn(f"this CPU has no fast bfloat16 (a bf16 matmul costs {b16 / f32:.0f}x its float32 twin; "
                      "no AMX or AVX512-BF16): training and streaming run in float32 here "
                      "(WORLDSTREAM_BF16=1 forces bf16)", stacklevel=2)
    return fast
