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
