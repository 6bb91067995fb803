"""`worldstream record`: episodes of the built-in overworld, driven by the explorer policy.

Parallel workers, a progress bar, and resumable: re-running the same command fills in only the
episodes that are missing. Episode k always comes from the same seed, so a resumed dataset is
identical to one recorded in a single go.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import as_stored, from_dict, stored_with_defaults, to_dict
from ..worlds.overworld.conditions import SEASONS, TIMES, WEATHERS
from ..worlds.overworld.policy import ExplorerConfig, explore
from ..worlds.overworld.terrain import GROUNDS
from ..worlds.overworld.world import ACTIONS, Overworld, OverworldConfig
from .format import DatasetError, EpisodeWriter, episode_name, split_of, write_manifest

# What the per-frame "state" object of an overworld record holds (copied into the manifest).
STATE_FIELDS = {
    "t": "world time of the frame in seconds",
    "x": "player position east, in tiles (1 tile = tile_px pixels)",
    "y": "player position south, in tiles",
    "heading": "player facing: n ne e se s sw w nw",
    "moved": "the player moved this frame",
    "blocked": "movement was (partly) stopped by water, a tree, a rock or a building",
    "running": "the run modifier was held",
    "ground": f"terrain under the player: one of {list(GROUNDS)}",
    "footstep": "a footstep sound started this frame",
    "weather": f"target weather: {list(WEATHERS)}",
    "time": f"target time of day: {list(TIMES)}",
    "season": f"target season: {list(SEASONS)}",
    "blend": "rendered condition weights: {'weather': [5], 'time': [4], 'season': [4]} in the orders above",
    "revisit_of": "on the frame a loop-back arrives: the frame at which this place was first seen",
}


@dataclass(frozen=True)
class RecordConfig:
    """One recording run: the world plus how many episodes of how many frames."""

    world: OverworldConfig
    episodes: int = 10
    frames: int = 1440  # 60 s at 24 fps
    explorer: ExplorerConfig = ExplorerConfig()  # the recording policy (its defaults: the shipped recordings)

    def __post_init__(self):  # before a folder is made: an empty or broken dataset is not left behind
        if self.episodes < 1 or self.frames < 1:
            raise ValueError(f"{self.episodes} episodes of {self.frames} frames: record 1 or more of each")


def overworld_manifest_base(cfg: RecordConfig) -> dict[str, Any]:
    w = cfg.world
    return {
        "name": "overworld",
        "source": "worldstream overworld (built-in)",
        "fps": w.fps,
        "sample_rate": w.sample_rate,
        "samples_per_frame": w.samples_per_frame,
        "audio_channels": 1,
        "actions": {"names": list(ACTIONS), "axes": []},
        "state_fields": STATE_FIELDS,
        "record_config": to_dict(cfg),
    }


def record_episode(world: Overworld, index: int, frames: int, dataset: Path,
                   explorer: ExplorerConfig | None = None) -> dict[str, Any]:
    """Record episode ``index`` (seeded by its index) into ``dataset``; returns its episode.json."""
    cfg = world.config
    writer = EpisodeWriter(dataset, episode_name(index), cfg.fps, cfg.sample_rate, cfg.samples_per_frame)
    try:
        for step, action, revisit_of in explore(world, index, frames, explorer):
            state = dict(step.state)
            state["blend"] = {k: list(v.values()) for k, v in state["blend"].items()}
            for k in ("frame", "action"):  # stored at the top level of the record
                state.pop(k)
            if revisit_of is not None:
                state["revisit_of"] = revisit_of
            writer.add(step.frame, step.audio, {"action": action, "caption": step.caption, "state": state})
    except BaseException:
        writer.abort()
        raise
    return writer.close({"source": "overworld", "seed": index, "split": split_of(index),
                         "world_seed": cfg.seed})


_WORKER_WORLD: Overworld | None = None


def _worker(args: tuple[dict, int, int, str, dict]) -> tuple[int, int, float]:
    global _WORKER_WORLD
    wcfg, index, frames, dataset, ecfg = args
    if _WORKER_WORLD is None or to_dict(_WORKER_WORLD.config) != wcfg:
        _WORKER_WORLD = Overworld(from_dict(OverworldConfig, wcfg))
    t0 = time.perf_counter()
    info = record_episode(_WORKER_WORLD, index, frames, Path(dataset), from_dict(ExplorerConfig, ecfg))
    return index, info["frames"], time.perf_counter() - t0


def missing_episodes(dataset: Path, n: int) -> list[int]:
    return [i for i in range(n) if not (dataset / "episodes" / episode_name(i) / "episode.json").exists()]


def record(dataset: str | Path, cfg: RecordConfig, workers: int = 1, progress: bool = True,
           heldout_only: bool = False) -> dict[str, Any]:
    """Record (or finish recording) ``cfg.episodes`` episodes; returns the manifest. ``heldout_only``: only
    those of them in the held-out split (``format.split_of``; each the same episode as in a full recording).

    Re-running with the same settings resumes; different settings for an existing dataset
    are an error that says which settings differ.
    """
    dataset = Path(dataset)
    base = overworld_manifest_base(cfg)
    mpath = dataset / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text()).get("record_config")
        new_explorer = as_stored(cfg.explorer)
        # a dataset recorded before an explorer setting existed (or before the explorer was saved at
        # all) was recorded with its default
        old_explorer = None if old is None else stored_with_defaults(ExplorerConfig, old.get("explorer", {}))
        if old is not None and (old["world"] != base["record_config"]["world"] or old["frames"] != cfg.frames
                                or old_explorer != new_explorer):
            diff = {k: (old["world"].get(k), v) for k, v in base["record_config"]["world"].items() if old["world"].get(k) != v}
            if old["frames"] != cfg.frames:
                diff["frames"] = (old["frames"], cfg.frames)
            diff.update({f"explorer.{k}": (old_explorer.get(k), v) for k, v in new_explorer.items()
                         if old_explorer.get(k) != v})
            raise DatasetError(f"{dataset} was recorded with other settings {diff} (old, new); "
                               f"use another --out folder or the original settings")
    (dataset / "episodes").mkdir(parents=True, exist_ok=True)
    todo = [i for i in missing_episodes(dataset, cfg.episodes) if not heldout_only or split_of(i) == "heldout"]
    jobs = [(to_dict(cfg.world), i, cfg.frames, str(dataset), to_dict(cfg.explorer)) for i in todo]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo) * cfg.frames, unit="frame", desc=f"record {dataset.name}",
                   initial=0, smoothing=0.1)
    t0 = time.perf_counter()
    if workers <= 1 or len(jobs) <= 1:
        results = (_worker(j) for j in jobs)
    else:
        pool = mp.get_context("spawn").Pool(min(workers, len(jobs)))
        results = pool.imap_unordered(_worker, jobs)
    done = 0
    for _, n, _ in results:
        done += n
        if bar is not None:
            bar.update(n)
        write_manifest(dataset, base)  # after every episode: an interrupted run is still a dataset
    if workers > 1 and len(jobs) > 1:
        pool.close()
        pool.join()
    if bar is not None:
        bar.close()
    manifest = write_manifest(dataset, base)
    manifest["_record_seconds"] = time.perf_counter() - t0
    manifest["_recorded_frames"] = done
    return manifest
