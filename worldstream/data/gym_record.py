"""`worldstream record-gym`: record any gymnasium environment that renders RGB.

Third-party games become training data in one command. A sticky-random policy (repeat the last
action most of the time, as a player holding a key does) drives the environment. Atari games
from ``ale-py`` also give their sound: the emulator's audio is captured per step and resampled
to the dataset rate, so audio stays in sync with the frames. Any other env can provide sound
the same way by returning ``info["audio"]`` (mono float) per step and declaring
``metadata["audio_sample_rate"]`` (the built-in overworld env does).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from .format import DatasetError, EpisodeWriter, episode_name, split_of, write_manifest
from .video import fit_size, resample_audio, resize_crop

ALE_FRAME_HZ = 60  # the Atari's video frame rate; ALE gives 512 sound samples per frame
ALE_SAMPLES_PER_FRAME = 512


@dataclasses.dataclass(frozen=True)
class GymRecordConfig:
    env_id: str
    episodes: int = 10
    frames: int = 1000  # at most this many frames per episode (fewer if the game ends)
    frame_skip: int = 2  # environment steps per recorded frame (ALE: 60 Hz / 2 = 30 fps)
    fps: int | None = None  # default: the env's render_fps / frame_skip (ALE: 60 / frame_skip)
    sample_rate: int = 24000
    sticky: float = 0.8  # chance to repeat the previous action
    max_side: int = 256
    multiple: int = 16
    seed: int = 0


def _make_env(cfg: GymRecordConfig):
    import gymnasium as gym

    is_ale = cfg.env_id.startswith("ALE/")
    if is_ale:
        import ale_py

        gym.register_envs(ale_py)
        # frameskip=1 and repeat_action_probability=0: we skip and stick ourselves, and keep all sound
        env = gym.make(cfg.env_id, render_mode="rgb_array", frameskip=1, repeat_action_probability=0.0,
                       sound_obs=True)
    else:
        try:
            env = gym.make(cfg.env_id, render_mode="rgb_array")
        except Exception as e:  # gymnasium raises several types for unknown/unavailable envs
            raise DatasetError(f"cannot make gymnasium env {cfg.env_id!r}: {e}") from e
    if not hasattr(env.action_space, "n"):
        raise DatasetError(f"{cfg.env_id}: action space {env.action_space} is not discrete; only Discrete "
                           f"action spaces can be recorded (wrap the env to discretise it)")
    return env, is_ale


def _action_names(env) -> list[str]:
    try:
        return [str(a).lower() for a in env.unwrapped.get_action_meanings()]
    except AttributeError:
        return [f"action_{i}" for i in range(env.action_space.n)]


def record_gym(dataset: str | Path, cfg: GymRecordConfig, progress: bool = True) -> dict[str, Any]:
    """Record ``cfg.episodes`` episodes of ``cfg.env_id``; resumable; returns the manifest."""
    dataset = Path(dataset)
    env, is_ale = _make_env(cfg)
    names = _action_names(env)
    src_hz = ALE_FRAME_HZ if is_ale else int(env.metadata.get("render_fps") or 30)
    fps = cfg.fps or max(1, round(src_hz / cfg.frame_skip))
    if cfg.sample_rate % fps:
        raise DatasetError(f"sample_rate {cfg.sample_rate} is not a multiple of fps {fps}; pass --fps or --sample-rate")
    spf = cfg.sample_rate // fps
    base = {"name": dataset.name, "source": f"gymnasium:{cfg.env_id}", "fps": fps, "sample_rate": cfg.sample_rate,
            "samples_per_frame": spf, "audio_channels": 1, "actions": {"names": names, "axes": []},
            "state_fields": {"reward": "reward of the env steps that led to this frame",
                             "terminated": "the game ended on this frame"},
            "gym_config": dataclasses.asdict(cfg)}
    mpath = dataset / "manifest.json"
    if mpath.exists() and json.loads(mpath.read_text()).get("gym_config") != base["gym_config"]:
        raise DatasetError(f"{dataset} was recorded with other settings; use another --out or the same ones")
    (dataset / "episodes").mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(cfg.episodes) if not (dataset / "episodes" / episode_name(i) / "episode.json").exists()]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo) * cfg.frames, unit="frame", desc=f"record {cfg.env_id}")
    for i in todo:
        rng = np.random.default_rng([cfg.seed, i])
        env.reset(seed=int(cfg.seed * 100003 + i))
        writer = EpisodeWriter(dataset, episode_name(i), fps, cfg.sample_rate, spf)
        try:
            _record_episode(env, is_ale, cfg, writer, rng, spf)
        except BaseException:
            writer.abort()
            raise
        writer.close({"source": f"gymnasium:{cfg.env_id}", "seed": i, "split": split_of(i),
                      "has_audio": _audio_rate(env, is_ale) is not None})
        write_manifest(dataset, base)
        if bar is not None:
            bar.update(cfg.frames)
    env.close()
    if bar is not None:
        bar.close()
    return write_manifest(dataset, base)


def _render(env, env_id: str) -> np.ndarray:
    try:
        frame = env.render()
    except Exception as e:  # e.g. a missing renderer dependency such as pygame
        raise DatasetError(f"{env_id}: render() failed: {e}") from e
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        raise DatasetError(f"{env_id}: render() must return an RGB array (H, W, 3); got "
                           f"{getattr(frame, 'shape', type(frame).__name__)}")
    return frame.astype(np.uint8, copy=False)


def _audio_rate(env, is_ale: bool) -> int | None:
    """Sample rate of the env's sound, or None if it has none."""
    if is_ale:
        return ALE_FRAME_HZ * ALE_SAMPLES_PER_FRAME  # 512 samples per 60 Hz frame
    rate = env.metadata.get("audio_sample_rate")
    return int(rate) if rate else None


def _record_episode(env, is_ale: bool, cfg: GymRecordConfig, writer: EpisodeWriter, rng, spf: int) -> None:
    audio_rate = _audio_rate(env, is_ale)
    size = None
    action, reward, done = 0, 0.0, False
    sound: list[np.ndarray] = []
    for _ in range(cfg.frames):
        frame = _render(env, cfg.env_id)
        if size is None:
            size = fit_size(frame.shape[1], frame.shape[0], cfg.max_side, cfg.multiple)
        writer.add(resize_crop(frame, size), None,
                   {"action": action, "caption": None, "state": {"reward": reward, "terminated": done}})
        if done:
            break
        if rng.random() >= cfg.sticky:
            action = int(rng.integers(env.action_space.n))
        reward = 0.0
        chunk = []
        for _ in range(cfg.frame_skip):
            obs, r, term, trunc, info = env.step(action)
            reward += float(r)
            if is_ale:
                chunk.append((obs["sound"].astype(np.float32) - 128.0) / 128.0)  # uint8 centred on 128
            elif audio_rate and isinstance(info.get("audio"), np.ndarray):
                chunk.append(info["audio"].astype(np.float32).reshape(-1))
            if term or trunc:
                done = True
                break
        if chunk:
            sound.append(np.concatenate(chunk))
    n = len(writer.records)
    pcm = np.zeros(n * spf, np.float32)
    if audio_rate and sound:
        # sound of the steps after frame k belongs to frame k+1: shift by one frame
        a = resample_audio(np.concatenate(sound), audio_rate, cfg.sample_rate)
        a = a[: max(0, (n - 1) * spf)]
        pcm[spf : spf + len(a)] = a
    writer.replace_audio(pcm)
