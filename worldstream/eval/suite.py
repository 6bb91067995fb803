"""`worldstream eval suite`: every world-model metric for several models, side by side.

For each model (a checkpoint, a bundle or the shipped default, each with its own sampler and
attention view), on held-out episodes of a dataset with ground truth:

* speed: time per chunk (p50 / p95), frames per second, input-to-frame latency (``bench_engine``);
* next-frame PSNR / SSIM (teacher-forced), action following, prompt adherence, audio spectral
  distance (``eval.teacher``);
* revisit consistency: returning views against first visits 5-20 / 20-40 / 40-75 s earlier
  (``eval.stream.revisits``, memory bank as configured);
* drift: sharpness and colour-histogram distance to real frames per minute of one long stream
  (``eval.stream.long_stream``).

Each model's results go to ``OUT/models/NAME.json`` as soon as they are measured, and a model
that already has one is skipped, so the suite resumes and models can be added by later runs
with other settings (a slow teacher with a shorter drift stream, say). Every run rewrites
``OUT/suite.md`` (the table), ``OUT/suite.json`` and ``OUT/drift.png`` from all the models in
the folder. One condition judge is trained once and shared by every model.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import require_counts

SPEC_KEYS = {"sampler": str, "steps": int, "text": float, "action": float, "topk": int, "p": float, "level": float}


@dataclasses.dataclass
class ModelSpec:
    name: str
    checkpoint: str | None  # None: the shipped default
    options: dict[str, Any]


def parse_spec(text: str) -> ModelSpec:
    """``NAME=PATH[,key=value...]`` with keys sampler, steps, text, action (guidance scales), topk
    (memory chunks retrieved; large = dense over the whole bank), p (adaptive mass, 0 = fixed
    top-k) and level (a ``prev_level`` model's previous-frame degradation). PATH ``default`` is the shipped model."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"model spec {text!r}: use NAME=PATH[,key=value...], e.g. student-1=default,steps=1")
    path, *opts = rest.split(",")
    options = {}
    for o in opts:
        k, sep, v = o.partition("=")
        if not sep or k not in SPEC_KEYS:
            raise ValueError(f"model spec {text!r}: unknown option {o!r}; options are {sorted(SPEC_KEYS)}")
        try:
            options[k] = SPEC_KEYS[k](v)
        except ValueError:
            kind = {int: "a whole number", float: "a number"}.get(SPEC_KEYS[k], "text")
            raise ValueError(f"model spec {text!r}: {k} must be {kind}, got {v!r}") from None
    return ModelSpec(name, None if path == "default" else path, options)


def load(spec: ModelSpec, device: str = "cpu"):
    """The World with the spec's view, on ``device``, and its rollout config."""
    from ..engine.stream import World

    world = World.load(spec.checkpoint).to(device)
    o = spec.options
    view = {k: v for k, v in (("memory_topk", o.get("topk")), ("memory_p", o.get("p"))) if v is not None}
    if view:
        world.model.cfg = dataclasses.replace(world.model.cfg, **view)
    r = world.rollout_config()
    given = {k: o[s] for k, s in (("sampler", "sampler"), ("steps", "steps"), ("text_scale", "text"),
                                  ("action_scale", "action"), ("prev_level", "level")) if s in o}
    return world, dataclasses.replace(r, **given)


@dataclasses.dataclass
class SuiteConfig:
    clips: int = 8  # held-out clips for next-frame PSNR (and a third of it for sound)
    walk_frames: int = 48
    walk_starts: int = 4  # starts per walking direction (8 directions; 11 spans each at 48 frames)
    prompt_frames: int = 72
    prompt_starts: int = 3  # held-out starts per prompt
    revisit_episodes: int = 2
    revisit_data: str = ""  # a dataset with long held-out episodes (loop-backs up to 75 s); default: the main one
    revisit_seconds: float = 100.0  # long enough for loop-backs up to 75 s apart
    drift_minutes: float = 10.0
    speed_chunks: int = 120  # 0: no speed columns (when the suite shares the CPU; use `bench engine` alone)
    judge_renders: int = 3000
    judge_steps: int = 2000
    audio_frames: int = 48
    device: str = "cpu"  # where the models run ("cuda": the suite in minutes); the judge and metrics stay on the CPU

    def __post_init__(self):  # a bad count is a clear error before minutes of streaming, not a nan in the table
        require_counts(self, positive=("clips", "walk_frames", "prompt_frames", "audio_frames", "judge_renders",
                                       "judge_steps"),
                       nonnegative=("walk_starts", "prompt_starts", "revisit_episodes", "revisit_seconds",
                                    "drift_minutes", "speed_chunks"))  # 0: that part skipped


def evaluate_model(spec: ModelSpec, dataset: str, cfg: SuiteConfig, judge, progress: bool = True) -> dict[str, Any]:
    from ..data.latents import dataset_paths
    from .bench_engine import bench_engine
    from .stream import long_stream, revisits
    from .teacher import eval_teacher

    t0 = time.perf_counter()
    world, rcfg = load(spec, cfg.device)
    res: dict[str, Any] = {"name": spec.name, "checkpoint": world.meta["path"], "kind": world.meta.get("kind"),
                           "rollout": dataclasses.asdict(rcfg),
                           "view": {k: getattr(world.model.cfg, k) for k in ("window", "sinks", "memory_topk", "memory_p")},
                           "config": dataclasses.asdict(cfg)}
    if cfg.speed_chunks:
        res["speed"] = bench_engine(world, rcfg, chunks=cfg.speed_chunks, latency_trials=10, device=cfg.device)
    res["quality"] = eval_teacher(world, dataset, rcfg, clips=cfg.clips, walk_frames=cfg.walk_frames,
                                  walk_starts=cfg.walk_starts, prompt_starts=cfg.prompt_starts,
                                  prompt_frames=cfg.prompt_frames, judge=judge, audio_frames=cfg.audio_frames)
    if cfg.revisit_episodes:
        res["revisits"] = revisits(world, cfg.revisit_data or dataset_paths(dataset)[0], rcfg, episodes=cfg.revisit_episodes, seconds=cfg.revisit_seconds,
                                   progress=progress, modes=("memory_on",))["summary"]
    if cfg.drift_minutes:
        d = long_stream(world, dataset_paths(dataset)[0], cfg.drift_minutes, rcfg, progress=progress, judge=judge)
        res["drift"] = {"minutes": cfg.drift_minutes, "per_minute": d["per_minute"], "real": d["real"],
                        "ms_per_chunk": d["ms_per_chunk"], "slope_ms_per_chunk_per_minute": d["slope_ms_per_chunk_per_minute"],
                        "slope_rss_mb_per_minute": d["slope_rss_mb_per_minute"]}
    res["seconds"] = time.perf_counter() - t0
    return res


def run_suite(specs: list[ModelSpec], dataset: str, out: str | Path, cfg: SuiteConfig, force: bool = False,
              progress: bool = True, log=print) -> dict[str, Any]:
    from ..data.format import Dataset
    from ..data.latents import dataset_paths
    from .motion import train_condition_net

    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if force or not (out / "models" / f"{s.name}.json").exists()]
    if todo:
        judge = train_condition_net(Dataset(dataset_paths(dataset)[0]), steps=cfg.judge_steps, renders=cfg.judge_renders)
        for s in todo:
            log(f"eval suite: {s.name} ({s.checkpoint or 'default'} {s.options or ''})")
            res = evaluate_model(s, dataset, cfg, judge, progress=progress)
            (out / "models" / f"{s.name}.json").write_text(json.dumps(res, indent=1, default=str))
    results = [json.loads(p.read_text()) for p in sorted((out / "models").glob("*.json"))]
    (out / "suite.json").write_text(json.dumps(results, indent=1, default=str))
    table = format_table(results)
    (out / "suite.md").write_text(table + "\n")
    plot_drift(results, out / "drift.png")
    return {"results": results, "table": table}


def _f(x, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _following(q: dict[str, Any]) -> str:
    """Action following with its 95% interval and, where the game could be replayed, the stop spans."""
    lo, hi = q.get("action_following_ci95", (None, None))
    txt = f"{q['action_following']:.0%} of {q['action_following_spans']}"
    if lo is not None:
        txt += f" ({lo:.0%}-{hi:.0%})"
    stop = q.get("action_following_stopped")
    if stop and stop[1]:
        txt += f", stops {stop[0]}/{stop[1]}"
    return txt


def format_table(results: list[dict[str, Any]]) -> str:
    head = ("| model | sampler | ms/chunk p50 / p95 | fps | next-frame PSNR dB (AE ceiling) | SSIM | action following | "
            "prompt adherence, with / without | revisit dB 5-20 / 20-40 / 40-75 s | drift: sharpness min 1 → last (real) | "
            "colour dist. min 1 → last | audio spectral dist. dB (AE) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        ro, sp, q = r["rollout"], r.get("speed"), r["quality"]
        sampler = f"{ro['sampler']} x{ro['steps']}" + ("" if ro["text_scale"] == 1 and ro["action_scale"] == 1
                                                       else f" cfg {ro['text_scale']:g}/{ro['action_scale']:g}")
        v = r["view"]
        sampler += f", mem top-{v['memory_topk']}" + (f" p{v['memory_p']:g}" if v["memory_p"] else "")
        pa = q.get("prompt_adherence", {})
        with_ = np.mean([x["with_prompt"] for x in pa.values()]) if pa else None
        without = np.mean([x["without"] for x in pa.values()]) if pa else None
        rv = r.get("revisits") or {}
        rev = " / ".join(_f(rv.get(b, {}).get("memory_on_back_vs_first_db"), "{:.1f}") for b in ("5-20s", "20-40s", "40-75s"))
        d = r.get("drift")
        if d:
            pm = d["per_minute"]
            sharp = f"{pm[0]['sharpness']:.3f} → {pm[-1]['sharpness']:.3f} ({d['real']['sharpness']:.3f}), {d['minutes']:g} min"
            col = f"{pm[0]['hist_distance_to_real']:.3f} → {pm[-1]['hist_distance_to_real']:.3f}"
        else:
            sharp = col = "–"
        lines.append(
            f"| {r['name']} | {sampler} | "
            + (f"{sp['ms_per_chunk']['p50']:.1f} / {sp['ms_per_chunk']['p95']:.1f} | {sp['fps']:.1f} | " if sp else "– | – | ")
            + f"{q['next_frame_psnr_db']:.2f} ({q['next_frame_psnr_ae_ceiling_db']:.2f}) | "
            f"{_f(q.get('next_frame_ssim'), '{:.3f}')} | {_following(q)} | "
            f"{_f(with_, '{:.0%}')} / {_f(without, '{:.0%}')} | {rev} | {sharp} | {col} | "
            f"{_f(q.get('audio_spectral_distance_db'), '{:.1f}')} ({_f(q.get('audio_spectral_distance_ae_ceiling_db'), '{:.1f}')}) |")
    return "\n".join(lines)


def plot_drift(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_drift = [r for r in results if r.get("drift")]
    if not with_drift:
        return
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    for r in with_drift:
        pm = r["drift"]["per_minute"]
        m = [p["minute"] for p in pm]
        ax[0].plot(m, [p["sharpness"] / r["drift"]["real"]["sharpness"] for p in pm], marker="o", label=r["name"])
        ax[1].plot(m, [p["hist_distance_to_real"] for p in pm], marker="o", label=r["name"])
    ax[0].axhline(1.0, color="grey", lw=0.8, ls="--")
    ax[0].set(xlabel="minute of the stream", ylabel="sharpness / real frames'", title="sharpness (1 = real)")
    ax[1].set(xlabel="minute of the stream", ylabel="distance", title="colour-histogram distance to real frames")
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
