"""Saving and resuming a training run: the same files for every trainer.

    config.json              what the run is (kind, model config, train config), step, metrics, sampler RNG
    model.safetensors        EMA weights: what inference loads
    train_state.safetensors  raw weights, AdamW moments and step, torch RNG: only for resuming
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, load_into, load_json, load_tensors, save_json, save_tensors


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """Polyak averaging of weights; the decay warms up so early EMA weights are not stale."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - d)


def save_run(out: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
             meta: dict[str, Any]) -> None:
    save_tensors(out / "model.safetensors", ema.state_dict())
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        s = opt.state.get(p)
        if s:
            state[f"opt.{i}.exp_avg"] = s["exp_avg"]
            state[f"opt.{i}.exp_avg_sq"] = s["exp_avg_sq"]
            state[f"opt.{i}.step"] = torch.as_tensor(s["step"], dtype=torch.float32).reshape(1)
    state["rng.torch"] = torch.get_rng_state()
    save_tensors(out / "train_state.safetensors", state)
    save_json(out / "config.json", meta)


def resume_run(out: Path, train_cfg: dict[str, Any], model: torch.nn.Module, ema: torch.nn.Module,
               opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Load a run saved by ``save_run``; refuses a run with other settings (except ``steps``)."""
    meta = load_json(out / "config.json")
    train_cfg = json.loads(json.dumps(train_cfg))  # compare as stored: tuples become lists
    # only the stopping point may change between runs: raising --steps extends a run (the cosine
    # schedule then stretches to the new end); anything else means a different experiment
    diff = {k: (meta["train"].get(k), v) for k, v in train_cfg.items() if meta["train"].get(k) != v and k != "steps"}
    if diff:
        raise CheckpointError(f"{out} was trained with other settings {diff} (saved, now); use another --out or "
                              f"the same settings to resume")
    load_into(ema, load_tensors(out / "model.safetensors"), out / "model.safetensors")
    state = load_tensors(out / "train_state.safetensors")
    load_into(model, {k[6:]: v for k, v in state.items() if k.startswith("model.")}, out / "train_state.safetensors")
    for i, p in enumerate(model.parameters()):
        if f"opt.{i}.exp_avg" in state:
            opt.state[p] = {"exp_avg": state[f"opt.{i}.exp_avg"].clone(), "exp_avg_sq": state[f"opt.{i}.exp_avg_sq"].clone(),
                            "step": state[f"opt.{i}.step"][0].clone()}
    torch.set_rng_state(state["rng.torch"])
    return meta


def has_run(out: Path) -> bool:
    return (out / "config.json").exists() and (out / "train_state.safetensors").exists()
