"""`worldstream import`: a folder of a user's videos into the worldstream dataset format.

Each video may have a sidecar ``<name>.json`` next to it::

    {"actions": ["left", "left", "jump", ...],        # one per source video frame (names or ids)
     "captions": [{"frame": 0, "text": "a rainy street"}, ...]}

The action vocabulary comes from ``actions.json`` in the folder (a JSON list of names), or
``--vocab``, or else the union of the names used in the sidecars. Bad input never stops the
import: the episode is skipped, the reason (naming the file) goes into the summary, and every
good video is imported. Re-running skips videos already imported, so it is resumable.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from .format import DatasetError, EpisodeWriter, episode_name, split_of, write_manifest
from .video import MediaError, fit_size, resize_crop

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """How to bring outside videos into the dataset's common format."""

    fps: int = 24  # frames are resampled in time to this rate
    sample_rate: int = 24000  # audio resampled to this rate, mono; must be a multiple of fps
    max_side: int = 256  # shrink so the longer side is at most this (keeps the aspect ratio)
    multiple: int = 16  # crop sides to a multiple of this (the video autoencoder's stride)
    sidecar: str = "auto"  # "auto": use if present; "required": skip videos without; "none": ignore

    def __post_init__(self) -> None:
        if self.fps < 1 or self.max_side < 1 or self.multiple < 1:
            raise ValueError(f"fps {self.fps}, max_side {self.max_side}, multiple {self.multiple}: each must be 1 or more")
        if self.sample_rate % self.fps:
            raise ValueError(f"sample_rate {self.sample_rate} must be a multiple of fps {self.fps}")
        if self.sidecar not in ("auto", "required", "none"):
            raise ValueError(f"sidecar must be auto, required or none, not {self.sidecar!r}")


@dataclasses.dataclass
class ImportSummary:
    imported: list[str] = dataclasses.field(default_factory=list)  # source files
    already: list[str] = dataclasses.field(default_factory=list)  # imported by an earlier run
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (file, reason)
    warnings: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def report(self) -> str:
        lines = [f"imported {len(self.imported)} video(s), {len(self.already)} already present, "
                 f"skipped {len(self.skipped)}"]
        lines += [f"  SKIPPED {f}: {why}" for f, why in self.skipped]
        lines += [f"  note {f}: {why}" for f, why in self.warnings]
        return "\n".join(lines)


class SidecarError(ValueError):
    pass


def _load_vocab(src: Path, vocab_file: Path | None, sidecars: dict[Path, dict]) -> list[str] | None:
    path = vocab_file or (src / "actions.json")
    if path.exists():
        try:
            names = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON ({e}); expected a list of action names") from e
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise DatasetError(f"{path}: expected a JSON list of distinct action names, e.g. [\"idle\", \"left\"]")
        return names
    used = sorted({a for s in sidecars.values() for a in s.get("actions", []) if isinstance(a, str)})
    return used or None


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SidecarError(f"sidecar {path.name} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise SidecarError(f"sidecar {path.name} must be a JSON object with 'actions' and/or 'captions'")
    unknown = set(data) - {"actions", "captions"}
    if unknown:
        raise SidecarError(f"sidecar {path.name} has unknown key(s) {sorted(unknown)}; allowed: actions, captions")
    return data


def _check_sidecar(sidecar: dict, vocab: list[str] | None) -> tuple[list[int] | None, list[dict]]:
    """Action ids and captions from a sidecar; lengths are checked once the video is decoded."""
    actions = None
    if "actions" in sidecar:
        if not isinstance(sidecar["actions"], list):
            raise SidecarError("'actions' must be a list with one action per video frame")
        actions = []
        for i, a in enumerate(sidecar["actions"]):
            if isinstance(a, str) and vocab is not None and a in vocab:
                actions.append(vocab.index(a))
            elif isinstance(a, int) and not isinstance(a, bool) and vocab is not None and 0 <= a < len(vocab):
                actions.append(a)
            else:
                raise SidecarError(f"frame {i}: unknown action {a!r}; the vocabulary is {vocab}")
    captions = sidecar.get("captions", [])
    if not isinstance(captions, list) or not all(
            isinstance(c, dict) and isinstance(c.get("frame"), int) and isinstance(c.get("text"), str) for c in captions):
        raise SidecarError("'captions' must be a list of {\"frame\": int, \"text\": str}")
    return actions, captions


def _import_one(path: Path, sidecar: dict | None, vocab: list[str] | None, cfg: ImportConfig,
                dataset: Path, index: int) -> dict[str, Any]:
    """Decode, resample in time (target frame j shows the latest source frame at or before
    j / fps), resize, and stream into a new episode; any problem aborts it and raises."""
    import av

    actions, captions = _check_sidecar(sidecar, vocab) if sidecar is not None else (None, [])
    spf = cfg.sample_rate // cfg.fps
    writer = EpisodeWriter(dataset, episode_name(index), cfg.fps, cfg.sample_rate, spf)
    picks: list[int] = []  # source frame shown by each output frame
    try:
        try:
            container = av.open(str(path))
        except av.FFmpegError as e:
            raise MediaError(f"cannot open ({e.__class__.__name__}: {e}); the file is corrupt, truncated or not a video") from e
        with container:
            if not container.streams.video:
                raise MediaError("has no video stream")
            vs = container.streams.video[0]
            has_audio = bool(container.streams.audio)
            streams = [vs] + ([container.streams.audio[0]] if has_audio else [])
            resampler = av.AudioResampler(format="flt", layout="mono", rate=cfg.sample_rate)
            audio: list[np.ndarray] = []
            prev = None  # (resized frame, source index)
            n_src, t0, t_last, size, first_shape = 0, None, 0.0, None, None

            def emit_until(t_end: float) -> None:
                while len(picks) / cfg.fps < t_end - 1e-6:
                    writer.add(prev[0], None, {"action": None, "caption": None, "state": {"source_frame": prev[1]}})
                    picks.append(prev[1])

            try:
                for packet in container.demux(*streams):
                    for fr in packet.decode():
                        if isinstance(fr, av.AudioFrame):
                            audio += [r.to_ndarray().reshape(-1) for r in resampler.resample(fr)]
                            continue
                        rgb = fr.to_ndarray(format="rgb24")
                        t = float(fr.time) if fr.time is not None else n_src / float(vs.average_rate or cfg.fps)
                        if first_shape is None:
                            first_shape, t0 = rgb.shape, t
                            size = fit_size(rgb.shape[1], rgb.shape[0], cfg.max_side, cfg.multiple)
                        elif rgb.shape != first_shape:
                            raise MediaError(f"frame {n_src} is {rgb.shape[1]}x{rgb.shape[0]}, the video started at "
                                             f"{first_shape[1]}x{first_shape[0]}; resolution changes are not supported")
                        if prev is not None:
                            emit_until(t - t0)
                        prev = (resize_crop(rgb, size), n_src)
                        step = (t - t0 - t_last) if n_src else 0.0
                        t_last = t - t0
                        n_src += 1
                if has_audio:
                    audio += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
            except av.FFmpegError as e:
                raise MediaError(f"decoding failed after {n_src} frames ({e.__class__.__name__}: {e}); "
                                 f"the file is corrupt or truncated") from e
            if prev is None:
                raise MediaError("contains no decodable video frames (empty, corrupt or truncated)")
            frame_dur = step if n_src > 1 and step > 0 else 1.0 / float(vs.average_rate or cfg.fps)
            emit_until(t_last + frame_dur)
        if actions is not None and len(actions) != n_src:
            raise SidecarError(f"has {len(actions)} actions but the video has {n_src} frames; "
                               f"give exactly one action per frame")
        for c in captions:
            if not 0 <= c["frame"] < n_src:
                raise SidecarError(f"caption at frame {c['frame']} is outside the video's {n_src} frames")
        pick = np.asarray(picks)
        for j, rec in enumerate(writer.records):
            rec["action"] = None if actions is None else actions[picks[j]]
        for c in captions:  # a caption lands on the first output frame that shows its source frame (or later)
            j = min(int(np.searchsorted(pick, c["frame"])), len(picks) - 1)
            writer.records[j]["caption"] = writer.records[j]["caption"] or c["text"]
        pcm = np.zeros(len(picks) * spf, np.float32)
        if audio:
            a = np.concatenate(audio).astype(np.float32)
            pcm[: min(len(a), len(pcm))] = a[: len(pcm)]
        writer.replace_audio(pcm)
    except BaseException:
        writer.abort()
        raise
    return writer.close({"source": "import", "source_file": path.name, "split": split_of(index),
                         "has_audio": has_audio, "has_actions": actions is not None,
                         "source_frames": n_src})


def import_videos(src: str | Path, dataset: str | Path, cfg: ImportConfig | None = None,
                  vocab_file: str | Path | None = None) -> ImportSummary:
    """Import every video in ``src`` into ``dataset``; returns what was imported and skipped."""
    cfg = cfg or ImportConfig()
    src, dataset = Path(src), Path(dataset)
    if not src.is_dir():
        raise DatasetError(f"{src}: not a folder; give the folder that holds your videos")
    videos = sorted(p for p in src.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise DatasetError(f"{src}: no videos found (looked for {', '.join(VIDEO_SUFFIXES)})")
    summary = ImportSummary()
    sidecars: dict[Path, dict] = {}
    bad_sidecars: dict[Path, str] = {}
    if cfg.sidecar != "none":
        for v in videos:
            sc = v.with_suffix(".json")
            if sc.exists():
                try:
                    sidecars[v] = _read_sidecar(sc)
                except SidecarError as e:
                    bad_sidecars[v] = str(e)
    vocab = _load_vocab(src, Path(vocab_file) if vocab_file else None, sidecars)
    base = {"name": dataset.name, "source": f"import of {src.resolve()}", "fps": cfg.fps,
            "sample_rate": cfg.sample_rate, "samples_per_frame": cfg.sample_rate // cfg.fps, "audio_channels": 1,
            "actions": {"names": vocab or [], "axes": []},
            "state_fields": {"source_frame": "index of the source video frame shown"},
            "import_config": dataclasses.asdict(cfg)}
    mpath = dataset / "manifest.json"
    done_files: dict[str, str] = {}
    next_index = 0
    if mpath.exists():
        old = json.loads(mpath.read_text())
        for k in ("fps", "sample_rate"):
            if old.get(k) != base[k]:
                raise DatasetError(f"{dataset} has {k}={old.get(k)}, this import asks for {base[k]}; "
                                   f"import into another folder or pass the same settings")
        if old["actions"]["names"] and vocab and old["actions"]["names"] != vocab:
            raise DatasetError(f"{dataset} has action vocabulary {old['actions']['names']}, this import has {vocab}")
        for e in old["episodes"]:
            info = json.loads((dataset / "episodes" / e["name"] / "episode.json").read_text())
            done_files[info.get("source_file", "")] = e["name"]
            next_index = max(next_index, int(e["name"]) + 1)
    (dataset / "episodes").mkdir(parents=True, exist_ok=True)
    for v in videos:
        if v.name in done_files:
            summary.already.append(v.name)
            continue
        if v in bad_sidecars:
            summary.skipped.append((v.name, bad_sidecars[v]))
            continue
        sidecar = sidecars.get(v)
        if sidecar is None and cfg.sidecar == "required":
            summary.skipped.append((v.name, f"missing sidecar {v.with_suffix('.json').name} (required by --sidecar required)"))
            continue
        try:
            info = _import_one(v, sidecar, vocab, cfg, dataset, next_index)
        except (MediaError, SidecarError) as e:
            summary.skipped.append((v.name, str(e)))
            continue
        if sidecar is None and cfg.sidecar == "auto" and sidecars:
            summary.warnings.append((v.name, f"no sidecar {v.with_suffix('.json').name}: imported without actions or captions"))
        if not info["has_audio"]:
            summary.warnings.append((v.name, "no audio track: stored silence"))
        summary.imported.append(v.name)
        next_index += 1
        write_manifest(dataset, base)
    write_manifest(dataset, base)
    return summary
