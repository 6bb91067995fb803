"""Checkpoints are data: a folder with ``config.json`` and ``*.safetensors``. Never pickle.

``config.json`` holds everything needed to rebuild the component (its typed config plus
anything else, e.g. a training step); loading checks every tensor's name and shape and says
exactly what does not match.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .files import atomic_write_json


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, incomplete or does not fit the model."""


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


save_json = atomic_write_json  # config.json is written the same way as dataset manifests


def load_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"{path}: not found; is {path.parent} a worldstream checkpoint folder?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: not found")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from e


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Copy tensors into a module's state, refusing any missing, unexpected or misshapen entry."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append("wrong shape " + "; ".join(wrong[:5]))
        raise CheckpointError(f"{where}: does not fit the model built from its config.json: " + ", ".join(parts))
    module.load_state_dict(tensors)
