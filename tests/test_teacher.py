"""Teacher training: per-modality noise tasks, resume, DDP with 2 processes equals 1 process."""
import os
import subprocess
import sys

import pytest
import torch

from worldstream.checkpoint import load_tensors
from worldstream.train.teacher import TeacherTrainConfig, draw_tasks, train_teacher


def _cfg(ds, steps, **kw):
    return TeacherTrainConfig(dataset=str(ds), preset="tiny", steps=steps, batch=4, chunks=4, eval_every=steps,
                              warmup=2, **kw)


def test_tasks_set_per_modality_noise_levels():
    torch.manual_seed(0)
    cfg = TeacherTrainConfig(dataset="unused", history_noise=0.1)
    d = draw_tasks(cfg, 4000, 6)
    tv, ta, task = d["tv"], d["ta"], d["task"]
    assert (ta[task == 1] == 0).all()  # video|audio: audio given clean
    assert (tv[task == 2] == 0).all()  # audio|video: video given clean
    assert (tv[task == 3][:, 0] == 0).all() and (tv[task == 3][:, 1:] > 0).all()  # image->world
    cont = tv[task == 4]
    assert (cont[:, 0] <= 0.1).all() and (cont[:, -1] > 0).all()  # history lightly noised, future generated
    joint = tv[task == 0]
    assert (joint > 0).all() and joint.std() > 0.1  # diffusion forcing: every chunk its own level
    frac = torch.bincount(task, minlength=5).float() / 4000
    assert abs(frac[0] - 0.5) < 0.05
    assert 0.05 < d["drop_text"].float().mean() < 0.15 and 0.05 < d["drop_action"].float().mean() < 0.15


def test_teacher_trains_and_resumes_exactly(latent_dataset, tmp_path):
    torch.set_num_threads(1)
    train_teacher(_cfg(latent_dataset, 6, bf16=False), tmp_path / "a", progress=False)
    train_teacher(_cfg(latent_dataset, 6, bf16=False), tmp_path / "b", progress=False, max_seconds=0.0)
    m = train_teacher(_cfg(latent_dataset, 6, bf16=False), tmp_path / "b", progress=False)
    assert m["step"] == 6 and m["heldout_velocity_mse"] > 0
    assert sorted(p.name for p in (tmp_path / "a" / "samples").glob("*.mp4")) == ["step_000006.mp4"]  # sample video
    a, b = load_tensors(tmp_path / "a" / "model.safetensors"), load_tensors(tmp_path / "b" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize("still", [False, True])
def test_ddp_two_processes_match_one_process(latent_dataset, tmp_path, still):
    """``still``: a still run's row lives on the second process, and both keep its next own frame."""
    torch.set_num_threads(1)
    kw = dict(prev_frame=True, levels="next", still_rows=1) if still else {}
    steps = 3 if still else 2  # (the third step's run row is the second step's made frame)
    train_teacher(_cfg(latent_dataset, steps, bf16=False, **kw), tmp_path / "single", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           "29534" if still else "29533",
           "-m", "worldstream.train.teacher", "--data", str(latent_dataset), "--out", str(tmp_path / "ddp"),
           "--preset", "tiny", "--steps", str(steps), "--batch", "4", "--chunks", "4", "--eval-every", str(steps),
           "--fp32", "--threads", "1", "--warmup", "2"]
    if still:
        cmd += ["--prev-frame", "--levels", "next", "--still-rows", "1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    a = load_tensors(tmp_path / "single" / "train_state.safetensors")
    b = load_tensors(tmp_path / "ddp" / "train_state.safetensors")
    for k in a:
        if k.startswith("model."):
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_generate_writes_a_video_with_sound(latent_dataset, tmp_path):
    import av

    from worldstream.cli import main

    train_teacher(_cfg(latent_dataset, 2), tmp_path / "t", progress=False)
    out = tmp_path / "gen.mp4"
    assert main(["generate", "--checkpoint", str(tmp_path / "t"), "--prompt", "it begins to snow",
                 "--actions", "walk_e:6,idle:2", "--seconds", "0.5", "--steps", "2", "--out", str(out)]) == 0
    with av.open(str(out)) as c:
        assert c.streams.video and c.streams.audio
        assert sum(1 for _ in c.decode(video=0)) == 12  # 0.5 s at 24 fps
    assert main(["generate", "--checkpoint", str(tmp_path / "t"), "--actions", "fly:3", "--out", str(out)]) == 2


def test_eval_teacher_runs_end_to_end(latent_dataset, tmp_path):
    from worldstream.engine.rollout import RolloutConfig
    from worldstream.eval import teacher as ev

    train_teacher(_cfg(latent_dataset, 2), tmp_path / "t", progress=False)
    res = ev.eval_teacher(tmp_path / "t", latent_dataset, RolloutConfig(sampler="euler", steps=1), clips=1, history=2,
                          out=tmp_path / "eval", walk_frames=8, walk_starts=1, prompt_starts=2, prompt_frames=6, classifier_steps=5,
                          classifier_renders=20)
    assert 0 < res["next_frame_psnr_db"] < 60 and 0 <= res["action_following"] <= 1
    assert set(res["prompt_adherence"]) == set(ev.PROMPTS)
    assert (tmp_path / "eval" / "walk_e.mp4").exists() and (tmp_path / "eval" / "teacher.json").exists()


def test_training_on_a_device_that_is_not_there_is_a_clear_error():
    import pytest
    import torch

    from worldstream.train.state import train_device

    assert train_device("cpu", 1).type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            train_device("cuda", 1)


def test_bad_training_settings_and_a_missing_latent_cache_are_clear_errors(latent_dataset):
    from worldstream.data.format import DatasetError
    from worldstream.data.latents import LatentClips
    from worldstream.distill.student import StudentTrainConfig
    from worldstream.train.autoencoder import AETrainConfig

    for kw in ({"chunks": 0}, {"batch": 0}, {"lr": -1.0}, {"steps": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} = .*must be (more than 0|0 or more)"):
            TeacherTrainConfig(dataset=str(latent_dataset), preset="tiny", **kw)
    with pytest.raises(ValueError, match="rollout_chunks"):
        StudentTrainConfig(teacher="t", dataset="d", rollout_chunks=0)
    with pytest.raises(ValueError, match="clip_frames"):
        AETrainConfig(kind="video", preset="tiny", dataset="d", clip_frames=0)
    # the cache the data has is named, with the command that makes the one asked for
    with pytest.raises(DatasetError, match=r"no latent cache named 'other' \(it has default: pass --latents NAME\)"
                                           r".*worldstream encode"):
        LatentClips(str(latent_dataset), "other", "train", 4)


def test_clips_drawn_around_caption_changes(latent_dataset, tmp_path):
    """change_share draws clips whose caption is a change the first frames do not show yet; at 0
    the draws are those of a loader without it, and a run saved before the setting resumes."""
    import json

    import pytest

    from worldstream.checkpoint import CheckpointError
    from worldstream.data.latents import LatentClips
    from worldstream.data.record import RecordConfig, record
    from worldstream.tokenizers.encode import encode_dataset
    from worldstream.worlds.overworld import OverworldConfig
    from worldstream.worlds.overworld.policy import ExplorerConfig

    ds = tmp_path / "changing"
    record(ds, RecordConfig(world=OverworldConfig(width=32, height=32), episodes=6, frames=48,
                            explorer=ExplorerConfig(condition_rate=1.0)), progress=False)
    root = latent_dataset.parent
    encode_dataset(ds, root / "video", root / "audio", progress=False)
    F = 6
    lat = LatentClips(str(ds), "default", "train", F, seed=0, change_share=1.0)
    assert sum(len(it["changes"]) for it in lat.items) >= 3
    for it in lat.items:
        for c in it["changes"]:
            assert it["captions"][c] != it["captions"][c - 1]  # a change of the caption in force
    inside = 0
    for _ in range(10):
        clip = lat.sample(4)
        for (ep, s), cap in zip(clip.start, clip.captions):
            it = next(i for i in lat.items if i["episode"].name == ep.name)
            near = [c for c in it["changes"] if s - F // 2 <= c <= s + F - 1]
            assert near and cap == it["captions"][s + F - 1]
            inside += any(c > s for c in near)
    assert inside >= 20  # mostly the change falls after the clip's first frame
    plain, zero = (LatentClips(str(ds), "default", "train", F, seed=3, **kw) for kw in ({}, {"change_share": 0.0}))
    assert [x.start for x in (plain.sample(8), plain.sample(8))] == [x.start for x in (zero.sample(8), zero.sample(8))]
    with pytest.raises(ValueError, match="change_share"):
        LatentClips(str(ds), "default", "train", F, change_share=1.5)

    # a run saved before the setting existed resumes under its default, and refuses another value
    out = tmp_path / "run"
    train_teacher(_cfg(latent_dataset, 2, bf16=False, samples=False), out, progress=False)
    meta = json.loads((out / "config.json").read_text())
    del meta["train"]["change_share"]
    (out / "config.json").write_text(json.dumps(meta))
    assert train_teacher(_cfg(latent_dataset, 3, bf16=False, samples=False), out, progress=False)["step"] == 3
    with pytest.raises(CheckpointError, match="change_share"):
        train_teacher(_cfg(latent_dataset, 4, bf16=False, samples=False, change_share=0.5), out, progress=False)


def test_a_degraded_previous_frame_is_blurred_and_noised_per_clip_and_chunk_except_the_first():
    from worldstream.model.omni import degrade_prev, previous_frames

    torch.manual_seed(0)
    video = torch.randn(2, 6, 4, 8, 8)
    prev = previous_frames(video, 2)
    eps = torch.randn(2, 3, 4, 8, 8)
    none = degrade_prev(prev, 2, torch.zeros(2), torch.zeros(2), eps, 0.5)
    assert torch.equal(none, prev)  # level 0: the clean frame
    blurred = degrade_prev(prev, 2, torch.tensor([1.0, 0.0]), torch.zeros(2), eps, 0.5)
    assert torch.equal(blurred[1], prev[1]) and torch.equal(blurred[0, :2], prev[0, :2])  # only clip 0, not chunk 0
    assert blurred[0, 2:].std() < 0.6 * prev[0, 2:].std()  # a 3x3 mean of white noise keeps ~1/3 of its std
    assert torch.equal(blurred[0, 2], blurred[0, 3])  # one previous frame per chunk
    noisy = degrade_prev(prev, 2, torch.zeros(2), torch.tensor([0.0, 0.4]), eps, 0.5)
    torch.testing.assert_close(noisy[1, 2:4], prev[1, 2:4] + 0.2 * eps[1, 1, None])
    cfg = TeacherTrainConfig(dataset="unused", prev_frame=True, prev_degrade=0.5)
    d = draw_tasks(cfg, 4000, 3, (4000, 6, 4, 8, 8))
    on = d["prev_blur"] > 0
    assert 0.45 < on.float().mean() < 0.55 and ((d["prev_noise"] > 0) == on).all()
    assert "prev_blur" not in draw_tasks(TeacherTrainConfig(dataset="unused"), 4, 3, (4, 6, 4, 8, 8))


def test_a_prev_frame_teacher_trains_with_degraded_previous_frames(latent_dataset, tmp_path):
    torch.set_num_threads(1)
    m = train_teacher(_cfg(latent_dataset, 3, bf16=False, prev_frame=True, prev_degrade=0.5, samples=False),
                      tmp_path / "t", progress=False)
    assert m["step"] == 3 and torch.isfinite(torch.tensor(m["heldout_velocity_mse"]))
    with pytest.raises(ValueError, match="needs a prev-frame model"):
        train_teacher(_cfg(latent_dataset, 3, prev_degrade=0.5), tmp_path / "u", progress=False)
    assert not (tmp_path / "u" / "model.safetensors").exists()


def test_a_prev_level_model_hears_the_level_on_noisy_video_tokens_only():
    """The level of each chunk's degraded previous frame is drawn per chunk (0 for the first chunk
    and for the clean share of clips) and changes what a noisy chunk's tokens make, never a clean
    chunk's: history in a stream's cache does not depend on the level its frames were made at."""
    import dataclasses

    from worldstream.model.omni import Omni, degrade_at_level, degrade_prev, omni_preset, previous_frames

    torch.manual_seed(0)
    cfg = TeacherTrainConfig(dataset="unused", prev_frame=True, prev_degrade=0.5, prev_level=True)
    d = draw_tasks(cfg, 4000, 3, (4000, 6, 4, 8, 8))
    lv = d["prev_level"]
    assert "prev_blur" not in d and lv.shape == (4000, 3) and (lv[:, 0] == 0).all()
    on = (lv[:, 1:] > 0).any(1).float().mean()
    assert 0.45 < on < 0.55 and 0.2 < lv[lv > 0].mean() < 0.3 * 2 and lv.max() <= 1  # uniform in [0, 1]
    prev = previous_frames(torch.randn(2, 6, 4, 8, 8), 2)
    eps = torch.randn(2, 3, 4, 8, 8)
    level = torch.tensor([[0.0, 0.4, 1.0], [0.0, 0.0, 0.2]])
    torch.testing.assert_close(degrade_at_level(prev, 2, level, eps, 0.5),
                               degrade_prev(prev, 2, level, level * 0.5, eps, 0.5))

    mc = dataclasses.replace(omni_preset("tiny"), audio_channels=0, prev_frame=True, prev_std=0.5, prev_level=True)
    model = Omni(mc).eval()
    assert model.prev_level_in.weight.abs().sum() == 0  # starts at zero: a prev model fine-tunes from where it stood
    torch.nn.init.normal_(model.prev_level_in.weight, std=0.5)
    for m in (model.video_out, model.out_ada, model.prev_in):
        torch.nn.init.normal_(m.weight, std=0.05)
    cf = mc.chunk_frames
    video = torch.randn(1, 3 * cf, mc.latent_channels, 4, 4)
    t = torch.tensor([[0.0, 0.7, 0.7]])  # a clean chunk, then two noisy ones
    actions = torch.zeros(1, 3 * cf, dtype=torch.long)
    prev = previous_frames(video, cf)
    with torch.no_grad():
        base, _ = model(video, t, actions, prev=prev, prev_level=torch.zeros(1, 3))
        told, _ = model(video, t, actions, prev=prev, prev_level=torch.tensor([[0.9, 0.9, 0.0]]))
        unsaid, _ = model(video, t, actions, prev=prev)
    assert torch.equal(base, unsaid)  # None = level 0
    assert torch.equal(told[:, :cf], base[:, :cf])  # the clean chunk ignores its level
    assert (told[:, cf : 2 * cf] - base[:, cf : 2 * cf]).abs().max() > 1e-3  # the noisy chunk hears it
    with pytest.raises(ValueError, match="one per chunk"):
        model(video, t, actions, prev=prev, prev_level=torch.zeros(1, 2))


def test_a_prev_level_teacher_trains_and_needs_degraded_frames(latent_dataset, tmp_path):
    torch.set_num_threads(1)
    m = train_teacher(_cfg(latent_dataset, 2, bf16=False, prev_frame=True, prev_degrade=0.5, prev_level=True,
                           samples=False), tmp_path / "t", progress=False)
    assert m["step"] == 2 and torch.isfinite(torch.tensor(m["heldout_velocity_mse"]))
    import json

    assert json.loads((tmp_path / "t" / "config.json").read_text())["model"]["prev_level"]
    with pytest.raises(ValueError, match="--prev-degrade"):
        train_teacher(_cfg(latent_dataset, 2, prev_frame=True, prev_level=True), tmp_path / "u", progress=False)


def test_a_prev_frame_fine_tune_keeps_its_preconditioning_only_on_the_latents_it_started_from(latent_dataset, tmp_path):
    """The change's std (``OmniConfig.prev_std``) belongs to a latent space: a fine-tune on the
    latents of the run it starts from keeps it, one on other latents (a shift-consistent
    autoencoder's) measures its own."""
    import json

    from worldstream.data.latents import LatentClips
    from worldstream.train.teacher import model_config

    clips = LatentClips(str(latent_dataset), "default", "train", 4)
    measured = round(clips.frame_change_std(), 4)
    for latents, want in (("default", 9.5), ("other", measured)):
        start = tmp_path / latents
        start.mkdir()
        (start / "config.json").write_text(json.dumps({"model": {"prev_std": 9.5}, "train": {"latents": latents}}))
        cfg = TeacherTrainConfig(dataset=str(latent_dataset), prev_frame=True, init_from=str(start))
        assert model_config(cfg, clips).prev_std == want
    assert measured != 9.5


def test_still_runs_are_the_models_own_stream_of_a_still_scene(latent_dataset, tmp_path):
    """``--still-rows``: a run's row is exactly a one-step stream's next frame of a still scene (its own
    frames as history, every key idle), the frame the pass makes becomes its history, and after its depth
    a run starts anew on a fresh scene; a training run with runs resumes and keeps its setting."""
    import json

    from worldstream.data.latents import LatentClips, PromptBank
    from worldstream.engine.rollout import Conditioning, Given, RolloutConfig, generate_chunk, make_branches, prefill
    from worldstream.model.omni import Omni
    from worldstream.train.still_runs import StillRuns
    from worldstream.train.teacher import model_config, teacher_loss

    torch.set_num_threads(1)
    cfg = _cfg(latent_dataset, 4, bf16=False, prev_frame=True, levels="next", still_rows=2, still_depth=3,
               samples=False)
    clips = LatentClips(str(latent_dataset), "default", "train", 4, seed=0)
    torch.manual_seed(0)
    model = Omni(model_config(cfg, clips)).eval()
    with torch.no_grad():  # wake up the zero-initialised layers
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    idle = clips.ds.manifest["actions"]["names"].index("idle")
    runs = StillRuns(2, 4, 1, depth=3, idle=idle, seed=0)
    prompts = PromptBank()
    clip = clips.sample(4)
    scene = clip.video[2:, 0].clone()
    rows = runs.rows(clip)
    assert torch.equal(rows.video[:2], clip.video[:2])  # the data's rows are untouched
    assert torch.equal(rows.video[2:], scene[:, None].expand(2, 4, *scene.shape[1:]))  # a still history, then the scene
    assert (rows.actions[2:] == idle).all() and rows.captions[2:] == clip.captions[2:]
    draws = runs.draws(draw_tasks(cfg, 4, 4, tuple(clip.video.shape), tuple(clip.audio.shape)))
    assert draws["tv"][2:].tolist() == [[0, 0, 0, 1]] * 2 and (draws["ta"][2:] == 0).all()
    with torch.no_grad():
        _, _, made = teacher_loss(model, cfg, rows, draws, prompts, return_x0=True)
    err = runs.advance(made[2:, -1:])
    assert err > 0 and torch.equal(runs.history[:, -1], made[2:, -1])  # the made frame is the run's newest
    assert torch.equal(runs.history[:, 0], scene)

    # one more step: the row is exactly what a one-step stream makes after these frames, with the same noise
    clip2 = clips.sample(4)
    rows = runs.rows(clip2)
    assert torch.equal(rows.video[2:, -1], scene) and torch.equal(rows.video[2:, -2], made[2:, -1])
    draws = runs.draws(draw_tasks(cfg, 4, 4, tuple(clip2.video.shape), tuple(clip2.audio.shape)))
    with torch.no_grad():
        _, _, made2 = teacher_loss(model, cfg, rows, draws, prompts, return_x0=True)
    rc = RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0)
    cond = Conditioning(*prompts.batch(rows.captions[2:]), rows.actions[2:])
    tpf, shape = model.cfg.audio_tokens_per_frame, tuple(scene.shape[1:])
    b = make_branches(model, rc)
    prefill(model, b, cond, rows.video[2:, :3], rows.audio[2:, : 3 * tpf])
    noise = torch.cat([draws["eps_v"][2:, 3:].flatten(1), torch.zeros(2, tpf * model.cfg.audio_channels)], 1)
    v, _ = generate_chunk(model, b, rc, cond, 3, shape, noise=noise, given=Given(audio=rows.audio[2:, 3 * tpf :]))
    torch.testing.assert_close(v, made2[2:, 3:], rtol=0, atol=1e-5)
    runs.advance(made2[2:, -1:])
    runs.age[:] = runs.limit  # at its depth a run starts anew on the row's first frame
    rows = runs.rows(clip)
    assert torch.equal(rows.video[2:], clip.video[2:, :1].expand(2, 4, *scene.shape[1:])) and (runs.age == 0).all()

    train_teacher(cfg, tmp_path / "s", progress=False, max_seconds=0.0)
    m = train_teacher(cfg, tmp_path / "s", progress=False)
    assert m["step"] == 4
    assert json.loads((tmp_path / "s" / "config.json").read_text())["train"]["still_rows"] == 2
    with pytest.raises(ValueError, match="levels next"):
        _cfg(latent_dataset, 4, prev_frame=True, still_rows=2)
    with pytest.raises(ValueError, match="fewer rows"):
        _cfg(latent_dataset, 4, prev_frame=True, levels="next", still_rows=4)
