"""Naming the device a model runs on: one check for every command that takes ``--device``."""
from __future__ import annotations

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
