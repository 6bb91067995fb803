"""Model bundles and the shipped default: self-contained, verified on load, equal to their source."""
import json
import shutil

import numpy as np
import pytest

from worldstream import World
from worldstream.checkpoint import CheckpointError
from worldstream import weights
from worldstream.weights import export_bundle


def _frames(world, n=3):
    s = world.stream("a sunny meadow", seed=3)
    return np.stack([s.step("walk_e").frames for _ in range(n)])


def test_bundle_streams_like_its_run_and_stands_alone(tiny_teacher, tmp_path):
    res = export_bundle(tiny_teacher, tmp_path / "b", half=False)
    assert {"config.json", "model.safetensors", "video_ae/model.safetensors", "audio_ae/config.json",
            "MANIFEST.json"} <= set(res["files"]) | {"MANIFEST.json"}
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "b", moved)  # relative paths: the bundle works wherever it lies
    a, b = World.load(tiny_teacher), World.load(moved)
    assert np.array_equal(_frames(a), _frames(b))
    assert "noise_rng" not in json.loads((moved / "config.json").read_text())  # training state stays behind


def test_teacher_bundle_refuses_a_step_count(tiny_teacher, tmp_path):
    with pytest.raises(CheckpointError, match="no recommended sampler"):
        export_bundle(tiny_teacher, tmp_path / "s", steps=1)
    assert not (tmp_path / "s").exists()


def test_half_bundle_loads_and_is_close(tiny_teacher, tmp_path):
    res = export_bundle(tiny_teacher, tmp_path / "h")
    full = (tiny_teacher / "model.safetensors").stat().st_size
    assert (tmp_path / "h" / "model.safetensors").stat().st_size < 0.6 * full
    World.load(tmp_path / "h").stream("", seed=0).step()
    assert res["params"] > 0


def test_damaged_or_incomplete_bundle_names_the_file(tiny_teacher, tmp_path):
    export_bundle(tiny_teacher, tmp_path / "b")
    p = tmp_path / "b" / "video_ae" / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="video_ae/model.safetensors changed"):
        World.load(tmp_path / "b")
    p.unlink()
    with pytest.raises(CheckpointError, match="video_ae/model.safetensors is missing"):
        World.load(tmp_path / "b")


def test_no_checkpoint_means_the_default(tiny_teacher, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "DEFAULT", tmp_path / "none")
    with pytest.raises(CheckpointError, match="no default model"):
        World.load()
    export_bundle(tiny_teacher, tmp_path / "d")
    monkeypatch.setattr(weights, "DEFAULT", tmp_path / "d")
    assert World.load().meta["path"] == str(tmp_path / "d")


def test_shipped_default_loads_when_present():
    if not (weights.DEFAULT / "config.json").exists():
        pytest.skip("no default model in this checkout")
    world = World.load()  # verifies every file against the manifest
    assert world.rollout_config().steps <= 4  # the default is a few-step student
    chunk = world.stream("a sunny meadow", seed=0).step("walk_e")
    assert chunk.frames.shape[-1] == 3 and np.isfinite(chunk.audio).all()


def test_a_bundle_exported_with_another_view_streams_as_its_source_given_that_view(tiny_teacher, tmp_path):
    """``export --window --sinks`` changes only the view a bundle streams with: frame for frame it is
    its source with that view set, past the point where the views differ; the trained view is kept,
    re-exporting keeps it, and a bad view is a clear error that writes nothing."""
    import dataclasses

    import torch

    from worldstream.checkpoint import load_tensors, save_tensors

    # a run whose frames depend on their history: the tiny teacher, 2 steps from its zero-initialised gates,
    # barely looks at it, so its weights are shaken first
    run = tmp_path / "run"
    shutil.copytree(tiny_teacher, run)
    g = torch.Generator().manual_seed(0)
    tensors = load_tensors(run / "model.safetensors")
    save_tensors(run / "model.safetensors", {k: v + 0.2 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                                             for k, v in tensors.items()})
    tiny_teacher = run
    export_bundle(tiny_teacher, tmp_path / "v", half=False, window=1, sinks=2)
    meta = json.loads((tmp_path / "v" / "config.json").read_text())
    assert (meta["model"]["window"], meta["model"]["sinks"]) == (1, 2)
    assert meta["trained_view"] == {"window": 2, "sinks": 1}
    src, new = World.load(tiny_teacher), World.load(tmp_path / "v")
    n = 6  # chunks: beyond sinks + window, where the views see different history
    plain = _frames(src, n)
    src.model.cfg = dataclasses.replace(src.model.cfg, window=1, sinks=2)
    assert np.array_equal(_frames(new, n), _frames(src, n))
    assert not np.array_equal(_frames(new, n), plain)
    export_bundle(tmp_path / "v", tmp_path / "v2", half=False, sinks=3)  # a bundle re-exported
    meta2 = json.loads((tmp_path / "v2" / "config.json").read_text())
    assert (meta2["model"]["window"], meta2["model"]["sinks"], meta2["trained_view"]) == (1, 3, meta["trained_view"])
    for bad in ({"window": 0}, {"sinks": -1}, {"window": 2.5}):
        with pytest.raises(ValueError, match="whole number of chunks"):
            export_bundle(tiny_teacher, tmp_path / "bad", **bad)
        assert not (tmp_path / "bad").exists()


def test_a_fine_tuned_decoder_goes_into_a_bundle_only_with_the_models_encoder(tiny_teacher, latent_dataset, tmp_path):
    """``train autoencoder --decoder-only`` keeps the encoder and latent normalisation bit for bit and
    resumes exactly, critic included; ``export --video-decoder`` bundles that decoder (the stream is the
    same latents decoded anew, and a student can still train from the bundle on the old latents), and
    refuses an autoencoder whose encoder moved."""
    import dataclasses

    import torch

    from worldstream.checkpoint import load_tensors
    from worldstream.distill.student import StudentTrainConfig, train_student
    from worldstream.engine.generate import latents_sha256s
    from worldstream.tokenizers.encode import encode_dataset
    from worldstream.tokenizers.text import sha256_of
    from worldstream.train.autoencoder import AETrainConfig, train_autoencoder

    torch.set_num_threads(1)
    orig = latent_dataset.parent / "video"
    cfg = AETrainConfig(kind="video", preset="tiny", dataset=str(latent_dataset), steps=4, batch=2, clip_frames=4,
                        eval_every=4, eval_clips=2, lr=1e-2, init_from=str(orig), decoder_only=True, adv_weight=0.5)
    metrics = train_autoencoder(cfg, tmp_path / "dec", progress=False)
    assert metrics["sharpness"] > 0 and metrics["real_sharpness"] > 0
    train_autoencoder(cfg, tmp_path / "split", progress=False, max_seconds=0.0)  # stop after 1, then resume
    train_autoencoder(cfg, tmp_path / "split", progress=False)
    a, b, o = (load_tensors(p / "model.safetensors") for p in (tmp_path / "dec", tmp_path / "split", orig))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
        if k.startswith("enc") or k.startswith("latent_"):
            assert torch.equal(a[k], o[k]), k  # the encoder and the normalisation: bit for bit
    assert any(not torch.equal(a[k], o[k]) for k in a if k.startswith("dec"))
    assert (tmp_path / "dec" / "discriminator" / "train_state.safetensors").exists()
    log = [json.loads(l) for l in open(tmp_path / "dec" / "log.jsonl")]
    assert all(np.isfinite(r["d_loss"]) for r in log if "d_loss" in r)

    export_bundle(tiny_teacher, tmp_path / "b", half=False, video_decoder=tmp_path / "dec")
    info = json.loads((tmp_path / "b" / "config.json").read_text())["latents"]["video_ae"]
    assert info["latents_sha256"] == sha256_of(orig / "model.safetensors") != info["sha256"]
    assert latents_sha256s(info) == {info["sha256"], info["latents_sha256"]}
    old, new = World.load(tiny_teacher), World.load(tmp_path / "b")
    assert not np.array_equal(_frames(old), _frames(new))
    new.vae.load_state_dict(old.vae.state_dict())  # the old decoder back: the very same stream
    assert np.array_equal(_frames(old), _frames(new))
    # a student trains from the bundle on latents made by the old autoencoder or by the new one (the same encoder)
    encode_dataset(latent_dataset, tmp_path / "dec", latent_dataset.parent / "audio", name="newdec", progress=False)
    for latents in ("default", "newdec"):
        train_student(StudentTrainConfig(teacher=str(tmp_path / "b"), dataset=str(latent_dataset), latents=latents,
                                         steps=1, batch=2, history=2, teacher_steps=2, self_forcing_from=2,
                                         rollout_chunks=4, eval_every=1, warmup=1, bf16=False),
                      tmp_path / f"student_{latents}", progress=False)

    moved = train_autoencoder(dataclasses.replace(cfg, decoder_only=False, adv_weight=0.0), tmp_path / "all",
                              progress=False)
    assert moved["step"] == 4
    with pytest.raises(CheckpointError, match="--decoder-only"):
        export_bundle(tiny_teacher, tmp_path / "x", video_decoder=tmp_path / "all")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    with pytest.raises(ValueError, match="--init-from"):
        dataclasses.replace(cfg, init_from="")
    with pytest.raises(ValueError, match="video autoencoder only"):
        dataclasses.replace(cfg, kind="audio", init_from="x")


def test_a_decoder_learns_to_read_a_world_models_own_latents(tiny_teacher, latent_dataset, tmp_path):
    """``train autoencoder --decoder-only --own-from MODEL``: a pool of the model's own rollouts from
    recorded frames, each paired with the recorded frames at the same times, made once and kept (the
    same seed draws the same pool); the decoder learns to return the recorded frames from them, the
    encoder stays bit for bit, the run resumes exactly; a model of another encoder is refused."""
    import dataclasses

    import torch

    from worldstream.checkpoint import load_tensors
    from worldstream.data.format import DatasetError
    from worldstream.tokenizers.encode import encode_dataset
    from worldstream.tokenizers.store import load_autoencoder
    from worldstream.tokenizers.text import sha256_of
    from worldstream.train import own_latents
    from worldstream.train.autoencoder import AETrainConfig, train_autoencoder

    torch.set_num_threads(1)
    orig = latent_dataset.parent / "video"
    pool = own_latents.make_pool(str(tiny_teacher), str(latent_dataset), "default", "train", 6, 6, seed=0,
                                 progress=False)
    assert pool.latents.shape[:2] == (6, 6) and len(pool.starts) == 6
    again = own_latents.make_pool(str(tiny_teacher), str(latent_dataset), "default", "train", 6, 6, seed=0,
                                  progress=False)
    assert torch.equal(pool.latents, again.latents) and pool.starts == again.starts
    for i, (ep, s) in enumerate(zip(pool.episodes, pool.starts)):  # frame 0 is the recorded one, the rest its own
        cached = load_tensors(latent_dataset / "latents" / "default" / f"{ep.name}.safetensors")["video"]
        torch.testing.assert_close(pool.latents[i, 0].float(), cached[s].float(), rtol=0, atol=2e-3)
        assert np.array_equal(pool.frames(i, 0, 6), ep.frames()[s : s + 6])
    assert not torch.allclose(pool.latents[:, 1:].float(), torch.stack(
        [load_tensors(latent_dataset / "latents" / "default" / f"{ep.name}.safetensors")["video"][s + 1 : s + 6]
         for ep, s in zip(pool.episodes, pool.starts)]).float(), atol=1e-2)

    cfg = AETrainConfig(kind="video", preset="tiny", dataset=str(latent_dataset), steps=40, batch=4, clip_frames=4,
                        eval_every=40, eval_clips=2, lr=1e-2, warmup=0, ema=0.0, init_from=str(orig), decoder_only=True,
                        own_from=str(tiny_teacher), own_share=1.0, own_clips=6, own_frames=6)
    metrics = train_autoencoder(dataclasses.replace(cfg, steps=1), tmp_path / "made", progress=False)
    assert {"own_psnr", "own_psnr_first4", "own_sharpness", "own_real_sharpness"} <= set(metrics)
    kept = own_latents.load_pool(tmp_path / "made" / "own_pool", str(latent_dataset))
    assert torch.equal(kept.latents, pool.latents)  # the run's pool: the same seed, the same rollouts
    with pytest.raises(DatasetError, match="not 6 of 5; delete it"):  # a kept pool made with other settings
        own_latents.pool(tmp_path / "made" / "own_pool", str(tiny_teacher), str(latent_dataset), "default", "train", 6,
                         5, 0, progress=False)
    with pytest.raises(CheckpointError, match="--own-from .*no world model checkpoint"):
        own_latents.check_world_model(str(tmp_path / "nothing"), orig)
    with pytest.raises(DatasetError, match="pass --own-latents NAME"):
        own_latents.make_pool(str(tiny_teacher), str(latent_dataset), "nope", "train", 2, 4, seed=0, progress=False)

    # The fixture's autoencoder (2 steps) and teacher say too little about the frames for a decoder to
    # learn anything in a test, so the run reads a drift it can learn: the teacher named with a better
    # trained tiny autoencoder, and a pool whose "own" latents are that autoencoder's of the recorded frames,
    # sign-flipped. A decoder trained on it reads them; one trained as long on the encoder's does not.
    good = tmp_path / "good_ae"
    train_autoencoder(AETrainConfig(kind="video", preset="tiny", dataset=str(latent_dataset), steps=60, batch=4,
                                    clip_frames=2, lr=3e-3, eval_every=60, eval_clips=2), good, progress=False)
    encode_dataset(latent_dataset, good, latent_dataset.parent / "audio", name="good", progress=False)
    model = tmp_path / "teacher_good"
    shutil.copytree(tiny_teacher, model)
    meta = json.loads((model / "config.json").read_text())
    meta["latents"]["video_ae"] = {"path": str(good), "sha256": sha256_of(good / "model.safetensors")}
    (model / "config.json").write_text(json.dumps(meta))
    recorded = torch.stack([load_tensors(latent_dataset / "latents" / "good" / f"{ep.name}.safetensors")["video"]
                            [s : s + 6] for ep, s in zip(pool.episodes, pool.starts)])
    drifted = own_latents.OwnPool(-recorded.float(), pool.episodes, pool.starts)
    own_latents.save_pool(tmp_path / "dec" / "own_pool", drifted)

    def own_l1(model) -> float:  # how far the decoder's reading of the pool is from the recorded frames
        y = model.decode(drifted.latents[:, 1:]).clamp(0, 1)
        x = torch.from_numpy(np.stack([drifted.frames(i, 1, 5) for i in range(6)])).permute(0, 1, 4, 2, 3) / 255.0
        return (y - x).abs().mean().item()

    read = dataclasses.replace(cfg, init_from=str(good), own_from=str(model), own_latents="good")
    train_autoencoder(read, tmp_path / "dec", progress=False)
    train_autoencoder(dataclasses.replace(read, own_from="", own_share=0.0), tmp_path / "plain", progress=False)
    with torch.no_grad():
        before, plain, after = (own_l1(load_autoencoder(p)) for p in (good, tmp_path / "plain", tmp_path / "dec"))
    assert after < 0.6 * before and after < 0.8 * plain, (before, plain, after)  # measured .28, .18, .11
    a, o = load_tensors(tmp_path / "dec" / "model.safetensors"), load_tensors(good / "model.safetensors")
    assert all(torch.equal(a[k], o[k]) for k in a if k.startswith("enc") or k.startswith("latent_"))

    half = dataclasses.replace(cfg, steps=6, own_share=0.5)
    train_autoencoder(half, tmp_path / "straight", progress=False)
    train_autoencoder(half, tmp_path / "split", progress=False, max_seconds=0.0)  # stop after 1, then resume
    train_autoencoder(half, tmp_path / "split", progress=False)
    a, b = (load_tensors(p / "model.safetensors") for p in (tmp_path / "straight", tmp_path / "split"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)

    with pytest.raises(CheckpointError, match="--init-from .*encoder differs"):  # the teacher's latents are another's
        train_autoencoder(dataclasses.replace(cfg, init_from=str(good)), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="--own-from MODEL and --own-share"):
        dataclasses.replace(cfg, own_from="")
    with pytest.raises(ValueError, match="--own-from MODEL and --own-share"):
        dataclasses.replace(cfg, decoder_only=False)
