"""Saving and resuming a training run: the same files for every trainer.

    config.json              what the run is (kind, model config, train config), step, metrics, sampler RNG
    model.safetensors        EMA weights: what inference loads
    train_state.safetensors  raw weights, AdamW moments and step, torch RNG: only for resuming
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, load_into, load_json, load_tensors, save_json, save_tensors
from ..config import as_stored, stored_with_defaults


def cosine_lr(base: float, warmup: int, total: int, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``base`` at ``total`` steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def schedule_step(step: int, steps: int, elapsed: float, budget_s: float | None) -> float:
    """Where the learning-rate schedule stands: the step, or under a time budget (``--budget-minutes``)
    whichever of the steps done and the time spent is further along, so a run that cannot reach
    ``steps`` in its budget still decays its learning rate to the end, and one that is faster ends
    at ``steps``."""
    if budget_s is None:
        return step
    return max(step, steps * (min(1.0, elapsed / budget_s) if budget_s > 0 else 1.0))


def optimizer_step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float,
                   ema: torch.nn.Module | None = None, ema_decay: float = 0.0, step: int = 0, clip: float = 1.0) -> None:
    """One update: set the learning rate, backward, clip the gradient norm, step, update the EMA (if any)."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    if ema is not None:
        ema_update(ema, model, ema_decay, step)


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


def resume_run(out: Path, cfg: Any, model: torch.nn.Module, ema: torch.nn.Module,
               opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Load a run saved by ``save_run``; refuses a run with other settings than ``cfg`` (a train
    config dataclass) except ``steps``, ``eval_every`` and ``compile``. A setting added since the
    run was saved counts as its default there (new settings start off)."""
    meta = load_json(out / "config.json")
    train_cfg = as_stored(cfg)  # compare as stored: tuples become lists
    saved = stored_with_defaults(type(cfg), meta["train"])
    # only the stopping point (and how often it is evaluated) may change between runs: raising
    # --steps extends a run (the cosine schedule then stretches to the new end), lowering it ends
    # it sooner; anything else means a different experiment
    free = ("steps", "eval_every", "compile")  # compiling changes how a step runs, not what it computes
    diff = {k: (saved.get(k), v) for k, v in train_cfg.items() if saved.get(k) != v and k not in free}
    if diff:
        raise CheckpointError(f"{out} was trained with other settings {diff} (saved, now); use another --out or "
                              f"the same settings to resume")
    load_into(ema, load_tensors(out / "model.safetensors"), out / "model.safetensors")
    state = load_tensors(out / "train_state.safetensors")
    load_into(model, {k[6:]: v for k, v in state.items() if k.startswith("model.")}, out / "train_state.safetensors")
    for i, p in enumerate(model.parameters()):
        if f"opt.{i}.exp_avg" in state:
            opt.state[p] = {"exp_avg": state[f"opt.{i}.exp_avg"].to(p.device, copy=True),
                            "exp_avg_sq": state[f"opt.{i}.exp_avg_sq"].to(p.device, copy=True),
                            "step": state[f"opt.{i}.step"][0].clone()}  # (AdamW keeps its step count on the CPU)
    torch.set_rng_state(state["rng.torch"])
    return meta


def init_weights(model: torch.nn.Module, run: str | Path, what: str) -> None:
    """``--init-from``: load another run's (EMA) weights into ``model`` before training starts;
    ``what`` names the kind of run folder expected, for the error. Layers that start at zero and
    that the source lacks (``ZERO_START``: a plain teacher fine-tuned into a ``prev_frame`` one)
    keep their zeros, so the fine-tune starts where the source stood."""
    src = Path(run) / "model.safetensors"
    if not src.exists():
        raise FileNotFoundError(f"--init-from {run}: no model.safetensors there (a {what} run folder?)")
    tensors = load_tensors(src)
    for k, v in model.state_dict().items():
        if k not in tensors and k.startswith(ZERO_START):
            tensors[k] = v
    load_into(model, tensors, src)


# layers a fine-tune may add, kept as the model initialises them (``Omni.prev_in``, ``move_near``, ...: zeros;
# ``move_head``)
ZERO_START = ("prev_in.", "prev_level_in.", "prev_shift_out.", "move_head.", "move_near.")


def has_run(out: Path) -> bool:
    return (out / "config.json").exists() and (out / "train_state.safetensors").exists()


def train_device(device: str, world: int) -> torch.device:
    """The device a training process runs on: ``device`` ("cpu", "cuda"), under torchrun with CUDA
    the process's own GPU (LOCAL_RANK); a GPU that is not there is a clear error."""
    from ..device import torch_device

    dev = torch_device(device)
    if dev.type == "cuda":
        if dev.index is None:  # (set_device wants an index: torch 2.11 refuses a bare "cuda")
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev
