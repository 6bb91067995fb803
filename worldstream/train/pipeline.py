"""`worldstream train all`: the whole pipeline on `overworld` data, one command, resumable.

    record (two resolutions) -> video and audio autoencoders (the video one then fine-tuned for shift
    consistency when the preset asks) -> latents -> teacher (unbounded view)
    -> teacher fine-tuned with the streaming view (window, sinks, memory) -> student (1-4 steps)
    -> evaluation -> a self-contained bundle of the student (``worldstream export``)

Every stage is a trainer that resumes by itself, so re-running the same command after an
interruption carries on where it stopped; finished stages are skipped. ``tiny`` runs the whole
chain in about two minutes (the smoke test); ``default`` trains everything from scratch (hours on
the 2-core CPU, much less on one GPU); ``refine`` trains the shipped model further: it adopts the
bundle's autoencoders and starts the teacher from its weights (the current default was made so,
twice).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..checkpoint import load_json
from ..weights import resolve, verify


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The defaults are the first shipped model's recipe (the current one is that, then ``refine`` twice),
    sized to about two hours on the 2-core CPU
    (log.md, 2026-11-25, fourth session: video AE ~0.28 s/step, audio AE ~0.19, teacher ~2.1,
    view ~7, student ~9)."""
    episodes: int = 40
    frames: int = 480
    size: tuple[int, int] = (128, 128)
    wide_episodes: int = 20
    wide_size: tuple[int, int] = (160, 96)  # a second aspect ratio: native-resolution training
    video_ae: str = "f8"
    video_ae_steps: int = 3000
    # then this many steps of the shift-consistency loss at this weight (0 = none; docs/tokenizers.md):
    # a frame moved by a few pixels must encode to the moved latent, so scrolling is predictable
    video_ae_shift: float = 0.0
    video_ae_shift_steps: int = 1000
    audio_ae: str = "default"
    audio_ae_steps: int = 1500
    omni: str = "default"
    prev_frame: bool = False  # the world model predicts around the previous frame (``OmniConfig.prev_frame``)
    prev_degrade: float = 0.0  # share of teacher clips with a degraded previous frame (``TeacherTrainConfig``)
    teacher_steps: int = 1000
    teacher_chunks: int = 8
    teacher_continuation: float = 0.1  # share of clean-history (continuation) batches in the teacher's mix
    view_steps: int = 120
    view_chunks: int = 16  # 32 with window 12 cost 15 s/step; 16 with window 8 cost 3.5 (log.md)
    view_continuation: float = 0.35  # share of clean-history batches in the view fine-tune
    window: int = 8
    sinks: int = 1
    memory_topk: int = 4
    student_steps: int = 150
    student_history: int = 8
    student_rollout: int = 16
    student_teacher_steps: int = 6
    student_batch: int = 4
    student_self_forcing_from: int = -1  # the step from which own rollouts train the student (-1: a fifth of its steps)
    batch: int = 8
    # time budgets of the teacher, view and student stages in minutes (0 = none: the steps decide); with
    # one, a stage ends by then with its learning rate decayed to the end (``schedule_step``) and its
    # steps are the most it may take: a GPU recipe whose step rates are not known in advance
    teacher_minutes: float = 0.0
    view_minutes: float = 0.0
    student_minutes: float = 0.0
    compile: bool = True  # compile the teacher's dense parts (faster steps after a minute; not for tiny runs)
    # "" trains everything from scratch; a bundle or run folder (e.g. "default", the shipped model)
    # lends its autoencoders (their training is skipped) and starts the teacher from its world
    # model's weights, so a longer recipe builds on what an earlier one learnt
    start_from: str = ""
    # a pixel world model (``tokenizers.pixels``): no video autoencoder, the frames normalised per colour; the
    # world model predicts each frame around the last one moved by whole pixels (``OmniConfig.move_reach``),
    # what a move uncovers filled by the stream's ground (``engine.ground``), trained on next-frame levels
    # (``TeacherTrainConfig.levels``) to make each frame in one step as it streams. With view_steps and
    # student_steps 0 that model is the one shipped: no view fine-tune, no distillation
    pixels: bool = False
    move_reach: int = 0
    teacher_levels: str = "diffusion"
    teacher_lr: float = 3e-4
    teacher_warmup: int = 200
    audio_from: str = ""  # a bundle whose audio autoencoder is adopted (a pixel model has no video one to adopt)
    wide: bool = True  # train on the second aspect ratio too


PRESETS = {
    "tiny": PipelineConfig(episodes=10, frames=32, size=(32, 32), wide_episodes=10, wide_size=(48, 32), video_ae="tiny",
                           video_ae_steps=20, audio_ae="tiny", audio_ae_steps=20, omni="tiny", teacher_steps=10,
                           teacher_chunks=4, view_steps=4, view_chunks=8, window=3, sinks=1, memory_topk=2,
                           student_steps=4, student_history=2, student_rollout=6, student_teacher_steps=2, batch=4,
                           compile=False),
    "default": PipelineConfig(),
    # the shipped model, trained further: its autoencoders, its weights as the teacher's start, twice
    # the recorded data and a continuation-heavy teacher (streaming is continuation) (log.md, 2026-11-30)
    "refine": PipelineConfig(episodes=80, start_from="default", teacher_steps=1000, teacher_continuation=0.35,
                             view_steps=120, student_steps=150),
}
# refine with a teacher trained 3x as long: its held-out loss was still falling ~0.01 per 100 steps
# at the end of both refine rounds, and the teacher itself dissolves in free-running (log.md,
# ninth and tenth sessions)
PRESETS["refine_long"] = dataclasses.replace(PRESETS["refine"], teacher_steps=3000)
# the shipped model fine-tuned into one that predicts each frame around the previous one (``prev_frame``):
# a standing world holds three times as long; continuation-heavy as in its first runs. 1,000 teacher
# steps: ~57 min at 3.4 s a step in float32 on a 2-core CPU without bf16 units, so the whole recipe
# fits one 3-hour session there (log.md, fifteenth to seventeenth sessions)
PRESETS["prev"] = dataclasses.replace(PRESETS["refine"], prev_frame=True, teacher_steps=1000, teacher_continuation=0.65)
# prev with half the teacher's clips given a blurred, noisy previous frame: the prev student kept the
# place but smoothed it a little more every frame into a bright blob (log.md, eighteenth session)
PRESETS["prev_sharp"] = dataclasses.replace(PRESETS["prev"], prev_degrade=0.5)
# refine sized for one GPU call of the device tool: batches 8x (teacher, view) and 4x (student) the CPU's,
# each stage in a time budget, its steps only an upper bound (an H200, eager, made 862 teacher, 338 view
# and 44 student steps in these budgets: log.md, twenty-eighth session), the student's own rollouts from
# step 40; the data and autoencoders are refine's
PRESETS["refine_gpu"] = dataclasses.replace(PRESETS["refine"], batch=64, teacher_steps=4000, view_steps=1000,
                                            student_steps=600, student_batch=16, student_self_forcing_from=40,
                                            teacher_minutes=2.25, view_minutes=1.0, student_minutes=1.75,
                                            compile=False)
# refine_gpu with its teacher trained 2.2x as long and its view 1.5x: the teacher's held-out loss was
# still falling when its 2.25 minutes ended (0.680 -> 0.661 -> 0.658 at steps 400 / 800 / 862); the
# student is distilled on the CPU afterwards (2.5 s a step eager there; log.md, twenty-ninth session)
PRESETS["refine_gpu_long"] = dataclasses.replace(PRESETS["refine_gpu"], teacher_minutes=5.0, view_minutes=1.5,
                                                 teacher_steps=8000, view_steps=2000)
# refine_gpu_long sized to finish the student on the GPU inside one device call of 10 minutes (the
# call of refine_gpu_long --until view ran 502 s): the teacher's held-out loss had flattened by 4
# minutes (0.559 at step 2,400, 0.557 at 2,907), and a distillation step makes half the transformer
# calls it made when the student was left to the CPU (2.5 s a step then; log.md, thirtieth session).
# Its student's step rate on a GPU is not measured yet; the view teacher comes back either way
PRESETS["refine_gpu_one_call"] = dataclasses.replace(PRESETS["refine_gpu_long"], teacher_minutes=4.0,
                                                     view_minutes=1.25, student_minutes=2.25)
# the pixel world (log.md, forty-fifth session): refine's data and the shipped audio autoencoder; a 10M move
# model at window 4 trained 65 minutes on 128 x 128 clips of 5 frames, 16 a batch (3.8 s a step in float32 on
# the 2-core CPU, ~1,000 steps), then shipped as it is
PRESETS["pixel"] = dataclasses.replace(PRESETS["refine"], start_from="", audio_from="default", pixels=True,
                                       move_reach=3, teacher_levels="next", omni="pixel", window=4, sinks=0,
                                       memory_topk=0, teacher_steps=2400, teacher_minutes=65.0, teacher_chunks=5,
                                       batch=16, teacher_lr=4e-4, teacher_warmup=50, teacher_continuation=0.1,
                                       view_steps=0, student_steps=0, compile=False, wide=False, prev_frame=True)
PRESETS["tiny_pixel"] = dataclasses.replace(PRESETS["tiny"], pixels=True, move_reach=2, teacher_levels="next",
                                            omni="tiny_pixel", window=3, sinks=0, memory_topk=0, view_steps=0,
                                            teacher_steps=4,
                                            student_steps=0, wide=False, prev_frame=True)


def _with_continuation(probs: tuple[float, ...], share: float) -> tuple[float, ...]:
    """The teacher's task shares with continuation (the last) set to ``share``, the rest scaled."""
    rest = sum(probs[:-1])
    return tuple(x * (1 - share) / rest for x in probs[:-1]) + (share,)


def _adopt_autoencoders(source: str, runs: Path, only: str | None = None) -> None:
    """Copy a bundle's (or run's) autoencoders (``only``: that one) into ``runs`` as the pipeline's own, once."""
    import shutil

    from ..engine.generate import autoencoder_dir, load_autoencoders

    src = resolve(source)
    verify(src)
    meta = load_json(src / "config.json")
    load_autoencoders(meta, src)  # present and matching their recorded SHA-256
    for key, info in meta["latents"].items():
        dst = runs / key
        if info is None or (only and key != only) or (dst / "model.safetensors").exists():
            continue
        p = autoencoder_dir(info, src)
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p / "config.json", dst / "config.json")
        shutil.copyfile(p / "model.safetensors", dst / "model.safetensors")


def _done(run: Path, steps: int) -> bool:
    """The stage's run reached its steps, or its time budget ended it."""
    cfg = run / "config.json"
    if not cfg.exists():
        return False
    meta = load_json(cfg)
    return int(meta.get("step", 0)) >= steps or bool(meta.get("budget_ended"))


STAGES = ("record", "autoencoders", "latents", "teacher", "view", "student", "eval")


def train_all(preset: str, root: str | Path, progress: bool = True, log=print, device: str = "cpu",
              until: str = "eval") -> dict[str, Any]:
    """The whole chain; ``device`` is where the latents are encoded and the teacher and the student
    train (the autoencoders and the evaluation run on the CPU). ``until`` names the last stage to run
    (``STAGES``): e.g. "student" on a GPU machine whose student is measured elsewhere."""
    import os

    from ..data.record import RecordConfig, record
    from ..distill.student import StudentTrainConfig, train_student
    from ..tokenizers.encode import encode_dataset
    from ..worlds.overworld import OverworldConfig
    from .autoencoder import AETrainConfig, train_autoencoder
    from .teacher import TeacherTrainConfig, train_teacher

    if preset not in PRESETS:
        raise ValueError(f"unknown pipeline preset {preset!r}; choose from {sorted(PRESETS)}")
    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r}; choose from {list(STAGES)}")
    stop = lambda stage: stage == until  # noqa: E731
    p = PRESETS[preset]
    root = Path(root)
    data, wide, runs = root / "data" / "overworld", root / "data" / "overworld_wide", root / "runs"
    workers = max(2, min(16, os.cpu_count() or 2))  # one episode per process
    log(f"[1/7] record {p.episodes} + {p.wide_episodes} episodes at {p.size} and {p.wide_size}")
    record(data, RecordConfig(world=OverworldConfig(width=p.size[0], height=p.size[1]), episodes=p.episodes,
                              frames=p.frames), workers=workers, progress=progress)
    record(wide, RecordConfig(world=OverworldConfig(width=p.wide_size[0], height=p.wide_size[1]),
                              episodes=p.wide_episodes, frames=p.frames), workers=workers, progress=progress)
    if stop("record"):
        return {}
    log("[2/7] autoencoders")
    if p.start_from:
        _adopt_autoencoders(p.start_from, runs)
    if p.audio_from:
        _adopt_autoencoders(p.audio_from, runs, only="audio_ae")
    if p.pixels and not (runs / "pixels" / "model.safetensors").exists():
        from ..tokenizers.pixels import fit_pixel_codec

        fit_pixel_codec(data, runs / "pixels")
    if not _done(runs / "video_ae", p.video_ae_steps) and not p.start_from and not p.pixels:
        train_autoencoder(AETrainConfig(kind="video", preset=p.video_ae, dataset=str(data), steps=p.video_ae_steps,
                                        batch=8, clip_frames=4, eval_every=max(1, p.video_ae_steps // 6)),
                          runs / "video_ae", progress=progress)
    if not _done(runs / "audio_ae", p.audio_ae_steps) and not p.start_from and not p.audio_from:
        train_autoencoder(AETrainConfig(kind="audio", preset=p.audio_ae, dataset=str(data), steps=p.audio_ae_steps,
                                        batch=16, clip_frames=8, eval_every=max(1, p.audio_ae_steps // 5)),
                          runs / "audio_ae", progress=progress)
    video_ae = runs / ("pixels" if p.pixels else "video_ae")
    shifted = not p.pixels and p.video_ae_shift and load_json(video_ae / "config.json")["train"].get("shift_weight", 0.0) == 0
    if shifted:  # (an adopted autoencoder that had it already is used as it is)
        if not _done(runs / "video_ae_shift", p.video_ae_shift_steps):
            train_autoencoder(AETrainConfig(kind="video", preset=p.video_ae, dataset=str(data),
                                            steps=p.video_ae_shift_steps, batch=8, clip_frames=4, lr=2e-4,
                                            shift_weight=p.video_ae_shift, init_from=str(video_ae),
                                            eval_every=max(1, p.video_ae_shift_steps // 4)),
                              runs / "video_ae_shift", progress=progress)
        video_ae = runs / "video_ae_shift"
    if stop("autoencoders"):
        return {}
    log("[3/7] latents")
    cache = "pixels" if p.pixels else "pipeline"
    sets = (data, wide) if p.wide else (data,)
    for ds in sets:
        encode_dataset(ds, video_ae, runs / "audio_ae", name=cache, progress=progress, device=device)
    both = ",".join(map(str, sets))
    if stop("latents"):
        return {}
    log("[4/7] teacher")
    tcfg = TeacherTrainConfig(dataset=both, latents=cache, preset=p.omni, steps=p.teacher_steps, batch=p.batch,
                              chunks=p.teacher_chunks, eval_every=max(1, p.teacher_steps // 10),
                              task_probs=_with_continuation(TeacherTrainConfig.task_probs, p.teacher_continuation),
                              init_from=str(resolve(p.start_from)) if p.start_from else "", compile=p.compile,
                              prev_frame=p.prev_frame, prev_degrade=p.prev_degrade, lr=p.teacher_lr,
                              warmup=p.teacher_warmup, move_reach=p.move_reach, levels=p.teacher_levels,
                              **({"window": p.window, "sinks": p.sinks, "memory_topk": p.memory_topk}
                                 if not p.view_steps else {}))
    minutes = lambda m: m * 60 if m else None  # noqa: E731
    if not _done(runs / "teacher", p.teacher_steps):
        train_teacher(tcfg, runs / "teacher", progress=progress, device=device, budget_s=minutes(p.teacher_minutes))
    if stop("teacher"):
        return {}
    log("[5/7] teacher with the streaming view")
    vcfg = dataclasses.replace(tcfg, steps=max(1, p.view_steps), batch=max(2, p.batch // 2), chunks=p.view_chunks, lr=1e-4,
                               warmup=max(1, p.view_steps // 20), window=p.window, sinks=p.sinks,
                               memory_topk=p.memory_topk, init_from=str(runs / "teacher"),
                               task_probs=_with_continuation(tcfg.task_probs, p.view_continuation),
                               eval_every=max(1, p.view_steps // 5))
    viewed = runs / "teacher_view" if p.view_steps else runs / "teacher"  # (trained with its view from the start)
    if p.view_steps and not _done(viewed, p.view_steps):
        train_teacher(vcfg, viewed, progress=progress, device=device, budget_s=minutes(p.view_minutes))
    if stop("view"):
        return {}
    log("[6/7] student")
    scfg = StudentTrainConfig(teacher=str(viewed), dataset=both, latents=cache, steps=max(1, p.student_steps),
                              batch=p.student_batch, history=p.student_history, rollout_chunks=p.student_rollout,
                              teacher_steps=p.student_teacher_steps,
                              self_forcing_from=(p.student_self_forcing_from if p.student_self_forcing_from >= 0
                                                 else p.student_steps // 5), eval_every=max(1, p.student_steps // 10),
                              warmup=max(1, p.student_steps // 20))
    final = runs / "student" if p.student_steps else viewed  # (a next-level model makes frames in 1 step already)
    if p.student_steps and not _done(final, p.student_steps):
        train_student(scfg, final, progress=progress, device=device, budget_s=minutes(p.student_minutes))
    if stop("student"):
        return {}
    log("[7/7] evaluation")
    from ..engine.rollout import RolloutConfig
    from ..eval.teacher import eval_teacher

    small = preset == "tiny"
    kw = dict(clips=1 if small else 12, walk_frames=8 if small else 48, walk_starts=1 if small else 4,
              prompt_starts=1 if small else 3, prompt_frames=6 if small else 72,
              classifier_steps=5 if small else 2000, classifier_renders=20 if small else 3000,
              audio_frames=8 if small else 48)
    results = {}
    if p.student_steps:
        results["teacher"] = eval_teacher(viewed, data, RolloutConfig(sampler="euler", steps=2 if small else 8),
                                          out=root / "eval" / "teacher",
                                          **dict(kw, walk_starts=1 if small else 2))  # 8 passes a chunk: half the walks
    results["student"] = eval_teacher(final, data, RolloutConfig(sampler="x0", steps=2 if p.student_steps else 1,
                                                                 text_scale=1.0, action_scale=1.0),
                                      out=root / "eval" / "student", **kw)
    (root / "eval").mkdir(parents=True, exist_ok=True)
    (root / "eval" / "summary.json").write_text(json.dumps(results, indent=1, default=str))
    from ..weights import export_bundle

    bundle = export_bundle(final, root / "bundle")
    log(f"done: {final} (the 1-step model), {root / 'eval' / 'summary.json'}, and {bundle['out']}: the model with "
        f"its autoencoders in one folder ({bundle['bytes'] / 2**20:.0f} MB; `worldstream export {final}` "
        "makes it the package's default model)")
    return results
