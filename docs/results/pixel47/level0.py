"""Diagnostic (forty-seventh session): run bench/rollout_vs_still.py with a prev_own model streamed as if every
previous frame were real (level 0) instead of its own (level 1). Name the model's path with a LEVEL0 suffix:

    python docs/results/pixel47/level0.py --data pipeline/data/overworld \
        --model pixel47_level0=pipeline/runs/pixel47LEVEL0 --starts 12 --frames 192 --no-compile --json OUT.json
"""
import dataclasses
import runpy
import sys

from worldstream.engine.stream import World

_load = World.load


def load(path=None, *a, **k):
    level0 = path is not None and str(path).endswith("LEVEL0")
    w = _load(str(path)[: -len("LEVEL0")] if level0 else path, *a, **k)
    if level0:  # the stream reads cfg.prev_own to tell the model whose frame it is; off, the level stays 0
        object.__setattr__(w.model, "cfg", dataclasses.replace(w.model.cfg, prev_own=False))
    return w


World.load = staticmethod(load)
sys.argv = ["rollout_vs_still.py"] + sys.argv[1:]
runpy.run_path("bench/rollout_vs_still.py", run_name="__main__")
