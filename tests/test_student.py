"""Distillation: the student step runs on a tiny config in seconds, resumes exactly, and its
1-, 2- and 4-step samplers run through the engine."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from worldstream.checkpoint import load_tensors
from worldstream.distill.student import StudentTrainConfig, train_student
from worldstream.engine.rollout import RolloutConfig
from worldstream.engine.stream import StreamConfig, World


def _cfg(teacher, ds, steps, **kw):
    return StudentTrainConfig(teacher=str(teacher), dataset=str(ds), steps=steps, batch=2, history=2, teacher_steps=2,
                              self_forcing_from=2, self_forcing_share=1.0, rollout_chunks=4, eval_every=steps,
                              warmup=1, bf16=False, **kw)


def test_distillation_runs_resumes_and_samples_in_1_2_4_steps(tiny_teacher, latent_dataset, tmp_path):
    torch.set_num_threads(1)
    m = train_student(_cfg(tiny_teacher, latent_dataset, 4), tmp_path / "a", progress=False)
    assert m["step"] == 4 and all(np.isfinite(v) for k, v in m.items() if k.startswith("x0_mse"))
    train_student(_cfg(tiny_teacher, latent_dataset, 4), tmp_path / "b", progress=False, max_seconds=0.0)  # stop after 1
    train_student(_cfg(tiny_teacher, latent_dataset, 4), tmp_path / "b", progress=False)  # resume: own rollouts too
    a, b = load_tensors(tmp_path / "a" / "model.safetensors"), load_tensors(tmp_path / "b" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    world = World.load(tmp_path / "a")
    assert world.rollout_config().sampler == "x0" and world.model.cfg.window == 2  # the view it was trained with
    for steps in (1, 2, 4):
        s = world.stream("night falls", config=StreamConfig(rollout=RolloutConfig(sampler="x0", steps=steps,
                                                                                   text_scale=1.0, action_scale=1.0)))
        frames = [s.step("walk_e").frames for _ in range(4)]
        assert frames[0].shape[2:] == (world.height, world.width, 3)
        assert len(s.branches) == 1  # one pass per step: no guidance branches


def test_the_whole_pipeline_runs_and_resumes_on_the_tiny_preset(tmp_path):
    from worldstream.cli import main

    torch.set_num_threads(1)
    assert main(["train", "all", "--preset", "tiny", "--out", str(tmp_path)]) == 0
    for run in ("video_ae", "audio_ae", "teacher", "teacher_view", "student"):
        assert (tmp_path / "runs" / run / "model.safetensors").exists(), run
    assert (tmp_path / "eval" / "summary.json").exists() and (tmp_path / "bundle" / "MANIFEST.json").exists()
    world = World.load(tmp_path / "runs" / "student")
    assert world.model.cfg.window == 3 and world.model.cfg.memory_topk == 2  # trained with the streaming view
    t = (tmp_path / "runs" / "student" / "model.safetensors").stat().st_mtime
    assert main(["train", "all", "--preset", "tiny", "--out", str(tmp_path)]) == 0  # re-run: every stage done
    assert (tmp_path / "runs" / "student" / "model.safetensors").stat().st_mtime == t


def test_the_pixel_pipeline_trains_a_one_step_move_world_and_bundles_it(tmp_path):
    """``tiny_pixel``: the pixel codec instead of a video autoencoder, a move model trained on next-frame levels
    with its view, no view stage and no distillation; the bundle streams in one x0 step with its ground."""
    from worldstream.cli import main

    torch.set_num_threads(1)
    assert main(["train", "all", "--preset", "tiny_pixel", "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "runs" / "video_ae").exists() and not (tmp_path / "runs" / "student").exists()
    world = World.load(tmp_path / "bundle")
    assert world.vae.cfg.spatial == 1 and world.model.cfg.move_reach == 2 and world.model.cfg.window == 3
    r = world.rollout_config()
    assert (r.sampler, r.steps, r.text_scale, r.action_scale) == ("x0", 1, 1.0, 1.0)
    s = world.stream("", seed=0)
    for _ in range(3):
        s.step("walk_n")
    assert s.ground is not None and s.ground.made == 2
    assert (tmp_path / "eval" / "summary.json").exists()


def test_the_cli_offers_every_pipeline_preset():
    from worldstream.cli import PIPELINE_PRESETS, PIPELINE_STAGES
    from worldstream.train.pipeline import PRESETS, STAGES

    assert set(PIPELINE_PRESETS) == set(PRESETS) and PIPELINE_STAGES == STAGES


def test_a_time_budget_ends_a_run_with_its_schedule_decayed_and_train_all_moves_on(tiny_teacher, latent_dataset,
                                                                                    tmp_path):
    from worldstream.train.pipeline import _done
    from worldstream.train.state import schedule_step

    assert schedule_step(10, 100, 5.0, None) == 10  # no budget: the steps decide
    assert schedule_step(10, 100, 5.0, 10.0) == 50 and schedule_step(80, 100, 5.0, 10.0) == 80  # the further one
    torch.set_num_threads(1)
    cfg = _cfg(tiny_teacher, latent_dataset, 50, lr=1e-3)
    train_student(cfg, tmp_path / "s", progress=False, budget_s=0.0)  # spent at once: one step, at the end's rate
    meta = json.loads((tmp_path / "s" / "config.json").read_text())
    assert meta["step"] == 1 and meta["budget_ended"] and _done(tmp_path / "s", 50)
    first = json.loads((tmp_path / "s" / "log.jsonl").read_text().splitlines()[0])
    assert first["lr"] == pytest.approx(1e-4)  # cosine_lr's floor: 10% of the base rate


def test_a_student_trains_further_only_with_a_teacher_of_its_shape(tiny_teacher, latent_dataset, tmp_path):
    import dataclasses

    from worldstream.train.teacher import TeacherTrainConfig, train_teacher

    torch.set_num_threads(1)
    cfg = _cfg(tiny_teacher, latent_dataset, 2)
    train_student(cfg, tmp_path / "a", progress=False)
    further = dataclasses.replace(cfg, steps=1, init_from=str(tmp_path / "a"), lr=0.0)  # lr 0: the weights stay
    train_student(further, tmp_path / "b", progress=False)
    a, b = load_tensors(tmp_path / "a" / "model.safetensors"), load_tensors(tmp_path / "b" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    other = tmp_path / "teacher_other"
    train_teacher(TeacherTrainConfig(dataset=str(latent_dataset), preset="tiny", steps=1, batch=2, chunks=4,
                                     eval_every=1, warmup=1, window=3, sinks=1, samples=False), other, progress=False)
    with pytest.raises(ValueError, match="model config differs"):
        train_student(dataclasses.replace(further, teacher=str(other)), tmp_path / "c", progress=False)


def _runs_and_resumes_exactly(cfg, tmp_path, side: str | None = None) -> None:
    """A run of ``cfg.steps`` in ``a``; the same run cut after one step and resumed in ``b``: the student
    and the network trained beside it (in the sub-folder ``side``, if any) end the same."""
    assert train_student(cfg, tmp_path / "a", progress=False)["step"] == cfg.steps
    train_student(cfg, tmp_path / "b", progress=False, max_seconds=0.0)
    train_student(cfg, tmp_path / "b", progress=False)
    for f in ("model.safetensors",) + ((f"{side}/model.safetensors",) if side else ()):
        a, b = load_tensors(tmp_path / "a" / f), load_tensors(tmp_path / "b" / f)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{f}: {k}")


def test_distribution_matching_runs_and_resumes_exactly(tiny_teacher, latent_dataset, tmp_path):
    """DMD on own rollouts: the student and its fake score train, and a cut run resumes to the same
    weights (the fake score and its optimizer are saved with the student)."""
    import dataclasses

    torch.set_num_threads(1)
    cfg = dataclasses.replace(_cfg(tiny_teacher, latent_dataset, 4, objective="dmd"), self_forcing_from=0)
    _runs_and_resumes_exactly(cfg, tmp_path, "fake_score")
    teacher = load_tensors(tiny_teacher / "model.safetensors")
    fake = load_tensors(tmp_path / "a" / "fake_score" / "model.safetensors")
    assert any(not torch.equal(teacher[k], fake[k]) for k in teacher)  # the fake score moved off the teacher
    log = [json.loads(l) for l in open(tmp_path / "a" / "log.jsonl") if '"dmd": true' in l]
    assert log and all(np.isfinite(r["fake"]) and np.isfinite(r["video"]) for r in log)


def test_adversarial_post_training_runs_and_resumes_exactly(tiny_teacher, latent_dataset, tmp_path):
    """Adversarial own-rollout batches: the student, anchored to its teacher, and its critic train,
    and a cut run resumes to the same weights (the critic and its optimizer are saved with it)."""
    torch.set_num_threads(1)
    cfg = dataclasses.replace(_cfg(tiny_teacher, latent_dataset, 4, objective="adversarial", random_rollout_length=True,
                                   adv_anchor=0.5), self_forcing_from=0)
    _runs_and_resumes_exactly(cfg, tmp_path, "discriminator")
    log = [json.loads(l) for l in open(tmp_path / "a" / "log.jsonl") if '"own": true' in l]
    assert len(log) == 4 and all(np.isfinite([r["push"], r["d_loss"], r["d_real"], r["d_fake"]]).all() for r in log)


def test_the_critic_separates_real_from_blurred_and_its_push_sharpens():
    """The critic learns real transitions against blurred copies of them, and the generator's push
    moves a blurred frame toward what the critic calls real (its logit rises) by the step asked."""
    from worldstream.distill.discriminator import (DiscriminatorConfig, TransitionDiscriminator, discriminator_loss,
                                                   generator_push)

    torch.manual_seed(0)
    disc = TransitionDiscriminator(DiscriminatorConfig(latent_channels=4, n_actions=3, width=16))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.0, 0.99))
    blur = lambda x: torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # noqa: E731
    for _ in range(60):
        nxt = torch.randn(16, 4, 8, 8)
        prev, act = torch.randn(16, 4, 8, 8), torch.randint(-1, 3, (16,))
        loss, parts = discriminator_loss(disc, (prev, nxt, act), (prev, blur(nxt), act), gamma=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["d_real"] > parts["d_fake"] + 1
    prev, act = torch.randn(8, 4, 8, 8), torch.randint(-1, 3, (8,))
    fake = blur(torch.randn(8, 4, 8, 8)).requires_grad_(True)
    push, logit = generator_push(disc, prev, fake, act, step=0.05)
    (g,) = torch.autograd.grad(push, fake)
    moved = fake.detach() - g * fake.numel()  # the regression target the push pulls toward (mean over all)
    assert torch.allclose(g.flatten(1).pow(2).mean(1).sqrt() * fake.numel(), torch.full((8,), 0.05), rtol=1e-3)
    assert disc(prev, moved, act).mean() > logit
    with pytest.raises(ValueError, match="latent frames"):
        disc(prev, fake[:, :, :4], act)


def _batched_equals_alone(world, cfg, prompts, warmup, action):
    """Two streams (seeds 1, 2) stepped ``warmup`` times each until their caches are full, then three
    chunks stepped as one batch: each makes what its twin makes alone (so each keeps its own last
    frame, and its own noise)."""
    from worldstream.engine.batch import signature, step_together

    streams = [world.stream(p, seed=sd, config=cfg) for p, sd in zip(prompts, (1, 2))]
    twins = [world.stream(p, seed=sd, config=cfg) for p, sd in zip(prompts, (1, 2))]
    for s, t, n in zip(streams, twins, warmup):
        for i in range(n):
            s.step(["walk_e", "idle"][i % 2])
            t.step(["walk_e", "idle"][i % 2])
    assert signature(streams[0]) is not None and signature(streams[0]) == signature(streams[1])
    for _ in range(3):
        for s in streams:
            s.act(action)
        together = step_together(streams)
        alone = [t.step(action) for t in twins]
        for a, b in zip(together, alone):
            assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1


@pytest.mark.parametrize("prev_shift", [False, True])
def test_a_prev_frame_world_fine_tunes_distils_and_streams_batched(tiny_teacher, latent_dataset, tmp_path, prev_shift):
    """A plain teacher fine-tuned into one that predicts around the previous frame (its new layers
    start at zero; with ``prev_shift`` also the head that moves that frame), distilled with
    self-forcing, then streamed: streams stepped as one batch make what they make alone, so each
    keeps its own last frame."""
    from worldstream.train.teacher import TeacherTrainConfig, train_teacher

    torch.set_num_threads(1)
    tcfg = TeacherTrainConfig(dataset=str(latent_dataset), preset="tiny", steps=2, batch=4, chunks=4, eval_every=2,
                              warmup=2, window=2, sinks=1, memory_topk=2, init_from=str(tiny_teacher), prev_frame=True,
                              prev_shift=prev_shift, bf16=False)
    train_teacher(tcfg, tmp_path / "t", progress=False)
    w = load_tensors(tmp_path / "t" / "model.safetensors")
    assert w["prev_in.weight"].abs().sum() > 0  # trained from zero
    assert ("prev_shift_out.weight" in w) == prev_shift and (not prev_shift or w["prev_shift_out.weight"].abs().sum() > 0)
    train_student(_cfg(tmp_path / "t", latent_dataset, 3), tmp_path / "s", progress=False)  # step 3: own rollouts
    world = World.load(tmp_path / "s")
    assert world.model.cfg.prev_frame
    cfg = StreamConfig(rollout=RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0), bf16=False,
                       memory_chunks=4)
    _batched_equals_alone(world, cfg, ("a meadow", "snow"), (12, 9), "run_n")


def test_a_student_as_its_own_x0_teacher_is_its_own_target_until_guidance_is_added(tiny_teacher, latent_dataset):
    """Self-distillation of guidance (``--teacher-sampler x0``): with no guidance the 1-step target
    is the model's own one-pass answer (nothing to learn: the streaming teacher's cached passes equal
    the student's full pass), and action guidance moves it by exactly the guided step (what the
    student then folds in)."""
    import dataclasses

    from worldstream.data.latents import LatentClips, PromptBank
    from worldstream.distill.student import heldout_error
    from worldstream.engine.generate import load_world_model

    torch.set_num_threads(1)
    model, _ = load_world_model(tiny_teacher)
    cfg = dataclasses.replace(_cfg(tiny_teacher, latent_dataset, 1), teacher_sampler="x0", teacher_steps=1,
                              text_scale=1.0, action_scale=1.0, levels=(1,))
    frames = (max(cfg.history, cfg.rollout_chunks) + 1) * model.cfg.chunk_frames
    clip = LatentClips(cfg.dataset, cfg.latents, "heldout", frames, seed=1).fixed(2)
    same = heldout_error(model, model, cfg, clip, PromptBank())["x0_mse_t1"]
    assert same < 1e-10, same
    # guided, the 1-step answer moves by (s - 1) (cond - no-action): its squared error grows as (s - 1)^2
    g2, g5 = (heldout_error(model, model, dataclasses.replace(cfg, action_scale=s), clip, PromptBank())["x0_mse_t1"]
              for s in (2.0, 5.0))
    assert g2 > 0 and abs(g5 / g2 - 16) < 0.5, (g2, g5)


def test_a_student_of_a_bundle_finds_the_bundles_autoencoders(tiny_teacher, latent_dataset, tmp_path):
    """A bundle (the shipped default) names its autoencoders relative to itself; a student distilled
    from it lives elsewhere and must still load them (it once named a missing ``run/video_ae``)."""
    from worldstream.weights import export_bundle

    torch.set_num_threads(1)
    bundle = export_bundle(tiny_teacher, tmp_path / "bundle")["out"]
    train_student(_cfg(bundle, latent_dataset, 1), tmp_path / "s", progress=False)
    meta = json.loads((tmp_path / "s" / "config.json").read_text())
    assert meta["latents"]["video_ae"]["path"] == str((tmp_path / "bundle" / "video_ae").resolve())
    world = World.load(tmp_path / "s")
    assert world.stream("a meadow").step("walk_e").frames.shape[2:] == (world.height, world.width, 3)


def test_a_prev_level_world_distils_at_its_level_and_streams_it_batched(tiny_teacher, latent_dataset, tmp_path):
    """A prev-frame teacher told its previous frame's degradation level, fine-tuned from a plain
    one, distilled at level 0.25: the student records the level, its streams degrade their own
    frames at it (batched rows as alone), and asking a model that never learnt levels is a clear error."""
    import pytest

    from worldstream.train.teacher import TeacherTrainConfig, train_teacher

    torch.set_num_threads(1)
    tcfg = TeacherTrainConfig(dataset=str(latent_dataset), preset="tiny", steps=2, batch=4, chunks=4, eval_every=2,
                              warmup=2, window=2, sinks=1, memory_topk=2, init_from=str(tiny_teacher), prev_frame=True,
                              prev_degrade=0.5, prev_level=True, bf16=False)
    train_teacher(tcfg, tmp_path / "t", progress=False)
    assert load_tensors(tmp_path / "t" / "model.safetensors")["prev_level_in.weight"].abs().sum() > 0  # from zero
    train_student(_cfg(tmp_path / "t", latent_dataset, 3, prev_level=0.25), tmp_path / "s", progress=False)
    world = World.load(tmp_path / "s")
    rc = world.rollout_config()
    assert world.model.cfg.prev_level and rc.prev_level == 0.25
    cfg = StreamConfig(rollout=rc, bf16=False, memory_chunks=4)
    _batched_equals_alone(world, cfg, ("a meadow", "a meadow"), (10, 9), "walk_e")
    at = world.stream("a meadow", seed=1, config=StreamConfig(rollout=rc, bf16=False))
    clean = world.stream("a meadow", seed=1, config=StreamConfig(rollout=dataclasses.replace(rc, prev_level=0.0),
                                                                  bf16=False))
    a, c = ([s.step("walk_e").frames for _ in range(3)] for s in (at, clean))  # (another level still runs)
    assert np.array_equal(a[0], c[0]) and not np.array_equal(a[2], c[2])  # degraded from the first own frame on

    plain = World.load(tiny_teacher)
    s = plain.stream("", config=StreamConfig(rollout=dataclasses.replace(plain.rollout_config(), prev_level=0.3),
                                             bf16=False))
    with pytest.raises(ValueError, match="--prev-level"):
        s.step("idle")
        s.step("idle")
    with pytest.raises(ValueError, match="--prev-level"):
        train_student(_cfg(tiny_teacher, latent_dataset, 2, prev_level=0.25), tmp_path / "u", progress=False)


def test_a_prev_own_teacher_learns_from_a_students_guesses_and_streams_say_whose_frame_it_is(
        tiny_teacher, latent_dataset, tmp_path):
    """``--prev-own``: a student's one-step guess of each frame is exactly what a stream prefilled
    with the real frames before it makes next; a teacher trains on those guesses as previous frames
    (the rows it picks, nothing else), its student distils and streams batched as alone, and a
    stream tells the model whether its previous frame is its own (generated) or real (given)."""
    import pytest

    from worldstream.data.latents import LatentClips, PromptBank
    from worldstream.engine.generate import load_world_model
    from worldstream.engine.rollout import Conditioning, generate_chunk, make_branches, one_step_guesses, prefill
    from worldstream.train.teacher import TeacherTrainConfig, draw_tasks, teacher_loss, train_teacher

    torch.set_num_threads(1)
    base = dict(dataset=str(latent_dataset), preset="tiny", steps=2, batch=4, chunks=4, eval_every=2, warmup=2,
                window=2, sinks=1, memory_topk=2, prev_frame=True, bf16=False, samples=False)
    train_teacher(TeacherTrainConfig(**base, init_from=str(tiny_teacher)), tmp_path / "pt", progress=False)
    train_student(_cfg(tmp_path / "pt", latent_dataset, 2), tmp_path / "ps", progress=False)  # makes the guesses
    guesser, _ = load_world_model(tmp_path / "ps")
    clip = LatentClips(str(latent_dataset), "default", "heldout", 4, seed=1).fixed(2)
    prompts = PromptBank()
    cond = Conditioning(*prompts.batch(clip.captions), clip.actions)
    tpf, shape = guesser.cfg.audio_tokens_per_frame, tuple(clip.video.shape[2:])
    guesses = one_step_guesses(guesser, cond, clip.video, clip.audio, 1, torch.Generator().manual_seed(5))
    assert torch.equal(guesses[:, :1], clip.video[:, :1])  # nothing before the first frame to guess from
    rc = RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0)
    gen = torch.Generator().manual_seed(5)  # (one noise draw a chunk, in the same order)
    for c in (1, 2, 3):
        b = make_branches(guesser, rc)
        prefill(guesser, b, cond, clip.video[:, :c], clip.audio[:, : c * tpf])
        v, _ = generate_chunk(guesser, b, rc, cond, c, shape, gen)
        torch.testing.assert_close(v, guesses[:, c : c + 1], rtol=0, atol=1e-5)
        assert (v - clip.video[:, c : c + 1]).abs().mean() > 1e-3  # a guess, not the real frame
    # chained: each guess made from the guess before it as the previous frame, the history still real
    chained = one_step_guesses(guesser, cond, clip.video, clip.audio, 1, torch.Generator().manual_seed(5), chain=True)
    torch.testing.assert_close(chained[:, :2], guesses[:, :2], rtol=0, atol=0)  # frame 1 follows a real frame
    gen = torch.Generator().manual_seed(5)
    b = make_branches(guesser, rc)
    prefill(guesser, b, cond, clip.video[:, :1], clip.audio[:, :tpf])
    v1, _ = generate_chunk(guesser, b, rc, cond, 1, shape, gen)
    b = make_branches(guesser, rc)
    prefill(guesser, b, cond, clip.video[:, :2], clip.audio[:, : 2 * tpf])
    b[0].last_video = v1[:, -1]
    v2, _ = generate_chunk(guesser, b, rc, cond, 2, shape, gen)
    torch.testing.assert_close(v2, chained[:, 2:3], rtol=0, atol=1e-5)
    assert (v2 - guesses[:, 2:3]).abs().max() > 1e-4

    own = dict(base, init_from=str(tmp_path / "pt"), prev_level=True, prev_own=1.0, prev_own_from=str(tmp_path / "ps"))
    tcfg = TeacherTrainConfig(**own)
    train_teacher(tcfg, tmp_path / "t", progress=False)
    assert json.loads((tmp_path / "t" / "config.json").read_text())["model"]["prev_own"]
    assert load_tensors(tmp_path / "t" / "model.safetensors")["prev_level_in.weight"].abs().sum() > 0  # from zero
    teacher, _ = load_world_model(tmp_path / "t")
    torch.nn.init.zeros_(teacher.prev_level_in.weight)
    torch.nn.init.zeros_(teacher.prev_level_in.bias)
    torch.manual_seed(0)
    draws = draw_tasks(tcfg, 2, 4, tuple(clip.video.shape), tuple(clip.audio.shape))
    real = {k: v for k, v in draws.items() if k != "prev_own"}
    with torch.no_grad():  # (levels unheard) a picked row's previous frames are the guesses, and only those
        assert teacher_loss(teacher, tcfg, clip, draws, prompts, clip.video)[0] == teacher_loss(teacher, tcfg, clip, real,
                                                                                            prompts)[0]
        assert teacher_loss(teacher, tcfg, clip, draws, prompts, guesses)[0] != teacher_loss(teacher, tcfg, clip, real,
                                                                                           prompts)[0]
        none = dict(draws, prev_own=torch.zeros(2, dtype=torch.bool))  # a batch that picks no row needs no guesses
        assert teacher_loss(teacher, tcfg, clip, none, prompts)[0] == teacher_loss(teacher, tcfg, clip, real, prompts)[0]
    with pytest.raises(ValueError, match="--prev-own"):
        train_teacher(TeacherTrainConfig(**dict(base, prev_own_chain=True)), tmp_path / "u", progress=False)
    with pytest.raises(ValueError, match="--prev-own-from"):
        train_teacher(TeacherTrainConfig(**dict(own, prev_own_from="")), tmp_path / "u", progress=False)

    train_student(_cfg(tmp_path / "t", latent_dataset, 3), tmp_path / "s", progress=False)  # step 3: own rollouts
    world = World.load(tmp_path / "s")
    assert world.model.cfg.prev_own and world.rollout_config().prev_level == 0
    _batched_equals_alone(world, StreamConfig(rollout=world.rollout_config(), bf16=False, memory_chunks=4),
                          ("a meadow", "snow"), (10, 9), "walk_e")
    m = world.model
    torch.nn.init.normal_(m.prev_level_in.weight, std=0.5)  # (a loud level, to see it heard)

    def after(own_last: bool):
        b = make_branches(m, rc)
        prefill(m, b, cond, clip.video[:, :2], clip.audio[:, : 2 * tpf], own=own_last)
        return generate_chunk(m, b, rc, cond, 2, shape, torch.Generator().manual_seed(0))[0], b

    (real_next, b), (own_next, _) = after(False), after(True)
    assert (real_next - own_next).abs().max() > 1e-6  # heard (the same pass exactly, but for the level)
    assert b[0].last_own.all()  # a generated frame is the stream's own
    generate_chunk(m, b, rc, cond, 3, shape, given_video=clip.video[:, 3:4])
    assert not b[0].last_own.any()  # a given picture is real
    with pytest.raises(ValueError, match="leave prev_level at 0"):
        generate_chunk(m, make_branches(m, dataclasses.replace(rc, prev_level=0.3)), dataclasses.replace(rc, prev_level=0.3),
                       cond, 0, shape)


def test_moment_anchoring_asks_for_the_recordings_colours_and_contrast_not_its_pixels(tiny_teacher, latent_dataset,
                                                                                      tmp_path):
    """The moment loss sees only per-channel spatial means and spreads (a frame's pixels shuffled costs
    nothing, a colour shift or a washed-out frame does), only on 1-step rows, and its gradient moves a
    drifted frame's means back; on own rollouts it trains beside the regression."""
    from worldstream.distill.student import moment_loss

    g = torch.Generator().manual_seed(0)
    real = torch.randn(3, 1, 4, 6, 6, generator=g)
    one = torch.ones(3)
    shuffled = real.flatten(3)[..., torch.randperm(36, generator=g)].view_as(real)
    assert moment_loss(shuffled, real, one) < 1e-10
    assert moment_loss(real + 0.5, real, one).item() == pytest.approx(0.25, rel=1e-4)  # the means only
    washed = real.mean((3, 4), keepdim=True) + 0.5 * (real - real.mean((3, 4), keepdim=True))
    assert moment_loss(washed, real, one) > 0.1  # the spreads halved
    assert moment_loss(real + 0.5, real, torch.tensor([0.5, 0.75, 0.25])) == 0  # no 1-step rows: off
    drifted = (real + 1.0).requires_grad_(True)
    moment_loss(drifted, real, one).backward()
    assert (drifted.grad.sum((3, 4)) > 0).all()  # descent lowers every channel's mean back toward the recording
    torch.set_num_threads(1)
    cfg = dataclasses.replace(_cfg(tiny_teacher, latent_dataset, 3, moment_weight=2.0), self_forcing_from=0)
    train_student(cfg, tmp_path / "m", progress=False)
    log = [json.loads(l) for l in open(tmp_path / "m" / "log.jsonl") if '"own": true' in l]
    assert len(log) == 3 and all(np.isfinite(r["moments"]) for r in log)


def test_detail_anchoring_asks_for_the_recordings_texture_not_its_pixels(tiny_teacher, latent_dataset, tmp_path):
    """The detail loss sees only per-channel neighbour differences: the same frame mirrored or shifted
    in colour costs nothing, a blurred frame does, rows not made in one step are ignored, and descent
    on a blurred frame adds detail back; with a weight it trains and resumes exactly."""
    from worldstream.distill.student import detail_loss

    g = torch.Generator().manual_seed(0)
    real = torch.randn(3, 1, 4, 8, 8, generator=g)
    one = torch.ones(3)
    assert detail_loss(real.flip(-1).flip(-2) + 0.7, real, one) < 1e-10  # where and which colour: free
    blurred = (real + real.roll(1, -1) + real.roll(1, -2) + real.roll((1, 1), (-2, -1))) / 4
    assert detail_loss(blurred, real, one) > 0.05
    assert detail_loss(blurred, real, torch.tensor([0.5, 0.75, 0.25])) == 0  # no 1-step rows: off
    soft = blurred.clone().requires_grad_(True)
    detail_loss(soft, real, one).backward()
    sharper = soft.detach() - 0.5 * soft.grad / soft.grad.abs().max()
    assert detail_loss(sharper, real, one) < detail_loss(blurred, real, one)
    torch.set_num_threads(1)
    cfg = dataclasses.replace(_cfg(tiny_teacher, latent_dataset, 3, detail_weight=4.0), self_forcing_from=0,
                              own_at_one=True)  # every own row made in one step: the loss always on
    _runs_and_resumes_exactly(cfg, tmp_path)
    log = [json.loads(l) for l in open(tmp_path / "a" / "log.jsonl") if '"own": true' in l]
    assert len(log) == 3 and all(r["detail"] > 0 for r in log)
    with pytest.raises(ValueError, match="detail_weight"):
        dataclasses.replace(cfg, detail_weight=-1.0)


def test_a_student_trained_with_refreshed_sinks_streams_with_them_and_resumes_exactly(tiny_teacher, latent_dataset,
                                                                                      tmp_path):
    """``sink_every``: own rollouts stream with refreshed sinks and train on the cut history; the
    student's config keeps it, so its streams refresh too; too short a rollout is a clear error."""
    torch.set_num_threads(1)
    cfg = dataclasses.replace(_cfg(tiny_teacher, latent_dataset, 3), self_forcing_from=0, rollout_chunks=5, sink_every=2)
    with pytest.raises(ValueError, match="--rollout-chunks 5 or more"):
        train_student(dataclasses.replace(cfg, rollout_chunks=4), tmp_path / "short", progress=False)
    _runs_and_resumes_exactly(cfg, tmp_path)
    world = World.load(tmp_path / "a")
    assert world.model.cfg.sink_every == 2
    s = world.stream("", config=StreamConfig(rollout=RolloutConfig(sampler="x0", steps=1, text_scale=1.0,
                                                                   action_scale=1.0)))
    for _ in range(10):
        s.step("walk_e")
    cache = s.branches[0].cache
    assert cache.sink_every == 2 and int(cache.time_of[cache.chunk_of < 1].min()) > 0  # the sink moved on
